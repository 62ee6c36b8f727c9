"""BiWKV on a CUDA GPU: our chunk-parallel Triton kernels vs the official CUDA kernel, one run.

    python benchmarks/biwkv_gpu.py [--json PATH] [--repeats 7] [--official-src DIR]
    python benchmarks/biwkv_gpu.py --smoke      # tiny shapes; on a CPU with TRITON_INTERPRET=1
    python benchmarks/biwkv_gpu.py --tune       # also try other channel blocks / warps
    python benchmarks/biwkv_gpu.py --only-tune  # only that

Sections (each one's results are written to the JSON file as soon as it ends):
1. the six shapes of issue 12 -- (1,98304,96), (1,24576,144), (1,6144,256), (1,1536,320),
   (8,16384,96), (8,4096,144) -- : floor y = k * v on the same tensors, our forward, our
   forward + backward, our forward under the official 32-chunk semantics, and the official
   kernel's forward and forward + backward with the ratios official / ours (targets: >= 4x);
2. a T sweep 4k..262k at B = 1, C = 96;
3. accuracy of ours (float32 inputs) against the float64 reference (on the GPU) for the formula
   and the official semantics, values and gradients, and of the official kernel against its
   own intended arithmetic (the reference, semantics "official32");
4. with --tune: forward and forward + backward at (1, 98304, 96) for other CHUNK / BLOCK_C /
   NUM_WARPS.

The official kernel (LALIC authors' biwkv4_cuda_new.cu, MIT) is built at run time from
--official-src (default: .gpu_inputs/official_cuda in the checkout, else
../shared/reference/official_cuda) into a temporary folder, with the two edits its README
describes made on a temporary copy, in a background thread that overlaps the Triton
compilation; nothing of it enters the project. Timing: CUDA events, median of --repeats runs
after warm-up. Without CUDA (and without --smoke) it says so and exits 0.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch

SHAPES = [(1, 98304, 96), (1, 24576, 144), (1, 6144, 256), (1, 1536, 320), (8, 16384, 96),
          (8, 4096, 144)]
SWEEP_T = [4096, 8192, 16384, 32768, 65536, 131072, 262144]
SMOKE_SHAPES = [(1, 40, 16), (2, 70, 20)]
SMOKE_SWEEP_T = [130]


# ----------------------------------------------------------------------------------------
# the official kernel, built at run time
# ----------------------------------------------------------------------------------------
class OfficialBuild(threading.Thread):
    """Builds the official extension in the background; ``ops`` is torch.ops.biwkv4 or None
    (``error`` then says why)."""

    def __init__(self, src: Path | None):
        super().__init__(daemon=True)
        self.src, self.ops, self.error, self.seconds = src, None, None, 0.0

    def run(self):
        t0 = time.perf_counter()
        try:
            if self.src is None:
                raise RuntimeError("official kernel sources not found")
            if shutil.which("nvcc") is None and not os.environ.get("CUDA_HOME"):
                raise RuntimeError("nvcc not found")
            from torch.utils.cpp_extension import load

            tmp = Path(tempfile.mkdtemp(prefix="biwkv4_official_"))
            cu = (self.src / "biwkv4_cuda_new.cu").read_text()
            cpp = (self.src / "biwkv4_op_new.cpp").read_text()
            fixes = (("#include <THC/THCAtomics.cuh>", "#include <ATen/cuda/Atomic.cuh>"),
                     ("k.type()", "k.scalar_type()"))
            for old, new in fixes:
                cu, cpp = cu.replace(old, new), cpp.replace(old, new)
            (tmp / "biwkv4_cuda_new.cu").write_text(cu)
            (tmp / "biwkv4_op_new.cpp").write_text(cpp)
            major, minor = torch.cuda.get_device_capability()
            load(name="biwkv4", sources=[str(tmp / "biwkv4_op_new.cpp"),
                                         str(tmp / "biwkv4_cuda_new.cu")],
                 build_directory=str(tmp), verbose=False,
                 extra_cuda_cflags=["--use_fast_math", "-O3", "-Xptxas -O3",
                                    "--maxrregcount 60",
                                    f"-gencode arch=compute_{major}{minor},code=sm_{major}{minor}"])
            self.ops = torch.ops.biwkv4
        except Exception as exc:  # noqa: BLE001 (reported, the benchmark goes on)
            self.error = f"{type(exc).__name__}: {str(exc)[:300]}"
        self.seconds = time.perf_counter() - t0


def official_sources(arg: str | None) -> Path | None:
    candidates = [Path(arg)] if arg else [REPO / ".gpu_inputs" / "official_cuda",
                                          REPO.parent / "shared" / "reference" / "official_cuda"]
    for p in candidates:
        if (p / "biwkv4_cuda_new.cu").is_file() and (p / "biwkv4_op_new.cpp").is_file():
            return p
    return None


# ----------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------
def median_us(fn, repeats: int, warmup: int = 2) -> float:
    if not torch.cuda.is_available():
        warmup = min(warmup, 1)  # the interpreter (--smoke): compiles nothing
    """Median time of fn() in microseconds: CUDA events on a GPU, wall clock on the CPU."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


