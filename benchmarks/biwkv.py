"""BiWKV performance on the CPU, as ratios measured side by side in one run.

    .venv/bin/python benchmarks/biwkv.py            # full run (a few minutes on 2 cores)
    .venv/bin/python benchmarks/biwkv.py --quick    # smoke run (seconds)

Prints, with torch (and numba) limited to 2 threads:
1. for the token shapes LALIC meets at Kodak resolution (768x512), the median time of the
   fast CPU path's forward and forward+backward as a ratio to an elementwise floor measured
   in the same run (y = k * v on the same tensors: it reads and writes the bytes BiWKV must);
   targets at (98304, 96): forward <= 4x, forward+backward <= 12x;
2. the speed-up of the fast path over the float64 O(T^2) reference at T = 4096;
3. a sweep T = 1k..131k of BiWKV vs full softmax attention and 8x8 window attention at equal
   T and C (figure figures/biwkv_scaling.png) and t(4T)/t(T) (target <= 4.5: linear);
4. BiWKV's share of a whole Bi-RWKV block's forward time at each shape (target <= 25%),
   once lalic_core.layers.BiRWKVBlock exists.
Timings on a shared machine are noisy: compare ratios, and re-run when it is quiet.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from biwkv_scaling import (  # benchmarks/biwkv_scaling.py, beside this script
    DEFAULT_TOKENS,
    median_time,
    plot_scaling,
    scaling_sweep,
    wall_times,
)

from lalic_core.ops.biwkv import biwkv

#: (T, C) of the Bi-RWKV stages at 768x512 (Kodak): H*W at 1/2, 1/4, 1/8, 1/16 (two widths).
LALIC_SHAPES = [(384 * 256, 96), (192 * 128, 144), (96 * 64, 256), (48 * 32, 256), (48 * 32, 320)]
HW = {384 * 256: (256, 384), 192 * 128: (128, 192), 96 * 64: (64, 96), 48 * 32: (32, 48)}


def inputs(T, C, requires_grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(1, T, C, generator=g).requires_grad_(requires_grad)
    v = torch.randn(1, T, C, generator=g).requires_grad_(requires_grad)
    w = (torch.randn(C, generator=g) / T).requires_grad_(requires_grad)
    u = (torch.randn(C, generator=g) / T).requires_grad_(requires_grad)
    return w, u, k, v


def forward_backward(inputs, grad_y):
    biwkv(*inputs, backend="cpu").backward(grad_y)
    for x in inputs:
        x.grad = None


def floor_table(shapes, repeats):
    print("\n== fast CPU path vs the elementwise floor (y = k * v): median of "
          f"{repeats} runs (best run in brackets) ==")
    print(f"{'T':>7} {'C':>4} | {'floor ms':>9} | {'fwd ms':>8} {'fwd/floor':>15} | "
          f"{'fwd+bwd ms':>10} {'(fwd+bwd)/floor':>17}")
    results = {}
    for T, C in shapes:
        w, u, k, v = inputs(T, C)
        wg, ug, kg, vg = inputs(T, C, requires_grad=True)
        grad_y = torch.randn(1, T, C)
        times = {}
        with torch.no_grad():
            times["floor"] = wall_times(torch.mul, k, v, repeats=repeats)
            times["fwd"] = wall_times(biwkv, w, u, k, v, "cpu", repeats=repeats)
        times["both"] = wall_times(forward_backward, (wg, ug, kg, vg), grad_y, repeats=repeats)
        med = {key: statistics.median(x) for key, x in times.items()}
        best = {key: min(x) for key, x in times.items()}
        results[(T, C)] = med
        print(f"{T:7d} {C:4d} | {med['floor'] * 1e3:9.2f} | {med['fwd'] * 1e3:8.2f} "
              f"{med['fwd'] / med['floor']:6.1f}x ({best['fwd'] / best['floor']:4.1f}x) | "
              f"{med['both'] * 1e3:10.2f} {med['both'] / med['floor']:7.1f}x "
              f"({best['both'] / best['floor']:5.1f}x)")
    return results


def reference_speedup(T, C=96):
    w, u, k, v = inputs(T, C)
    with torch.no_grad():
        fast = median_time(biwkv, w, u, k, v, "cpu", repeats=5)
        ref = median_time(biwkv, w, u, k, v, "reference", repeats=1, warmup=0)
    print(f"\n== speed-up over the float64 O(T^2) reference at T={T}, C={C} ==")
    print(f"reference {ref * 1e3:.1f} ms, fast CPU path {fast * 1e3:.2f} ms: "
          f"{ref / fast:.0f}x faster")


def sweep(tokens, figure_path, full_max, repeats):
    print("\n== scaling sweep (forward, B=1, C=96; best of runs) ==")
    rows = scaling_sweep(tokens, full_attention_max_tokens=full_max, repeats=repeats)
    print("t(4T)/t(T) of BiWKV (target <= 4.5):")
    by_T = {r["tokens"]: r for r in rows}
    for T in tokens:
        if 4 * T in by_T:
            ratio = by_T[4 * T]["biwkv"] / by_T[T]["biwkv"]
            win = by_T[4 * T]["window_attention"] / by_T[T]["window_attention"]
            full = ""
            if by_T[4 * T]["full_attention"] is not None:
                full = f"   full attention {by_T[4 * T]['full_attention'] / by_T[T]['full_attention']:.1f}"
            print(f"  T={T:6d} -> {4 * T:6d}: biwkv {ratio:.2f}   window {win:.2f}{full}")
    fig = plot_scaling(rows)
    figure_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure_path, dpi=150, bbox_inches="tight")
    print(f"figure: {figure_path}")


def block_share(shapes, repeats):
    print("\n== BiWKV's share of a Bi-RWKV block's forward time (target <= 25%) ==")
    try:
        from lalic_core import layers
        from lalic_core.layers import BiRWKVBlock
    except ImportError as err:
        print(f"skipped: lalic_core.layers.BiRWKVBlock is not available ({err})")
        return
    import time

    inside = []  # time spent inside biwkv during the timed block calls

    def timed_biwkv(*args, **kwargs):
        t0 = time.perf_counter()
        out = biwkv(*args, **kwargs)
        inside.append(time.perf_counter() - t0)
        return out

    original = layers.biwkv
    layers.biwkv = timed_biwkv
    try:
        for T, C in shapes:
            H, W = HW[T]
            block = BiRWKVBlock(C).eval()
            x = torch.randn(1, C, H, W)
            with torch.no_grad():
                block(x)  # warm-up
                inside.clear()
                times = wall_times(block, x, repeats=repeats, warmup=0)
            calls, t_block = len(times), sum(times)
            print(f"T={T:6d} C={C:3d}: block {t_block / calls * 1e3:9.2f} ms/call, "
                  f"of which biwkv {sum(inside) / calls * 1e3:8.2f} ms -> "
                  f"{100 * sum(inside) / t_block:5.1f}%")
    finally:
        layers.biwkv = original


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--figure", type=Path, default=ROOT / "figures" / "biwkv_scaling.png")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    import numba

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, numba {numba.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} threads, load average {load:.2f}")
    biwkv(*inputs(64, 8))  # compile / load the numba kernels outside the timings

    if args.quick:
        shapes, repeats = [(4096, 96), (48 * 32, 256)], 3
        floor_table(shapes, repeats)
        reference_speedup(1024)
        sweep((1024, 2048, 4096, 8192, 16384), ROOT / "build" / "biwkv_scaling_quick.png",
              full_max=4096, repeats=3)
        block_share([(48 * 32, 256)], repeats)
        return 0
    floor_table(LALIC_SHAPES, repeats=11)
    reference_speedup(4096)
    sweep(DEFAULT_TOKENS, args.figure, full_max=16384, repeats=5)
    block_share(LALIC_SHAPES, repeats=3)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
