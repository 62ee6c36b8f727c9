"""Training throughput of the CPU presets, and BiWKV's share of a training step.

    .venv/bin/python benchmarks/train.py                  # tiny and small, crop 256, batch 8
    .venv/bin/python benchmarks/train.py --crop 128 256 --presets tiny
    .venv/bin/python benchmarks/train.py --quick          # smoke run (crop 64, batch 2)

For each preset and crop, with torch (and numba) limited to 2 threads: the fastest and the
median wall time of a full training step as ``lalic train`` runs it (:func:`lalic_core.training.trainer.
train_step`: forward, rate-distortion loss, backward, gradient clipping, Adam step, auxiliary
loss and its step) on random crops after warm-up steps, and images/s from the fastest step (the least disturbed by other
processes on a shared machine); then one profiled step
(torch.profiler) and the share of its wall time spent inside the BiWKV operator
(``lalic::biwkv`` forward and ``lalic::biwkv_backward``, with their autograd wrappers).
The machine's load average is printed too: on a shared machine compare runs with similar load.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # keep the profiler's own log lines quiet
warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit notices from compressai

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lalic_core.training.trainer import (
    RateDistortionLoss,
    build_model,
    split_parameters,
    train_step,
)


def make_step(preset: str, crop: int, batch: int, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(preset).train()
    main, aux, _ = split_parameters(model)
    optimizer = torch.optim.Adam(main, lr=1e-4)
    aux_optimizer = torch.optim.Adam(aux, lr=1e-3)
    criterion = RateDistortionLoss(0.0130)
    x = torch.rand(batch, 3, crop, crop, generator=torch.Generator().manual_seed(seed))
    n_params = sum(p.numel() for p in main) + sum(p.numel() for p in aux)

    def step():
        return train_step(model, x, criterion, optimizer, aux_optimizer, 1.0)

    return step, n_params


def biwkv_share(step) -> tuple[float, float]:
    """(seconds of one profiled step, fraction of it inside BiWKV)."""
    from torch.profiler import ProfilerActivity, profile

    saved_stderr = os.dup(2)  # the profiler backend prints start/stop lines on fd 2
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                start = time.perf_counter()
                step()
                wall = time.perf_counter() - start
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        os.close(devnull)
    inside = sum(e.self_cpu_time_total for e in prof.key_averages() if "biwkv" in e.key.lower())
    return wall, inside / 1e6 / wall


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--crop", type=int, nargs="+", default=[256],
                        help="training crop sides (default 256, the official training crop)")
    parser.add_argument("--batch", type=int, default=8, help="crops per step (default 8)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="crop 64, batch 2, 2 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.crop, args.batch, args.warmup, args.steps = [64], 2, 1, 2
    torch.set_num_threads(args.threads)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))

    print(f"training-step throughput: torch {torch.__version__}, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}, load average "
          f"{os.getloadavg()[0]:.1f} before start")
    print(f"{'preset':>7} {'params':>8} {'crop':>5} {'batch':>5} {'s/step':>8} "
          f"{'median':>8} {'images/s':>9} {'BiWKV share':>12}")
    for preset in args.presets:
        for crop in args.crop:
            step, n_params = make_step(preset, crop, args.batch)
            for _ in range(args.warmup):
                step()
            times = []
            for _ in range(args.steps):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            best, median = min(times), statistics.median(times)
            _, share = biwkv_share(step)
            print(f"{preset:>7} {n_params / 1e6:7.2f}M {crop:5d} {args.batch:5d} {best:8.3f} "
                  f"{median:8.3f} {args.batch / best:9.2f} {100 * share:11.1f}%", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
