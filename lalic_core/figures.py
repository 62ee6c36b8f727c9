"""Regenerate every figure of the workbench: ``python -m lalic_core.figures`` (= ``make figures``).

Each figure is a small function registered with :func:`figure`; it writes its files into the
output folder and returns their paths. Figures are made headlessly (Agg backend) from the
package, the shipped zoo and, where present, the project's shared data (published RD points).

    python -m lalic_core.figures                 # all figures into figures/
    python -m lalic_core.figures --list          # what exists and what it corresponds to
    python -m lalic_core.figures erf rd_kodak    # only some
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


def _save(fig, out_dir: Path, stem: str, svg: bool = False) -> list[Path]:
    paths = [out_dir / f"{stem}.png"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    if svg:
        paths.append(out_dir / f"{stem}.svg")
        fig.savefig(paths[-1], bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


# --------------------------------------------------------------------------- figures


@figure("biwkv_scaling", "Sec. 3 claim: BiWKV is linear in tokens (vs. quadratic softmax attention)")
def biwkv_scaling(out_dir: Path) -> list[Path]:
    from lalic_core.ops.biwkv.scaling import plot_scaling, scaling_sweep

    rows = scaling_sweep()
    return _save(plot_scaling(rows), out_dir, "biwkv_scaling", svg=True)


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


@figure("rd_kodak", "Fig. 5 (RD curves on Kodak) with our CPU-trained zoo beside the published points")
def rd_kodak(out_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from lalic_core.rd import load_rd, plot_rd, published_rd_dir

    rd = published_rd_dir()
    published = [("kodak-lalic", "LALIC (paper)"), ("kodak-vtm91-compressai", "VTM-9.1"),
                 ("kodak-elic2022-paper", "ELIC (paper)"), ("kodak-bpg", "BPG"),
                 ("kodak-mbt2018-mean-compressai", "mbt2018-mean"), ("kodak-jpeg", "JPEG")]
    curves = []
    for stem, label in published:
        c = load_rd(rd / f"{stem}.json")
        c.name = label
        curves.append(c)
    ours = zoo_results()
    # fixed colours, so a curve looks the same in both panels
    styles = {c.name: {"linestyle": "--", "alpha": 0.8, "color": f"C{i}"}
              for i, c in enumerate(curves)}
    for i, (name, c) in enumerate(ours.items(), start=len(curves)):
        c.name = f"{name} (ours, CPU zoo)"
        styles[c.name] = {"linewidth": 2.5, "color": f"C{i % 10}", "marker": "s" if len(c.bpp) > 1 else "*",
                          "markersize": 7 if len(c.bpp) > 1 else 13}
        curves.append(c)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    plot_rd(curves, ax=axes[0], max_bpp=1.6, styles=styles,
            title="Kodak: published points and our zoo")
    axes[0].set_ylim(24, 40)
    plot_rd([c for c in curves if "ours" in c.name or c.name in ("JPEG", "BPG")], ax=axes[1],
            styles=styles, max_bpp=1.6,
            title="Zoo close-up (controlled comparison: stars at q3)" if ours else "zoo not evaluated")
    if ours:
        top = max(max(c.bpp) for c in ours.values())
        axes[1].set_xlim(0, min(1.6, top * 1.6))
        axes[1].set_ylim(23, max(max(c.quality("psnr")) for c in ours.values()) + 3)
    fig.tight_layout()
    return _save(fig, out_dir, "rd_kodak", svg=True)


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
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
