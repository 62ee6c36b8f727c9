"""Training crops and validation images.

Training data is an endless stream of random square crops. Item ``p`` of the stream (a global
position: step ``s``, rank ``r`` of ``world`` processes, slot ``b`` of a per-rank batch of
``B`` give ``p = (s * world + r) * B + b``) is a pure function of ``(seed, p)``:

- image: epoch ``e = p // n`` (n images) draws a permutation of the images from
  ``numpy.random.default_rng([seed, e])``; item p takes image ``perm[p % n]``, so every epoch
  visits every image once, in a new order;
- crop offset: drawn from ``numpy.random.default_rng([seed, n, p])``.

Nothing about the data order therefore has to be stored for an exact resume, data-parallel
ranks see disjoint items of the same stream (as a ``DistributedSampler`` would), and
DataLoader workers need no seeding.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from lalic_core.data import DEMO_IMAGES, demo_image_path
from lalic_core.images import list_images, read_rgb_uint8

__all__ = [
    "TRAIN_DIR_ENV",
    "RandomCrops",
    "StepBatches",
    "find_images",
    "load_validation_images",
    "training_folder",
]

#: Environment variable naming a folder of training photographs (see :func:`training_folder`).
TRAIN_DIR_ENV = "LALIC_TRAIN_DIR"

#: Images used for training and validation (others in the folder are ignored).
TRAIN_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Folders with at most this many images are decoded once and kept in memory (uint8).
CACHE_LIMIT = 2000


def find_images(folder: str | os.PathLike, what: str = "folder",
                suffixes: Sequence[str] = TRAIN_SUFFIXES) -> list[Path]:
    """Sorted PNG/JPEG files under ``folder`` (recursive); :func:`lalic_core.images.
    list_images` with the training suffixes."""
    return list_images(folder, what, suffixes=suffixes)


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size  # (width, height), read from the header only
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None


class RandomCrops(Dataset):
    """Random ``crop`` x ``crop`` RGB crops, float32 (3, crop, crop) in [0, 1], indexed by the
    global stream position (see the module docstring); ``len()`` is the number of images.

    Args:
        folder: image folder (PNG/JPEG, searched recursively).
        crop: crop side in pixels.
        seed: the run's seed.
        skip_small: leave out images smaller than the crop instead of raising.
        cache: keep the decoded images in memory (default: when the folder holds at most
            :data:`CACHE_LIMIT` images).

    Raises:
        FileNotFoundError / ValueError: missing or empty folder, unreadable images, images
        smaller than the crop (unless ``skip_small``).
    """

    def __init__(self, folder: str | os.PathLike, crop: int, seed: int = 0, *,
                 skip_small: bool = False, cache: bool | None = None):
        files = find_images(folder, "train_dir")
        sizes = [_image_size(p) for p in files]
        small = [(p, s) for p, s in zip(files, sizes) if min(s) < crop]
        if small and not skip_small:
            listing = ", ".join(f"{p.name} ({w}x{h})" for p, (w, h) in small[:5])
            more = f" and {len(small) - 5} more" if len(small) > 5 else ""
            raise ValueError(
                f"train_dir: {len(small)} of {len(files)} images in {folder} are smaller than "
                f"the {crop}x{crop} crop: {listing}{more}; use a smaller crop or skip them "
                "(skip_small / --skip-small-images)")
        keep = [(p, s) for p, s in zip(files, sizes) if min(s) >= crop]
        if not keep:
            raise ValueError(f"train_dir: no image in {folder} is at least {crop}x{crop}")
        self.files = [p for p, _ in keep]
        self.sizes = [s for _, s in keep]
        self.skipped = [p for p, _ in small]
        self.crop = crop
        self.seed = seed
        self.cache = len(self.files) <= CACHE_LIMIT if cache is None else cache
        self._images: dict[int, np.ndarray] = {}
        self._epoch_order: tuple[int, np.ndarray | None] = (-1, None)

    def __len__(self) -> int:
        return len(self.files)

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._epoch_order[0] != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.files))
            self._epoch_order = (epoch, order)
        return self._epoch_order[1]

    def _image(self, index: int) -> np.ndarray:
        if index in self._images:
            return self._images[index]
        image = read_rgb_uint8(self.files[index])
        if self.cache:
            self._images[index] = image
        return image

    def locate(self, position: int) -> tuple[int, int, int]:
        """(image index, top, left) of the crop at stream ``position``."""
        if position < 0:
            raise IndexError(f"stream position must be >= 0, got {position}")
        n = len(self.files)
        index = int(self._permutation(position // n)[position % n])
        width, height = self.sizes[index]
        rng = np.random.default_rng([self.seed, n, position])
        top = int(rng.integers(0, height - self.crop + 1))
        left = int(rng.integers(0, width - self.crop + 1))
        return index, top, left

    def __getitem__(self, position: int) -> torch.Tensor:
        index, top, left = self.locate(position)
        image = self._image(index)
        if image.shape[1::-1] != tuple(self.sizes[index]):
            raise ValueError(f"image {self.files[index]} changed size while training")
        patch = image[top:top + self.crop, left:left + self.crop]
        return torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1).float().div_(255)


class StepBatches(Sampler):
    """Batches of stream positions for steps ``start_step`` .. ``stop_step - 1`` of one rank:
    step s yields ``[(s * world + rank) * B + b for b in range(B)]``."""

    def __init__(self, batch_size: int, start_step: int, stop_step: int, rank: int = 0,
                 world: int = 1):
        self.batch_size, self.start_step, self.stop_step = batch_size, start_step, stop_step
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return max(0, self.stop_step - self.start_step)

    def __iter__(self) -> Iterator[list[int]]:
        B = self.batch_size
        for step in range(self.start_step, self.stop_step):
            first = (step * self.world + self.rank) * B
            yield list(range(first, first + B))


def load_validation_images(folder: str | os.PathLike, crop: int | None = None,
                           files: Sequence[Path] | None = None) -> list[torch.Tensor]:
    """Validation images as (1, 3, H, W) float tensors in [0, 1]: whole images (``crop``
    None; the caller pads them) or ``crop`` x ``crop`` centre crops (images smaller than the
    crop raise ``ValueError``). ``files`` restricts the list (e.g. one rank's share)."""
    if files is None:
        files = find_images(folder, "val_dir")
    images = []
    for path in files:
        image = torch.from_numpy(read_rgb_uint8(path)).permute(2, 0, 1).float().div_(255)[None]
        if crop is not None:
            H, W = image.shape[-2:]
            if min(H, W) < crop:
                raise ValueError(f"val_dir: image {path} ({W}x{H}) is smaller than the "
                                 f"{crop}x{crop} validation crop (val_crop)")
            top, left = (H - crop) // 2, (W - crop) // 2
            image = image[..., top:top + crop, left:left + crop].contiguous()
        images.append(image)
    return images


def training_folder(folder: str | os.PathLike | None = None, *,
                    dest: str | os.PathLike | None = None,
                    hold_out: Sequence[str] = ("kodim23",)) -> Path:
    """A folder of training images for demos and notebooks.

    ``folder`` when given, else ``$LALIC_TRAIN_DIR`` when set (both must hold PNG/JPEG
    images), else a stand-in that works in any installation: the packaged demo photographs
    (:data:`lalic_core.data.DEMO_IMAGES`) except ``hold_out`` (kept for testing the trained
    model), copied into ``dest`` (default: a new temporary folder).

    The packaged photographs are half-resolution Kodak images, which the project otherwise
    keeps for evaluation only: a model trained on the stand-in has seen Kodak, so it is a
    demonstration, not something to report Kodak numbers for. Train on your own photographs
    (any folder of a few dozen PNG/JPEG images) for real models.
    """
    if folder is None and os.environ.get(TRAIN_DIR_ENV):
        folder = os.environ[TRAIN_DIR_ENV]
    if folder is not None:
        find_images(folder, "training folder")  # raises with the reason when unusable
        return Path(folder)
    names = [n for n in DEMO_IMAGES if n not in set(hold_out)]
    if not names:
        raise ValueError(f"training_folder: hold_out {tuple(hold_out)} leaves none of the "
                         f"packaged images {DEMO_IMAGES}")
    dest = Path(tempfile.mkdtemp(prefix="lalic-train-")) if dest is None else Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        src = demo_image_path(name)
        shutil.copyfile(src, dest / src.name)
    return dest
