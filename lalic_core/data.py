"""Images for the workbench: the Kodak test set (downloaded on request) and packaged demo images.

The package never depends on a data folder of this repository. Users fetch Kodak with
``lalic download-kodak DIR`` (or :func:`download_kodak`); notebooks and demos that want a
real photograph call :func:`demo_image` / :func:`find_kodak`, which fall back to two Kodak
photographs shipped inside the package at half resolution (384x256).

Kodak: the 24 Kodak PhotoCD images (768x512 or 512x768), released by Eastman Kodak for
unrestricted use. Evaluation only: never train on them.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lalic_core.images import IMAGE_SUFFIXES, list_images, read_image

__all__ = ["DEMO_IMAGES", "IMAGE_SUFFIXES", "KODAK_NAMES", "DownloadError", "default_data_dir",
           "demo_image", "demo_image_path", "download_kodak", "find_kodak", "list_images",
           "load_image"]

#: The one image reader, under the name the notebooks use.
load_image = read_image

KODAK_URL = "https://r0k.us/graphics/kodak/kodak/"
KODAK_NAMES = tuple(f"kodim{i:02d}" for i in range(1, 25))

# SHA-256 (first 16 hex digits) of each image's decoded 8-bit RGB pixels, and its size (W, H).
# Pixel hashes rather than file hashes, so a re-encoded PNG of the same pixels still verifies.
KODAK_PIXEL_SHA256 = {
    "kodim01": ((768, 512), "a002107433535944"), "kodim02": ((768, 512), "ae5a495df4ec40e0"),
    "kodim03": ((768, 512), "234e61f585503f2a"), "kodim04": ((512, 768), "e88e788fca00e6c7"),
    "kodim05": ((768, 512), "ed3d1ee770909d3b"), "kodim06": ((768, 512), "7f45158999fa297d"),
    "kodim07": ((768, 512), "4e3664bf6fe865b4"), "kodim08": ((768, 512), "889c3740e4ed54ca"),
    "kodim09": ((512, 768), "f8453140e63a4230"), "kodim10": ((512, 768), "fabe11b5c4f02839"),
    "kodim11": ((768, 512), "ab4dd9bf8431e717"), "kodim12": ((768, 512), "f412db2168e59994"),
    "kodim13": ((768, 512), "875703d56fb9396f"), "kodim14": ((768, 512), "2bd5029ee75ac169"),
    "kodim15": ((768, 512), "b5353e7511277009"), "kodim16": ((768, 512), "ed21745fd32fce95"),
    "kodim17": ((512, 768), "566bc866664e9b06"), "kodim18": ((512, 768), "3475af71066f3ca8"),
    "kodim19": ((512, 768), "7956408ef24222d3"), "kodim20": ((768, 512), "666ce8f2db5566a1"),
    "kodim21": ((768, 512), "2d6902daf7c4486b"), "kodim22": ((768, 512), "f430842120c108b6"),
    "kodim23": ((768, 512), "81992a83592267e6"), "kodim24": ((768, 512), "e3e3ccc3e795b82a"),
}

DEMO_IMAGES = ("kodim23", "kodim15")  # shipped at half resolution in lalic_core/assets/


class DownloadError(RuntimeError):
    """A download failed or produced a file that is not the expected image."""


def default_data_dir() -> Path:
    """Where downloaded data goes by default: $LALIC_DATA or ~/.cache/lalic."""
    return Path(os.environ.get("LALIC_DATA", Path.home() / ".cache" / "lalic"))


def pixel_sha256(image: Image.Image) -> str:
    """First 16 hex digits of the SHA-256 of an image's 8-bit RGB pixels."""
    return hashlib.sha256(np.asarray(image.convert("RGB")).tobytes()).hexdigest()[:16]


