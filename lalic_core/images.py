"""Images in and out: the one reader and writer of the workbench, padding, folders.

:func:`read_image` reads any image file PIL (or, for 16-bit PNG, torchvision) can read as a
(1, 3, H, W) float32 tensor in [0, 1] of 8-bit RGB values, saying with a
:class:`~lalic_core.errors.LalicWarning` what it converted (grayscale, alpha, palette, CMYK,
16 bits); :func:`read_rgb_uint8` is the same as (H, W, 3) uint8 for training crops.
:func:`pad_center` / :func:`crop_center` pad centred with zeros on CompressAI's
``compute_padding`` (the official evaluation's convention).
"""
from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from compressai.ops import compute_padding

from lalic_core.atomic import atomic_path
from lalic_core.errors import LalicWarning

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_SIDE",
    "as_image_batch",
    "center_padding",
    "check_image_path",
    "crop_center",
    "list_images",
    "pad_center",
    "padded_size",
    "read_image",
    "read_rgb_uint8",
    "save_image",
    "to_uint8",
]

#: Suffixes of the image files that folders are searched for.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
MAX_SIDE = 65535  # largest width / height a .lalic file may declare


def _png_bit_depth(data: bytes) -> int | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 25:
        return data[24]
    return None


def read_rgb_uint8(path: str | os.PathLike, *, stacklevel: int = 2) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB.

    Grayscale, alpha, palette, CMYK and 16-bit images are converted to 8-bit RGB with a
    :class:`LalicWarning` saying what changed (16-bit values are rounded, v / 257; alpha is
    dropped; multi-frame images keep their first frame).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"expected an image file, got a folder: {path}")
    data = path.read_bytes()

    if _png_bit_depth(data) == 16:
        from torchvision.io import ImageReadMode, decode_png

        try:
            wide = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                              mode=ImageReadMode.UNCHANGED)
        except RuntimeError as exc:
            raise ValueError(f"{path}: damaged 16-bit PNG ({exc})") from None
        channels = wide.shape[0]
        arr = torch.round(wide.to(torch.float32) / 257.0)  # 65535 -> 255 exactly
        notes = ["16-bit PNG rounded to 8 bits"]
        if channels in (2, 4):
            arr, notes = arr[: channels - 1], notes + ["alpha channel dropped"]
        if arr.shape[0] == 1:
            arr, notes = arr.expand(3, -1, -1), notes + ["grayscale copied to R, G, B"]
        warnings.warn(f"{path.name}: {', '.join(notes)}", LalicWarning, stacklevel=stacklevel)
        return arr.permute(1, 2, 0).to(torch.uint8).numpy()

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            notes = []
            if getattr(im, "n_frames", 1) > 1:
                notes.append(f"first of {im.n_frames} frames used")
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                arr = np.asarray(im, dtype=np.float64)
                scale = 257.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 1.0
                arr = np.clip(np.round(arr / scale), 0, 255)
                notes.append(f"{'16-bit ' if scale > 1 else ''}grayscale ({mode}) converted "
                             "to 8-bit RGB")
                rgb = np.repeat(arr[..., None], 3, axis=2).astype(np.uint8)
            else:
                if mode != "RGB":
                    what = {
                        "L": "grayscale copied to R, G, B", "1": "1-bit image converted to RGB",
                        "LA": "grayscale copied to R, G, B, alpha channel dropped",
                        "P": "palette image converted to RGB", "PA": "palette image converted "
                        "to RGB, alpha channel dropped", "RGBA": "alpha channel dropped",
                        "CMYK": "CMYK converted to RGB",
                    }.get(mode, f"mode {mode} converted to 8-bit RGB")
                    notes.append(what)
                rgb = np.array(im.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file (or a format PIL cannot read)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: cannot read image ({exc})") from None
    if notes:
        warnings.warn(f"{path.name}: {', '.join(notes)}", LalicWarning, stacklevel=stacklevel)
    return rgb


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as a (1, 3, H, W) float32 tensor in [0, 1] (8-bit RGB values; see
    :func:`read_rgb_uint8` for the conversions it announces)."""
    rgb = read_rgb_uint8(path, stacklevel=3)
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).to(torch.float32).div(255.0) \
        .contiguous()


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) or (3, H, W) floats in [0, 1] -> (H, W, 3) uint8 (rounded; NaN -> 0)."""
    x = x.detach().to("cpu", torch.float32)
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {x.shape[0]}")
        x = x[0]
    if x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a (1, 3, H, W) or (3, H, W) image, got {tuple(x.shape)}")
    x = torch.nan_to_num(x, nan=0.0).clamp(0, 1)
    return torch.round(x * 255).to(torch.uint8).permute(1, 2, 0).contiguous()


def check_image_path(path: str | os.PathLike) -> Path:
    """``path`` if an image can be written there (a file name with a suffix PIL can write)."""
    from PIL import Image

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"output is a folder, expected a file name: {path}")
    if path.suffix.lower() not in Image.registered_extensions():
        raise ValueError(f"cannot write {path}: unknown image format {path.suffix!r} (use .png)")
    return path


