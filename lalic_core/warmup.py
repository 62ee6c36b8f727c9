"""Compile the numba BiWKV CPU kernels once per install, and say so while it happens.

The fast CPU backend of BiWKV (:mod:`lalic_core.ops.biwkv.cpu`) is compiled by numba on first
use: about 40 s on 2 idle cores (forward and backward, float32 and float64), cached on disk
(numba's cache, beside the package sources or in ``$NUMBA_CACHE_DIR``), then loaded in about
a second by every later process. ``make venv`` and ``make lab`` run this module so that a
student's first notebook cell finds the cache warm:

    python -m lalic_core.warmup          # compiles (announced, with progress), or loads

In a notebook, :func:`ensure_biwkv_compiled` does the same with a progress bar, and prints
one line either way; timings measured after it exclude compilation.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable

__all__ = ["ANNOUNCEMENT", "biwkv_kernels_cached", "ensure_biwkv_compiled", "main"]

ANNOUNCEMENT = ("compiling the BiWKV CPU kernels, once, about 40 s (numba; cached for every "
                "later run)")

#: (dtype name, pass) in the order they are compiled; plus the official chunked semantics
#: (float32 forward, what a model evaluated under them runs) where this BiWKV has them.
_STEPS = (("float32", "forward"), ("float32", "backward"), ("float64", "forward"),
          ("float64", "backward"))


def _has_official_semantics() -> bool:
    import inspect

    from lalic_core.ops.biwkv import biwkv

    return "semantics" in inspect.signature(biwkv).parameters


def _steps() -> tuple:
    official = (("float32", "forward (official semantics)"),) if _has_official_semantics() \
        else ()
    return _STEPS + official


def biwkv_kernels_cached() -> bool | None:
    """True when numba's on-disk cache holds both kernels for float32 and float64, False when
    it does not, None when this numba cannot tell (then assume compilation)."""
    try:
        from lalic_core.ops.biwkv import cpu

        names = ["_forward_kernel", "_backward_kernel"]
        if _has_official_semantics():
            names.append("_official_forward_kernel")
        for name in names:
            index = getattr(cpu, name)._cache._cache_file._load_index()
            if len(index) < (1 if "official" in name else 2):  # float32 (and float64)
                return False
        return True
    except Exception:  # noqa: BLE001 -- numba internals: unknown means "maybe not cached"
        return None


def _run_step(dtype_name: str, which: str) -> None:
    import torch

    from lalic_core.ops.biwkv import biwkv

    dtype = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(0)
    w, u = (torch.zeros(8, dtype=dtype, requires_grad=True) for _ in range(2))
    k, v = (torch.randn(1, 16, 8, generator=g, dtype=dtype).requires_grad_() for _ in range(2))
    options = {"semantics": "official32"} if "official" in which else {}
    y = biwkv(w, u, k, v, backend="auto", **options)  # CPU tensors: the numba kernels
    if which == "backward":
        y.sum().backward()


def warm(progress: Callable[[int, int, str], None] | None = None) -> tuple[bool, float]:
    """Compile (or load) every BiWKV CPU kernel; returns (was it compiled, seconds).

    ``progress(done, total, what)`` is called before each of the four kernels and at the end.
    """
    cached = biwkv_kernels_cached()
    steps = _steps()
    start = time.perf_counter()
    for i, (dtype_name, which) in enumerate(steps):
        if progress is not None:
            progress(i, len(steps), f"{which} pass, {dtype_name}")
        _run_step(dtype_name, which)
    if progress is not None:
        progress(len(steps), len(steps), "done")
    return cached is not True, time.perf_counter() - start


def ensure_biwkv_compiled(show: bool | None = None, load: bool = False) -> float:
    """In a notebook: make sure the BiWKV CPU kernels are compiled before anything is timed.

    When numba's cache is cold it announces the compilation (:data:`ANNOUNCEMENT`) with a
    progress bar (ipywidgets in a kernel, text elsewhere); either way it prints one line
    saying what happened. When the cache is warm the kernels load on first use (well under
    a second each), unless ``load`` asks to load them now (before a timed run). Returns the
    seconds it took.
    """
    cached = biwkv_kernels_cached()
    if cached is True:
        seconds = warm()[1] if load else 0.0
        print(f"BiWKV CPU kernels: {'loaded' if load else 'found'} in numba's cache (compiled "
              f"once per install)")
        return seconds
    bar = None
    if show is None:
        from lalic_core.training.live import _in_ipython

        show = _in_ipython()
    if show:
        import ipywidgets as widgets
        from IPython.display import display

        bar = widgets.IntProgress(value=0, min=0, max=len(_steps()), description="compiling",
                                  bar_style="info")
        label = widgets.Label(ANNOUNCEMENT)
        display(widgets.VBox([label, bar]))

        def progress(done, total, what):
            bar.value = done
            label.value = f"{ANNOUNCEMENT}: {what} ({done}/{total})"
    else:
        print(ANNOUNCEMENT, flush=True)

        def progress(done, total, what):
            print(f"  [{done}/{total}] {what}", flush=True)

    _, seconds = warm(progress)
    if bar is not None:
        bar.bar_style = "success"
    print(f"BiWKV CPU kernels: compiled in {seconds:.0f} s (once per install; timings below "
          f"exclude it)")
    return seconds


def main(argv: list[str] | None = None) -> int:
    """``python -m lalic_core.warmup``: compile or load the kernels, saying which."""
    del argv
    ensure_biwkv_compiled(show=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
