"""How far the scales of real latents are from a scale-table boundary: the margin that keeps
encoder and decoder on the same CDF when their numerics differ (other machine, device,
threads, float64 entropy path).

For every y element coded by a GaussianConditional, the scale s from the entropy-parameter
path selects table entry ``bucketize(s, scale_table[:-1])``. A relative perturbation of s
smaller than d = min_b |s - b| / s (b: the table boundaries) cannot change the index, so d
is both the distance to the nearest boundary and the perturbation needed to flip that index
(measured relative to the boundary; scales under the lower bound 0.11 count from it).
Prints a histogram of d over all elements, the smallest d (the perturbation that flips the
first index), and the measured float32-vs-float64 difference of the scales.

    python benchmarks/scale_margin.py [--images DIR] [--model lalic-tiny:3] [--limit N]
"""
from __future__ import annotations

import argparse
import itertools
import math
import time
from pathlib import Path

import torch

from lalic_core import codec
from lalic_core.codec.determinism import deterministic_coding
from lalic_core.entropy_models import GaussianConditional

EDGES = [0.0, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, math.inf]


def _images(folder: str | None, limit: int | None) -> list[Path]:
    candidates = [Path(folder)] if folder else [
        Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"]
    for c in candidates:
        files = sorted(p for p in c.glob("*.png")) if c.is_dir() else []
        if files:
            return files[:limit]
    from lalic_core.data import demo_image_path

    return [Path(demo_image_path(n)) for n in ("kodim15", "kodim23")][:limit]


def coded_scales(model: codec.CodecModel, x: torch.Tensor, *, entropy_float64: bool) -> tuple:
    """The scales (flattened, float64) of every y element in coding order, and their
    table boundaries."""
    recorded: list[torch.Tensor] = []
    original = GaussianConditional.build_indexes

    def record(self, scales):
        recorded.append(scales.detach().double().cpu().reshape(-1))
        return original(self, scales)

    GaussianConditional.build_indexes = record
    try:
        with torch.no_grad(), deterministic_coding(model.model, entropy_float64=entropy_float64):
            model.model.compress(codec.pad_center(x, 64).contiguous())
    finally:
        GaussianConditional.build_indexes = original
    gc = next(m for m in model.model.modules() if isinstance(m, GaussianConditional))
    return torch.cat(recorded), gc.scale_table[:-1].double().cpu()


def margin(scales: torch.Tensor, boundaries: torch.Tensor) -> torch.Tensor:
    """Distance of each scale to its nearest table boundary b, relative to b (scales below
    the lower bound, which is the first boundary, count from it)."""
    idx = torch.bucketize(scales, boundaries).clamp(1, len(boundaries) - 1)
    below = (scales - boundaries[idx - 1]).abs() / boundaries[idx - 1]
    above = (boundaries[idx] - scales).abs() / boundaries[idx]
    return torch.minimum(below, above)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=None, help="folder of PNGs (default: Kodak)")
    parser.add_argument("--model", default="lalic-tiny:3")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--float64-images", type=int, default=4,
                        help="images also coded with the float64 entropy path")
    args = parser.parse_args()
    model = codec.resolve_model(args.model)
    files = _images(args.images, args.limit)
    margins, diffs, flips = [], [], 0
    t32 = t64 = 0.0
    for i, path in enumerate(files):
        x = codec.read_image(path)
        start = time.perf_counter()
        s32, boundaries = coded_scales(model, x, entropy_float64=False)
        t32 += time.perf_counter() - start if i < args.float64_images else 0.0
        margins.append(margin(s32, boundaries))
        if i < args.float64_images:
            start = time.perf_counter()
            s64, _ = coded_scales(model, x, entropy_float64=True)
            t64 += time.perf_counter() - start
            floor = boundaries[0]  # scales below it all code alike (the lower bound)
            diffs.append(((s64.clamp(min=floor) - s32.clamp(min=floor)).abs()
                          / s32.clamp(min=floor)).max().item())
            flips += int((torch.bucketize(s64, boundaries) != torch.bucketize(s32, boundaries))
                         .sum())
    d = torch.cat(margins)
    n = d.numel()
    print(f"model {args.model}; {len(files)} images from {files[0].parent}; {n:,} coded y "
          f"scales; table: {len(boundaries) + 1} scales, ratio "
          f"{(boundaries[1] / boundaries[0]).item():.4f} between neighbours")
    print("relative distance to the nearest scale-table boundary (= relative perturbation "
          "needed to flip the index):")
    for lo, hi in itertools.pairwise(EDGES):
        count = int(((d >= lo) & (d < hi)).sum())
        label = f"[{lo:.0e}, {hi:.0e})" if math.isfinite(hi) else f"[{lo:.0e}, inf)"
        print(f"  {label:>18}  {count:>10,}  {100 * count / n:8.4f}%  {'#' * round(50 * count / n)}")
    print(f"smallest distance: {d.min().item():.3e} (a relative perturbation of the scales "
          f"this large flips the first index); median {d.median().item():.3e}")
    for eps in (5e-7, 1e-6, 1e-5, 1e-4):
        print(f"  indexes that a relative scale error of {eps:.0e} can flip: "
              f"{int((d < eps).sum()):,} ({100 * float((d < eps).sum()) / n:.5f}%)")
    if diffs:
        print(f"float32 vs float64 entropy path ({len(diffs)} images): largest relative scale "
              f"difference {max(diffs):.3e}, indexes that differ: {flips}; coding time "
              f"{t32:.1f} s float32, {t64:.1f} s float64 ({t64 / max(t32, 1e-9):.2f}x)")


if __name__ == "__main__":
    main()
