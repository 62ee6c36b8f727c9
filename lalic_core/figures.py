"""Regenerate every figure of the workbench: ``python -m lalic_core.figures`` (= ``make figures``).

Each figure is a small function registered with :func:`figure`; it writes its files into the
output folder and returns their paths. Figures are made headlessly (Agg backend) from the
package, the shipped zoo and, where present, the project's shared data (published RD points).

    python -m lalic_core.figures                 # all figures into figures/
    python -m lalic_core.figures --list          # what exists and what it corresponds to
    python -m lalic_core.figures erf rd_kodak    # only some

Reproducible: a second run rewrites the same bytes (fixed seeds, one torch thread, SVGs with a
fixed ``svg.hashsalt`` and no date, PNGs without software/version metadata) and nothing timed is
drawn; timing plots are written by ``benchmarks/`` under ``build/``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


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


# --------------------------------------------------------------------------- figures


@figure("erf_comparison", "The paper's ERF figure: Bi-RWKV vs TCM/FAT-style windows vs CNN vs "
        "global attention (random init), and the zoo's trained g_a")
def erf_comparison(out_dir: Path) -> list[Path]:
    from lalic_core.explore import ERFLab, plot_erf_comparison

    lab = ERFLab(dim=32, n_images=4, seed=0, quality=3)
    random_row = lab.comparison(depth=2, size=64)
    trained_row = lab.comparison(depth=4, size=128, weights="trained g_a")
    trained = all(not v.note for v in trained_row.values() if v is not None)
    rows = {"random init\n(2 blocks, 32 ch,\n64x64 noise)": random_row,
            ("trained g_a (zoo q3)" if trained else "random g_a\n(zoo entries missing)")
            + "\n(128x128 photo crops)": trained_row}
    fig = plot_erf_comparison(rows)
    fig.suptitle("Effective receptive fields (RepLKNet's method): wider = more of the image "
                 "reaches the centre output")
    return _save(fig, out_dir, "erf_comparison")


@figure("latent_correlation", "The paper's latent-correlation claim: spatial correlation of "
        "(y - mu) / sigma, LALIC vs TCM-style vs CNN transforms (zoo q3)")
def latent_correlation(out_dir: Path) -> list[Path]:
    from lalic_core.explore import (
        COMPARISON_ZOO,
        compare_correlations,
        plot_correlation_comparison,
        zoo_or_random,
    )

    models = {}
    for name in COMPARISON_ZOO:
        choice = zoo_or_random(name, 3)
        models[name if choice.trained else f"{name} (random init)"] = choice.model
    fig = plot_correlation_comparison(compare_correlations(models))
    fig.suptitle("Correlation of the normalised latent (y - mu) / sigma with its shifts (dy, dx),"
                 " the two packaged Kodak photographs")
    return _save(fig, out_dir, "latent_correlation")


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


#: Our zoo's Kodak results (``scripts/eval_zoo.py``): merged curves ``kodak-<name>.json``.
RESULTS_DIR = REPO_ROOT / "results"


def zoo_results(results_dir: Path = RESULTS_DIR) -> dict:
    """Our merged zoo curves on Kodak, keyed by zoo name (empty before the zoo is evaluated)."""
    from lalic_core.rd import load_rd

    if not results_dir.is_dir():
        return {}
    import re

    return {p.stem.removeprefix("kodak-"): load_rd(p)
            for p in sorted(results_dir.glob("kodak-*.json"))
            if not re.search(r"-q\d+$", p.stem)}  # per-quality reports are merged already


@figure("rd_kodak", "The paper's RD curves on Kodak, with our CPU-trained zoo beside the "
        "published points")
def rd_kodak(out_dir: Path) -> list[Path]:
    from lalic_core.explore import plot_rd_kodak

    return _save(plot_rd_kodak(zoo_results()), out_dir, "rd_kodak", svg=True)


def _reproducible() -> None:
    """Headless matplotlib with a fixed SVG id salt, one torch thread, seeded RNGs."""
    import matplotlib
    import torch

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "lalic-workbench"
    torch.set_num_threads(1)
    torch.manual_seed(0)


def main(argv: list[str] | None = None) -> int:
    import torch

    _reproducible()
    parser = argparse.ArgumentParser(prog="python -m lalic_core.figures",
                                     description="Regenerate the workbench's figures.")
    parser.add_argument("names", nargs="*", help="figures to make (default: all)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "figures")
    parser.add_argument("--list", action="store_true", help="list the figures and exit")
    args = parser.parse_args(argv)
    if args.list:
        for spec in REGISTRY.values():
            print(f"{spec.name:24s} {spec.paper_ref}")
        return 0
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:
        parser.error(f"unknown figure(s) {unknown}; known: {sorted(REGISTRY)}")
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in args.names or list(REGISTRY):
        start = time.perf_counter()
        torch.manual_seed(0)  # each figure the same alone as in a full run
        try:
            paths = REGISTRY[name].make(args.out)
        except Exception as exc:  # noqa: BLE001 -- keep going: one broken figure must not hide the others
            failed.append(name)
            print(f"[figures] {name}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        took = time.perf_counter() - start
        for p in paths:
            print(f"[figures] {name}: wrote {p.relative_to(args.out.parent) if p.is_relative_to(args.out.parent) else p} ({took:.1f} s)")
    if failed:
        print(f"[figures] {len(failed)} figure(s) failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
