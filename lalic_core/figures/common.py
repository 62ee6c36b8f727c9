"""What every figure shares: the registry (:func:`figure`), reproducible saving (no varying
metadata), rounded sorted JSON (:func:`write_json`), the Kodak images and zoo lookups, and the
measurement mode ("fast" for ``make figures``, "full" for ``make figures-full``)."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class FigureSpec:
    name: str
    paper_ref: str  # the paper figure/table it corresponds to
    make: Callable[[Path], list[Path]]


REGISTRY: dict[str, FigureSpec] = {}


def figure(name: str, paper_ref: str):
    """Register ``fn(out_dir) -> list[Path]`` as figure ``name``."""

    def register(fn):
        REGISTRY[name] = FigureSpec(name, paper_ref, fn)
        return fn

    return register


def shared_data_dir() -> Path | None:
    """The project's shared data folder (../shared/data beside a clone), if present."""
    path = Path(os.environ.get("LALIC_SHARED_DIR", REPO_ROOT.parent / "shared")) / "data"
    return path if path.is_dir() else None


#: savefig metadata that would change from run to run or machine to machine.
PNG_METADATA = {"Software": None}
SVG_METADATA = {"Date": None, "Creator": None}


def _save(fig, out_dir: Path, stem: str, svg: bool = False) -> list[Path]:
    """``stem.png`` (and ``stem.svg``) without varying metadata; closes ``fig``."""
    import matplotlib.pyplot as plt

    paths = [out_dir / f"{stem}.png"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight", metadata=PNG_METADATA)
    if svg:
        paths.append(out_dir / f"{stem}.svg")
        fig.savefig(paths[-1], bbox_inches="tight", metadata=SVG_METADATA)
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------- shared helpers
#: Settings of the measurements: "full" (``make figures-full``: all 24 Kodak images at
#: 512x768) and "fast" (what ``make figures`` computes when no full result is cached).
MODES = ("fast", "full")
_MODE = {"value": "fast", "recompute": False}
DATA_DIR_NAME = "data"


def _round(value, digits: int = 6):
    """Floats rounded to ``digits`` significant digits (NaN/inf -> None), recursively, so
    that JSON files are byte-identical across runs and platforms."""
    import math

    import numpy as np

    if isinstance(value, dict):
        return {str(k): _round(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v, digits) for v in value]
    if isinstance(value, np.ndarray):
        return _round(value.tolist(), digits)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        if not math.isfinite(value):
            return None
        return float(f"{value:.{digits}g}") if value else 0.0
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_json(path: Path, data, digits: int = 6) -> Path:
    """``data`` as JSON with sorted keys and floats rounded to ``digits`` significant digits
    (reruns write the same bytes)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_round(data, digits), sort_keys=True, indent=1) + "\n")
    return path


def read_json(path: Path):
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def kodak_dir() -> Path | None:
    """The 24 Kodak images: ../shared/data/kodak, else :func:`lalic_core.data.find_kodak`."""
    from lalic_core.data import find_kodak

    shared = shared_data_dir()
    return find_kodak([shared / "kodak"] if shared else None)


def kodak_images(rotate_portrait: bool = True, names=None):
    """[(name, (1, 3, H, W) tensor, rotated)] of the Kodak images (all 24 by default);
    portrait images (512 wide, 768 high) are rotated by 90 degrees to 512x768 (H x W) when
    ``rotate_portrait``. Raises FileNotFoundError when Kodak is absent."""
    import torch

    from lalic_core.data import KODAK_NAMES
    from lalic_core.images import read_image

    folder = kodak_dir()
    if folder is None:
        raise FileNotFoundError("the 24 Kodak images were not found (../shared/data/kodak, "
                                "$LALIC_KODAK or `lalic download-kodak`)")
    out = []
    for name in names or KODAK_NAMES:
        x = read_image(folder / f"{name}.png")
        rotated = bool(rotate_portrait and x.shape[-2] > x.shape[-1])
        if rotated:
            x = torch.rot90(x, 1, dims=(-2, -1)).contiguous()
        out.append((name, x, rotated))
    return out


def _centre_crop(x, size: int):
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size].contiguous()


def _zoo_entry(names, quality: int = 3):
    """(name, record) of the first of ``names`` the zoo has at ``quality``, else None."""
    from lalic_core import zoo

    have = set(zoo.available())
    for name in names:
        if (name, quality) in have:
            return name, zoo.info(name, quality)
    return None


def _steps(record: dict) -> int | None:
    return (record or {}).get("total_steps") or ((record or {}).get("training") or {}).get("steps")


def _reproducible() -> None:
    """Headless matplotlib with a fixed SVG id salt, one torch thread, seeded RNGs."""
    import matplotlib
    import torch

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "lalic-workbench"
    torch.set_num_threads(1)
    torch.manual_seed(0)
