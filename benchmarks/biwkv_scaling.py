"""How BiWKV's cost grows with the number of tokens, next to softmax attention.

    .venv/bin/python benchmarks/biwkv_scaling.py            # sweep, plot to build/ (minutes)
    .venv/bin/python benchmarks/biwkv_scaling.py --quick    # T = 1k..16k (seconds)

Also imported by ``benchmarks/biwkv.py`` and ``notebooks/01_biwkv.ipynb`` (live table). Timings
depend on the machine, so the plot is written under ``build/``, never into the tracked
``figures/``.

Measures the forward time of BiWKV (fast CPU path), full softmax attention
(``scaled_dot_product_attention`` over all T tokens) and 8x8 window attention (non-overlapping windows of 64 tokens, as in
Swin-style codecs) at equal T and C. The paper's point (Sec. 3): BiWKV is linear in T like
window attention, but every token sees the whole image, which full attention pays for with
T^2.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a clone without installing the package
    sys.path.insert(0, str(ROOT))

from lalic_core.ops.biwkv import biwkv

__all__ = [
    "DEFAULT_TOKENS",
    "best_time",
    "full_attention",
    "median_time",
    "plot_scaling",
    "scaling_sweep",
    "wall_times",
    "window_attention",
]

#: T = 1k .. 131k (powers of two).
DEFAULT_TOKENS = tuple(2**n for n in range(10, 18))


def wall_times(fn, *args, repeats: int = 5, warmup: int = 1, budget_s: float = 20.0) -> list:
    """Wall times (s) of ``repeats`` runs of ``fn(*args)`` (fewer if over the time budget)."""
    for _ in range(warmup):
        fn(*args)
    times = []
    start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return times


def median_time(fn, *args, **kwargs) -> float:
    """Median of :func:`wall_times`."""
    return statistics.median(wall_times(fn, *args, **kwargs))


def grid_shape(T: int) -> tuple[int, int]:
    """A near-square (H, W) with H * W = T, H a power of two (T = 2^n)."""
    H = 2 ** (int(math.log2(T)) // 2)
    return H, T // H


def full_attention(x: torch.Tensor, head_dim: int = 32) -> torch.Tensor:
    """Softmax attention of all T tokens of x (B, T, C) with themselves (q = k = v = x)."""
    B, T, C = x.shape
    h = x.view(B, T, C // head_dim, head_dim).transpose(1, 2)
    return F.scaled_dot_product_attention(h, h, h).transpose(1, 2).reshape(B, T, C)


def window_attention(x: torch.Tensor, H: int, W: int, window: int = 8,
                     head_dim: int = 32) -> torch.Tensor:
    """Softmax attention inside non-overlapping window x window patches of the (H, W) grid."""
    B, T, C = x.shape
    heads = C // head_dim
    win = x.view(B, H // window, window, W // window, window, heads, head_dim)
    win = win.permute(0, 1, 3, 5, 2, 4, 6).reshape(-1, heads, window * window, head_dim)
    out = F.scaled_dot_product_attention(win, win, win)
    out = out.view(B, H // window, W // window, heads, window, window, head_dim)
    return out.permute(0, 1, 4, 2, 5, 3, 6).reshape(B, T, C)


def best_time(fn, *args, repeats: int = 5, budget_s: float = 1.0) -> float:
    """Fastest run, the least disturbed by other load on the machine: at least ``repeats``
    runs, more (up to 100) while they fit in ``budget_s`` seconds."""
    times = wall_times(fn, *args, repeats=repeats)
    extra = min(100 - len(times), int(budget_s / max(min(times), 1e-6)))
    if extra > 0:
        times += wall_times(fn, *args, repeats=extra, warmup=0, budget_s=budget_s)
    return min(times)


def scaling_sweep(tokens=DEFAULT_TOKENS, channels: int = 96, full_attention_max_tokens: int = 16384,
                  repeats: int = 5, log=print) -> list[dict]:
    """Forward times (s, best of ``repeats``) per T; full attention only up to
    ``full_attention_max_tokens`` (on a CPU its T^2 time, not memory, is the limit:
    torch's flash-style CPU kernel needs O(T) memory)."""
    rows = []
    for T in tokens:
        g = torch.Generator().manual_seed(T)
        x = torch.randn(1, T, channels, generator=g)
        v = torch.randn(1, T, channels, generator=g)
        w = torch.randn(channels, generator=g) / T
        u = torch.randn(channels, generator=g) / T
        H, W = grid_shape(T)
        with torch.no_grad():
            row = {
                "tokens": T,
                "biwkv": best_time(biwkv, w, u, x, v, "cpu", repeats=repeats),
                "window_attention": best_time(window_attention, x, H, W, repeats=repeats),
                "full_attention": (best_time(full_attention, x, repeats=3)
                                   if T <= full_attention_max_tokens else None),
            }
        rows.append(row)
        if log:
            full = row["full_attention"]
            log(f"T={T:7d}  biwkv {row['biwkv'] * 1e3:9.2f} ms  window {row['window_attention'] * 1e3:9.2f} ms"
                f"  full {'-' if full is None else f'{full * 1e3:.2f} ms':>12}")
    return rows


def plot_scaling(rows: list[dict], channels: int = 96, threads: int | None = None):
    """Log-log plot of the sweep with reference slopes T and T^2."""
    import matplotlib.pyplot as plt

    threads = threads or torch.get_num_threads()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    series = [("biwkv", "BiWKV (fast CPU kernel)", "o-", "C0"),
              ("window_attention", "8x8 window attention", "s-", "C2"),
              ("full_attention", "full softmax attention", "^-", "C3")]
    for key, label, style, color in series:
        pts = [(r["tokens"], r[key] * 1e3) for r in rows if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), style, color=color, label=label)
    # reference slopes through the largest-T point of BiWKV and of full attention (where the
    # asymptotic growth shows), offset so that they do not hide the data
    Ts = [r["tokens"] for r in rows]
    T_last, t_last = Ts[-1], rows[-1]["biwkv"] * 1e3 * 0.5
    ax.plot([Ts[0], T_last], [t_last * Ts[0] / T_last, t_last], ":", color="gray",
            label="slope 1 (time ∝ T)")
    full = [(r["tokens"], r["full_attention"] * 1e3) for r in rows
            if r.get("full_attention") is not None]
    if len(full) >= 2:
        T_full, t_full = full[-1][0], full[-1][1] * 2
        ax.plot([Ts[0], T_full], [t_full * (Ts[0] / T_full) ** 2, t_full], "--", color="gray",
                label="slope 2 (time ∝ T²)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("tokens T (H x W)")
    ax.set_ylabel("forward time per call (ms, best of runs)")
    ax.set_title(f"Token mixing cost vs sequence length (B=1, C={channels}, {threads} CPU threads)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="BiWKV vs softmax attention: time against T.")
    parser.add_argument("--quick", action="store_true", help="T = 1k..16k only")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "biwkv_scaling.png")
    args = parser.parse_args(argv)
    rows = scaling_sweep(DEFAULT_TOKENS[:5] if args.quick else DEFAULT_TOKENS)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_scaling(rows).savefig(args.out, dpi=150, bbox_inches="tight")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