def make_inputs(B, T, C, device, dtype=torch.float32, seed=0, decay=1.0):
    """Inputs in the model's parametrisation: w = decay / T, u = boost / T, k ~ N(0, 1)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    k = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    v = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    w = torch.randn(C, generator=g, dtype=torch.float64) * decay / T
    u = torch.randn(C, generator=g, dtype=torch.float64) / T
    return tuple(x.to(device=device, dtype=dtype).contiguous() for x in (w, u, k, v))


def time_shape(B, T, C, device, repeats, official):
    from lalic_core.ops.biwkv.triton_kernel import biwkv_triton_backward, biwkv_triton_forward

    w, u, k, v = make_inputs(B, T, C, device)
    gy = torch.randn_like(k)

    def ours_both(chunks=0):
        y, *aux = biwkv_triton_forward(w, u, k, v, chunks)
        biwkv_triton_backward(gy, w, u, k, v, y, *aux, chunks=chunks)

    row = {"B": B, "T": T, "C": C,
           "floor_us": median_us(lambda: torch.mul(k, v), repeats),
           "ours_fwd_us": median_us(lambda: biwkv_triton_forward(w, u, k, v), repeats),
           "ours_fwd_bwd_us": median_us(ours_both, repeats),
           "ours_official32_fwd_us": median_us(lambda: biwkv_triton_forward(w, u, k, v, 32),
                                               repeats, warmup=1)}
    if official is not None:
        row["official_fwd_us"] = median_us(lambda: official.forward(w, u, k, v), repeats)

        def official_both():
            official.backward(w, u, k, v, gy)
            official.forward(w, u, k, v)

        row["official_fwd_bwd_us"] = median_us(official_both, repeats)
        row["official_over_ours_fwd"] = row["official_fwd_us"] / row["ours_fwd_us"]
        row["official_over_ours_fwd_bwd"] = row["official_fwd_bwd_us"] / row["ours_fwd_bwd_us"]
    row["ours_fwd_over_floor"] = row["ours_fwd_us"] / row["floor_us"]
    return row


def print_table(title, rows):
    print(f"\n== {title} (microseconds, median) ==")
    head = (f"{'(B, T, C)':>18} | {'floor':>7} | {'ours fwd':>9} {'/floor':>7} | "
            f"{'ours f+b':>9} | {'ours off32':>10} | {'official fwd':>12} {'f+b':>9} | "
            f"{'off/ours fwd':>12} {'f+b':>6}")
    print(head)
    print("-" * len(head))
    for r in rows:
        off = (f"{r['official_fwd_us']:12.0f} {r['official_fwd_bwd_us']:9.0f} | "
               f"{r['official_over_ours_fwd']:11.2f}x {r['official_over_ours_fwd_bwd']:5.2f}x"
               if "official_fwd_us" in r else f"{'-':>12} {'-':>9} | {'-':>12} {'-':>6}")
        print(f"{(r['B'], r['T'], r['C'])!s:>18} | {r['floor_us']:7.0f} | "
              f"{r['ours_fwd_us']:9.0f} {r['ours_fwd_over_floor']:6.1f}x | "
              f"{r['ours_fwd_bwd_us']:9.0f} | {r['ours_official32_fwd_us']:10.0f} | {off}")


# ----------------------------------------------------------------------------------------
# accuracy
# ----------------------------------------------------------------------------------------
def accuracy(shapes, device, official):
    """Max error relative to max |reference| (float64 reference on the same device)."""
    from lalic_core.ops.biwkv.naive import biwkv_reference
    from lalic_core.ops.biwkv.triton_kernel import biwkv_triton_backward, biwkv_triton_forward

    out = []
    for B, T, C, semantics, grads in shapes:
        chunks = {"formula": 0, "official32": 32, "official64": 64}[semantics]
        # the tested domain: |w| T <= 20, |k| <= 60 (k ~ 3 N(0, 1) and a spike of 40)
        w, u, k, v = make_inputs(B, T, C, device, seed=1)
        w = (torch.rand(C, device=device) * 2 - 1) * 20 / T
        k = k * 3
        k[:, T // 3] = 40.0
        gy = torch.randn(B, T, C, device=device)
        y, *aux = biwkv_triton_forward(w, u, k, v, chunks)
        ours = [y]
        if grads:
            ours += list(biwkv_triton_backward(gy, w, u, k, v, y, *aux, chunks=chunks))
        inputs = [x.double().requires_grad_(grads) for x in (w, u, k, v)]
        ref_y = biwkv_reference(*inputs, semantics=semantics)
        ref = [ref_y.detach()]
        if grads:
            ref += list(torch.autograd.grad(ref_y, inputs, gy.double()))
        row = {"B": B, "T": T, "C": C, "semantics": semantics}
        for label, a, b in zip(("y", "dw", "du", "dk", "dv"), ours, ref):
            row[label] = float((a.double() - b).abs().max() / b.abs().max().clamp_min(1.0))
        if official is not None and semantics == "official32" and C >= 16 and B * C % 16 == 0:
            y_off = official.forward(w, u, k, v)
            row["official_kernel_y"] = float((y_off.double() - ref[0]).abs().max()
                                             / ref[0].abs().max().clamp_min(1.0))
        out.append(row)
        print(f"  {(B, T, C)!s:>16} {semantics:>10}: " + ", ".join(
            f"{key} {row[key]:.1e}" for key in ("y", "dw", "du", "dk", "dv",
                                                "official_kernel_y") if key in row))
    return out


def tune(device, repeats, shape=(1, 98304, 96)):
    from lalic_core.ops.biwkv import triton_kernel as tk

    saved = (tk.CHUNK, tk.BLOCK_C, tk.NUM_WARPS)
    rows = []
    for chunk, block_c, warps in ((32, 16, 4), (64, 16, 8), (32, 32, 4), (64, 32, 8),
                                  (32, 8, 4)):
        tk.CHUNK, tk.BLOCK_C, tk.NUM_WARPS = chunk, block_c, warps
        try:
            r = time_shape(*shape, device, repeats, None)
            rows.append({"chunk": chunk, "block_c": block_c, "num_warps": warps,
                         "fwd_us": r["ours_fwd_us"], "fwd_bwd_us": r["ours_fwd_bwd_us"]})
            print(f"  CHUNK {chunk:3d} BLOCK_C {block_c:3d} warps {warps}: fwd "
                  f"{r['ours_fwd_us']:9.0f} us, fwd+bwd {r['ours_fwd_bwd_us']:9.0f} us",
                  flush=True)
        except Exception as exc:  # noqa: BLE001
            print(f"  CHUNK {chunk} BLOCK_C {block_c} warps {warps}: failed ({exc})")
    tk.CHUNK, tk.BLOCK_C, tk.NUM_WARPS = saved
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="write the results to this file")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--official-src", default=None)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes, 1 repeat (CPU: needs TRITON_INTERPRET=1)")
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--only-tune", action="store_true", help="--tune and nothing else")
    parser.add_argument("--skip-sweep", action="store_true")
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")
    if not cuda and not args.smoke:
        print("biwkv_gpu: no CUDA GPU here (or TRITON_INTERPRET is set): nothing to measure. "
              "Run it on a GPU machine, or with --smoke under TRITON_INTERPRET=1.")
        return 0
    device = "cuda" if cuda else "cpu"
    repeats = 1 if args.smoke else args.repeats
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    sweep = SMOKE_SWEEP_T if args.smoke else SWEEP_T
    results = {"device": torch.cuda.get_device_name() if cuda else "cpu (interpreter)",
               "torch": torch.__version__, "smoke": args.smoke}
    try:
        import triton

        results["triton"] = triton.__version__
    except ImportError:
        print("biwkv_gpu: triton is not installed")
        return 0

    def save():
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))

    if args.only_tune:
        if cuda:
            print("== tuning at (1, 98304, 96) ==")
            results["tune"] = tune(device, repeats)
            save()
        return 0
    build = OfficialBuild(official_sources(args.official_src) if cuda else None)
    build.start()  # overlaps the Triton compilation below
    print(f"device: {results['device']}; torch {results['torch']}, triton {results['triton']}")

    if cuda:  # compiles our kernels while the official one builds
        time_shape(*shapes[0], device, repeats, None)
    build.join()
    official = build.ops
    results["official_build"] = (f"built in {build.seconds:.0f} s" if official is not None
                                 else f"not available: {build.error}")
    print(f"official kernel: {results['official_build']}")
    rows = [time_shape(*s, device, repeats, official) for s in shapes]
    results["shapes"] = rows
    print_table("issue 12 shapes, float32", rows)
    save()

    if not args.skip_sweep:
        sweep_rows = [time_shape(1, T, 96 if not args.smoke else 16, device, repeats, official)
                      for T in sweep]
        results["sweep_C96"] = sweep_rows
        print_table("T sweep, B = 1, C = 96", sweep_rows)
        save()

    print("\n== accuracy vs the float64 reference (max error / max |reference|) ==")
    acc_shapes = ([(1, 100, 16, "formula", True), (1, 40, 16, "official32", True)]
                  if args.smoke else
                  [(1, 16384, 96, "formula", False), (1, 4096, 96, "formula", True),
                   (2, 1000, 64, "official32", True), (1, 4096, 96, "official32", True),
                   (1, 4096, 96, "official64", True), (8, 77, 16, "official32", True)])
    results["accuracy"] = accuracy(acc_shapes, device, official)
    save()

    if args.tune and cuda:
        print("\n== tuning at (1, 98304, 96) ==")
        results["tune"] = tune(device, repeats)
        save()
    print("\nbiwkv_gpu: done" + (f"; results in {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