def _fetch(url: str, dest: Path, timeout: float) -> None:
    """Download ``url`` to ``dest`` atomically (a partial file never takes dest's name)."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def download_kodak(
    dest: str | os.PathLike | None = None,
    *,
    base_url: str = KODAK_URL,
    verify: bool = True,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download the 24 Kodak images into ``dest`` (default ``default_data_dir()/kodak``).

    Files already present and valid are kept. Each image is checked against its known size and
    pixel hash; a mismatch raises :class:`DownloadError` (``verify=False`` only warns).
    ``base_url`` may be any URL urllib understands, e.g. ``file:///path/to/kodak/`` for a local
    mirror. Returns the folder.
    """
    from tqdm.auto import tqdm

    dest = Path(dest) if dest is not None else default_data_dir() / "kodak"
    dest.mkdir(parents=True, exist_ok=True)
    if not base_url.endswith("/"):
        base_url += "/"
    for name in tqdm(KODAK_NAMES, desc="Kodak", unit="image", disable=not progress):
        path = dest / f"{name}.png"
        if path.exists() and _kodak_problem(path, name) is None:
            continue
        try:
            _fetch(base_url + f"{name}.png", path, timeout)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DownloadError(f"could not download {base_url}{name}.png: {exc}") from exc
        problem = _kodak_problem(path, name)
        if problem is not None:
            if verify:
                path.unlink(missing_ok=True)
                raise DownloadError(f"{base_url}{name}.png: {problem} (verify=False to keep it)")
            warnings.warn(f"{path}: {problem}", stacklevel=2)
    return dest


def _kodak_problem(path: Path, name: str) -> str | None:
    """None if ``path`` holds the expected Kodak image, else what is wrong with it."""
    size, digest = KODAK_PIXEL_SHA256[name]
    try:
        with Image.open(path) as im:
            if im.size != size:
                return f"expected a {size[0]}x{size[1]} image, got {im.size[0]}x{im.size[1]}"
            if pixel_sha256(im) != digest:
                return "pixel hash differs from the reference Kodak image"
    except (OSError, Image.DecompressionBombError) as exc:
        return f"not a readable image ({exc})"
    return None


def find_kodak(extra_dirs: list[str | os.PathLike] | None = None) -> Path | None:
    """The first folder holding all 24 Kodak PNGs, or None.

    Looked for in ``extra_dirs``, $LALIC_KODAK, and ``default_data_dir()/kodak``.
    """
    candidates = [Path(d) for d in (extra_dirs or [])]
    if "LALIC_KODAK" in os.environ:
        candidates.append(Path(os.environ["LALIC_KODAK"]))
    candidates.append(default_data_dir() / "kodak")
    for folder in candidates:
        if all((folder / f"{n}.png").is_file() for n in KODAK_NAMES):
            return folder
    return None


def demo_image_path(name: str = "kodim23") -> Path:
    """Path of a packaged demo image (half-resolution Kodak photograph, 384x256)."""
    if name not in DEMO_IMAGES:
        raise ValueError(f"unknown demo image {name!r}; choose one of {DEMO_IMAGES}")
    return Path(str(resources.files("lalic_core") / "assets" / f"{name}_half.png"))


def demo_image(name: str = "kodim23", prefer_full: bool = True) -> torch.Tensor:
    """A (1, 3, H, W) photograph for demos: the full Kodak image when Kodak is found on disk
    (see :func:`find_kodak`), else the packaged half-resolution copy."""
    folder = find_kodak() if prefer_full else None
    if folder is not None:
        return load_image(folder / f"{name}.png")
    return load_image(demo_image_path(name))


def main(argv: list[str] | None = None) -> int:
    """``python -m lalic_core.data DIR``: download Kodak into DIR."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lalic_core.data", description=__doc__)
    add_download_arguments(parser)
    args = parser.parse_args(argv)
    return run_download(args)


def add_download_arguments(parser) -> None:
    parser.add_argument("dest", nargs="?", default=None,
                        help="target folder (default: $LALIC_DATA/kodak or ~/.cache/lalic/kodak)")
    parser.add_argument("--base-url", default=KODAK_URL, help="mirror URL (file:// works too)")
    parser.add_argument("--no-verify", action="store_true", help="keep images that fail the check")


def run_download(args) -> int:
    folder = download_kodak(args.dest, base_url=args.base_url, verify=not args.no_verify)
    print(f"Kodak: 24 images in {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
