"""Two small figures: the RWKV-SCCTX decoding order step by step, and one block's FLOPs
against resolution for every block kind."""
from __future__ import annotations

from pathlib import Path

from lalic_core.figures.common import (
    _save,
    figure,
)


@figure("scctx_steps", "The paper's RWKV-SCCTX decoding order: the decoder after each "
        "channel-group / checkerboard pass")
def scctx_steps(out_dir: Path) -> list[Path]:
    from lalic_core.explore import demo_images, plot_decode_grid, scctx_decode, zoo_or_random

    choice = zoo_or_random("lalic-tiny", 3)
    steps, _ = scctx_decode(choice.model, demo_images()[:1])
    fig = plot_decode_grid(steps)
    what = "zoo lalic-tiny q3" if choice.trained else "random-init 'tiny' (zoo entry missing)"
    fig.suptitle(f"{fig.get_suptitle()}\nmodel: {what}; packaged half-size kodim23", fontsize=10)
    return _save(fig, out_dir, "scctx_steps")


@figure("complexity_scaling", "The paper's complexity claim: one block's FLOPs vs resolution, "
        "Bi-RWKV vs window attention vs CNN vs global attention (timings: benchmarks/)")
def complexity_scaling(out_dir: Path) -> list[Path]:
    from lalic_core.analysis.complexity_sweep import plot_sweep, sweep

    rows = sweep(dim=64, resolutions=(16, 32, 64, 96, 128), repeats=1, time_budget_s=None)
    fig = plot_sweep(rows, title="One block (64 channels, batch 1) against the number of tokens",
                     quantities=("gflops",))
    return _save(fig, out_dir, "complexity_scaling", svg=True)
