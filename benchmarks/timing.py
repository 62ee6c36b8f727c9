"""One timed call for the benchmarks: CUDA events on a GPU (the kernel time, not the launch),
the wall clock on the CPU. Imported by the scripts beside it (``from timing import time_call``)."""
from __future__ import annotations

import time
from collections.abc import Callable

import torch


def time_call(fn: Callable[[], object], cuda: bool) -> float:
    """Seconds taken by one ``fn()``."""
    if not cuda:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3
