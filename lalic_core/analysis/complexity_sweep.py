"""How one block of each kind scales with resolution: time, FLOPs and memory.

Bi-RWKV (linear in the number of tokens T = H*W), window attention (TCM, FAT: linear, with a
window-sized constant), convolutions (linear) and global softmax attention (quadratic in T) are
run on one (1, C, H, W) input per resolution. FLOPs come from ``torch.utils.flop_counter``:
a multiply-add counts as 2 FLOPs; softmax attention is counted on CPU too (torch only knows the
CUDA kernels); FFTs (FAT's FMFFN) are not counted; a custom operator such as BiWKV is counted
only if it registers a FLOP formula with the counter (the ``flops_note`` column flags the rows
that may be undercounted). Peak memory is measured on CUDA devices only (``None`` on CPU).

    rows = sweep(kinds=("birwkv", "tcm", "global"), dim=64, resolutions=(32, 64, 128))
    fig = plot_sweep(rows)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch

from ..baseline_layers import BLOCK_KINDS, make_block

__all__ = ["QUANTITIES", "format_sweep", "measure_block", "plot_sweep", "sweep"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of softmax attention (2 matmuls of 2*B*heads*Tq*Tk*D each), for the CPU kernel
    that torch's counter has no formula for."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _count_flops(block: torch.nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    # torch counts the CUDA attention kernels but not the CPU one; map it locally (a global
    # registration could clash with other code registering the same operator).
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with counter:
        block(x)
    return int(counter.get_total_flops())


@torch.no_grad()
def measure_block(
    block: torch.nn.Module,
    x: torch.Tensor,
    repeats: int = 3,
    warmup: int = 1,
    flops: bool = True,
) -> dict:
    """Median forward time (ms), FLOPs (or None) and CUDA peak memory (MiB, or None) of
    ``block(x)`` in eval mode, without autograd."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    block.eval()
    device = x.device
    for _ in range(warmup):
        block(x)
    _sync(device)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    for _ in range(repeats):
        start = time.perf_counter()
        block(x)
        _sync(device)
        times.append(time.perf_counter() - start)
    memory = (
        (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else None
    )
    times.sort()
    return {
        "ms": 1e3 * times[len(times) // 2],
        "flops": _count_flops(block, x) if flops else None,
        "peak_mib": memory,
    }


def sweep(
    kinds: Sequence[str] = BLOCK_KINDS,
    dim: int = 64,
    resolutions: Sequence[int] = (16, 32, 64, 128),
    repeats: int = 3,
    device: str | torch.device = "cpu",
    flops: bool = True,
    time_budget_s: float | None = 20.0,
    seed: int = 0,
) -> list[dict]:
    """Measure one block of each kind at square resolutions H = W = r (batch 1, ``dim``
    channels). Returns one dict per (kind, resolution): kind, resolution, tokens, params,
    ms, gflops, peak_mib, skipped (a reason or None).

    Once a kind needs more than ``time_budget_s`` seconds for one resolution (all repeats),
    its larger resolutions are skipped (global attention grows as T^2); also skipped on CUDA
    out-of-memory.
    """
    device = torch.device(device)
    for kind in kinds:
        if kind not in BLOCK_KINDS:
            raise ValueError(f"kinds must be taken from {BLOCK_KINDS}, got {kind!r}")
    if not resolutions or any(int(r) < 1 for r in resolutions):
        raise ValueError(f"resolutions must be positive ints, got {list(resolutions)}")
    rows = []
    for kind in kinds:
        torch.manual_seed(seed)
        block = make_block(kind, dim).to(device)
        params = sum(p.numel() for p in block.parameters())
        note = "BiWKV counted only if registered" if kind == "birwkv" else ""
        skip_reason = None
        for r in sorted(int(r) for r in resolutions):
            row = {
                "kind": kind,
                "resolution": r,
                "tokens": r * r,
                "dim": dim,
                "params": params,
                "ms": math.nan,
                "gflops": math.nan,
                "peak_mib": None,
                "skipped": skip_reason,
                "flops_note": note,
            }
            if skip_reason is None:
                x = torch.randn(1, dim, r, r, device=device)
                start = time.perf_counter()
                try:
                    result = measure_block(block, x, repeats=repeats, flops=flops)
                except torch.cuda.OutOfMemoryError:
                    skip_reason = f"out of memory at {r}x{r}"
                    row["skipped"] = skip_reason
                    torch.cuda.empty_cache()
                else:
                    row.update(
                        ms=result["ms"],
                        peak_mib=result["peak_mib"],
                        gflops=result["flops"] / 1e9 if result["flops"] is not None else math.nan,
                    )
                    elapsed = time.perf_counter() - start
                    if time_budget_s is not None and elapsed > time_budget_s:
                        skip_reason = f"{r}x{r} took {elapsed:.1f} s > time_budget_s"
            rows.append(row)
    return rows


def format_sweep(rows: Sequence[dict]) -> str:
    """A Markdown table of :func:`sweep` rows."""
    lines = [
        "| block | H=W | tokens | params | time (ms) | GFLOPs | peak MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if r["skipped"]:
            lines.append(
                f"| {r['kind']} | {r['resolution']} | {r['tokens']} | {r['params']} | "
                f"skipped ({r['skipped']}) | | |"
            )
            continue
        mem = f"{r['peak_mib']:.1f}" if r["peak_mib"] is not None else "-"
        lines.append(
            f"| {r['kind']} | {r['resolution']} | {r['tokens']} | {r['params']} | "
            f"{r['ms']:.2f} | {r['gflops']:.3f} | {mem} |"
        )
    return "\n".join(lines)


#: What :func:`plot_sweep` can draw, one panel each: row key -> axis label.
QUANTITIES = {"ms": "forward time (ms)", "gflops": "GFLOPs", "peak_mib": "peak memory (MiB)"}


def plot_sweep(rows: Sequence[dict], title: str | None = None,
               quantities: Sequence[str] = tuple(QUANTITIES)):
    """Log-log plots of ``quantities`` (default time, GFLOPs and peak memory when measured)
    against the number of tokens, one line per block kind, with T and T^2 guide slopes;
    returns the Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    unknown = [q for q in quantities if q not in QUANTITIES]
    if unknown or not quantities:
        raise ValueError(f"quantities must be taken from {tuple(QUANTITIES)}, got {quantities!r}")
    measured = [r for r in rows if not r["skipped"]]
    if not measured:
        raise ValueError("no measured rows to plot")
    panels = [(q, QUANTITIES[q]) for q in quantities
              if q != "peak_mib" or any(r["peak_mib"] is not None for r in measured)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    axes = axes[0]
    kinds = list(dict.fromkeys(r["kind"] for r in measured))
    for ax, (key, label) in zip(axes, panels):
        for kind in kinds:
            pts = [
                (r["tokens"], r[key])
                for r in measured
                if r["kind"] == kind and r[key] is not None and r[key] > 0 and math.isfinite(r[key])
            ]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=kind)
        tokens = sorted({r["tokens"] for r in measured})
        values = [
            r[key] for r in measured if r[key] is not None and r[key] > 0 and math.isfinite(r[key])
        ]
        if len(tokens) > 1 and values:
            t0, v0 = tokens[0], min(values)
            for power, style in ((1, ":"), (2, "--")):
                ax.plot(
                    tokens,
                    [v0 * (t / t0) ** power for t in tokens],
                    style,
                    color="grey",
                    linewidth=1,
                    label=f"~T^{power}" if ax is axes[0] else None,
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(tokens, [f"{math.isqrt(t)}²" for t in tokens])
        ax.set_xlabel("tokens T = H*W (labels: H = W)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
