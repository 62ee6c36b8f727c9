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
import sys
import time
from pathlib import Path

# Importing the figure modules registers their figures, in this order.
from lalic_core.figures import correlation, erf, rd, scctx_and_complexity  # noqa: F401
from lalic_core.figures.common import (
    _MODE,
    REGISTRY,
    REPO_ROOT,
    FigureSpec,
    _reproducible,
    figure,
    read_json,
    shared_data_dir,
    write_json,
)
from lalic_core.figures.rd import zoo_results

__all__ = ["REGISTRY", "FigureSpec", "figure", "main", "read_json", "shared_data_dir",
           "write_json", "zoo_results"]


def main(argv: list[str] | None = None) -> int:
    import torch

    _reproducible()
    parser = argparse.ArgumentParser(prog="python -m lalic_core.figures",
                                     description="Regenerate the workbench's figures.")
    parser.add_argument("names", nargs="*", help="figures to make (default: all)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "figures")
    parser.add_argument("--list", action="store_true", help="list the figures and exit")
    parser.add_argument("--full", action="store_true",
                        help="full-size measurements (make figures-full): all 24 Kodak images "
                             "at 512x768 for every ERF row; rows already in figures/data with "
                             "the same inputs are reused")
    parser.add_argument("--recompute", action="store_true",
                        help="ignore cached rows in figures/data and measure everything again")
    args = parser.parse_args(argv)
    _MODE["value"] = "full" if args.full else "fast"
    _MODE["recompute"] = args.recompute
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