def save_image(path: str | os.PathLike, x: torch.Tensor) -> None:
    """Write a (1, 3, H, W) image in [0, 1] as 8-bit RGB (format from the suffix; PNG is
    lossless), atomically (temporary file, then rename)."""
    from PIL import Image

    path = check_image_path(path)
    fmt = Image.registered_extensions()[path.suffix.lower()]
    image = Image.fromarray(to_uint8(x).numpy(), "RGB")
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt)


def as_image_batch(image) -> torch.Tensor:
    """A path, PIL image, numpy array or tensor ((3, H, W) or (1, 3, H, W); uint8 or floats in
    [0, 1]) as a (1, 3, H, W) float32 tensor in [0, 1]; clear errors for anything else."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if not isinstance(image, torch.Tensor):
        from PIL import Image

        if isinstance(image, Image.Image):
            image = torch.from_numpy(np.asarray(image.convert("RGB"))).permute(2, 0, 1)
        elif isinstance(image, np.ndarray):
            image = torch.from_numpy(image)
        else:
            raise TypeError(f"image must be a path, PIL image or tensor, got {type(image).__name__}")
    x = image
    if x.dtype == torch.uint8:
        x = x.to(torch.float32) / 255.0
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[:2] != (1, 3):
        raise ValueError(f"image must be (1, 3, H, W) or (3, H, W) RGB, got shape {tuple(image.shape)}")
    if not torch.is_floating_point(x):
        raise ValueError(f"image must be float in [0, 1] or uint8, got {x.dtype}")
    h, w = x.shape[-2:]
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise ValueError(f"image size {w}x{h} is outside 1..{MAX_SIDE}")
    if torch.isnan(x).any() or x.min() < 0 or x.max() > 1:
        raise ValueError("image values must lie in [0, 1]")
    return x.to(torch.float32)


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """(height, width) rounded up to multiples of ``multiple``."""
    return (math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple)


def center_padding(height: int, width: int, multiple: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding that centres the image, as ``F.pad`` wants it
    (CompressAI's ``compute_padding``: the extra row / column goes to the bottom / right, the
    official evaluation's convention)."""
    pad, _ = compute_padding(height, width, min_div=multiple)
    return pad


def pad_center(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad a (B, C, H, W) tensor, centred, to multiples of ``multiple``."""
    return F.pad(x, center_padding(x.shape[-2], x.shape[-1], multiple), mode="constant",
                 value=0.0)


def crop_center(x: torch.Tensor, height: int, width: int, multiple: int) -> torch.Tensor:
    """Undo :func:`pad_center` for an image whose original size was ``height`` x ``width``."""
    left, _, top, _ = center_padding(height, width, multiple)
    return x[..., top: top + height, left: left + width]


def list_images(folder: str | os.PathLike, what: str = "folder", *, recursive: bool = True,
                suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Sorted image files (by suffix, case-insensitive) under ``folder``.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: it is a file, or holds no image with one of ``suffixes``; ``what`` names
            the folder's role in the message (e.g. "val_dir").
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{what}: image folder not found: {folder}")
    if not folder.is_dir():
        raise ValueError(f"{what}: expected a folder of images, got the file {folder}")
    candidates = folder.rglob("*") if recursive else folder.glob("*")
    files = sorted(p for p in candidates if p.suffix.lower() in suffixes and p.is_file())
    if not files:
        others = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
        hint = (f" (found {len(others)} other image files; convert them to "
                f"{'/'.join(s.lstrip('.').upper() for s in suffixes[:2])})") if others else ""
        raise ValueError(f"{what}: no images ({', '.join(suffixes)}) found in {folder}"
                         f"{' (searched recursively)' if recursive else ''}{hint}")
    return files
