"""LALIC versus ELIC: compress and decompress of one 768x512 image on the CPU, same run.

    .venv/bin/python benchmarks/codec.py [--threads 2] [--repeats 5] [--image PATH] [--profile]

Both models are random-initialised (seed 0) and ``update()``-d: LALIC's paper preset
(:meth:`lalic_core.LALIC.from_preset`, Feng et al. CVPR 2025) and CompressAI's
``Elic2022Official`` (He et al. CVPR 2022, N=192, M=320, CompressAI's defaults). Runs are
interleaved (LALIC, ELIC, LALIC, ...) so that a busy machine slows both alike; the median
and the minimum of ``--repeats`` runs are printed with the ratios LALIC / ELIC.

"ELIC + fast indexes" is ELIC with the same one-pass ``build_indexes`` LALIC's
GaussianConditional uses (CompressAI's loops over the 64 scales); the target comparison is
against ELIC as CompressAI ships it, the second ratio shows how much of the difference is
LALIC's network rather than that shared entropy-coding step.

``--profile`` adds where LALIC's time goes (torch profiler, by operator family) and the
entropy-coding time (rANS, measured around CompressAI's coder calls).

``--device cuda`` (issue 12): the same two models on the GPU, 768x512: forward (torch's
defaults), compress and decompress (with TF32 off and deterministic cuDNN, without which
GPU round trips fail, ../shared/notes/gpu-device.md), each with its peak GPU memory
(``torch.cuda.max_memory_allocated``), the ratios LALIC / ELIC (targets: forward <= 3x,
decompress <= 1.25x), and both forwards at 2048x2048 (target: LALIC <= 1 s). Timings: CUDA
events (forward) or wall clock after synchronising (compress / decompress: they include
CPU entropy coding), median of ``--repeats`` after a warm-up. ``--json PATH`` writes them.
Without CUDA it says so and exits 0; ``--smoke`` runs that code path on small images on the
CPU (a check of the script, not a measurement).
"""
from __future__ import annotations

import os

# numba's "omp" threading layer shares the OpenMP runtime with torch, resets torch's thread
# count and makes both spin against each other (small torch ops then run ~100x slower after
# the first BiWKV call on 2 cores); the "workqueue" layer does not. Must be set before numba
# starts its threads.
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")

import argparse
import statistics
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load_image(path: str | None) -> tuple[torch.Tensor, str]:
    """A 768x512 RGB image in [0, 1]: the given file, Kodak kodim23, or a synthetic one."""
    candidates = [Path(path)] if path else [REPO.parent / "shared" / "data" / "kodak" /
                                            "kodim23.png"]
    for p in candidates:
        if p.is_file():
            from lalic_core.images import read_image

            x = read_image(p)
            if x.shape[-2:] == (768, 512):
                x = x.transpose(-1, -2).contiguous()
            if x.shape[-2:] != (512, 768):
                raise SystemExit(f"--image must be 768x512 or 512x768, got {tuple(x.shape)}")
            return x, str(p)
    if path:
        raise SystemExit(f"--image: file not found: {path}")
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, 32, 48, generator=g)
    x = torch.nn.functional.interpolate(base, size=(512, 768), mode="bicubic",
                                        align_corners=False)
    return (x + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1), "synthetic"


def _fast_indexes(model) -> None:
    from compressai.entropy_models import GaussianConditional as CompressAIGC

    from lalic_core.entropy_models import GaussianConditional

    for m in model.modules():
        if type(m) is CompressAIGC:
            m.build_indexes = GaussianConditional.build_indexes.__get__(m)


def time_codec(model, x) -> dict:
    """One compress and one decompress: seconds, bytes and the reconstruction."""
    with torch.inference_mode():
        t0 = time.perf_counter()
        enc = model.compress(x)
        t1 = time.perf_counter()
        dec = model.decompress(enc["strings"], enc["shape"])
        t2 = time.perf_counter()
    return {"enc": t1 - t0, "dec": t2 - t1, "bytes": sum(len(s[0]) for s in enc["strings"]),
            "x_hat": dec["x_hat"]}


def profile_lalic(model, x) -> None:
    """Where LALIC's compress + decompress time goes, by operator family."""
    from compressai.entropy_models import EntropyModel
    from torch.profiler import ProfilerActivity, profile

    coder_time = {"rANS (entropy coding)": 0.0}
    originals = {}
    for name in ("compress", "decompress"):
        fn = getattr(EntropyModel, name)
        originals[name] = fn

        def timed(self, *args, _fn=fn, **kwargs):
            t0 = time.perf_counter()
            try:
                return _fn(self, *args, **kwargs)
            finally:
                coder_time["rANS (entropy coding)"] += time.perf_counter() - t0

        setattr(EntropyModel, name, timed)
    try:
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU],
                                             record_shapes=True) as prof:
            t0 = time.perf_counter()
            enc = model.compress(x)
            model.decompress(enc["strings"], enc["shape"])
            wall = time.perf_counter() - t0
    finally:
        for name, fn in originals.items():
            setattr(EntropyModel, name, fn)
    families = Counter()
    for e in prof.key_averages(group_by_input_shape=True):
        n, shapes = e.key, str(e.input_shapes)
        if "biwkv" in n:
            k = "BiWKV"
        elif n in ("aten::mm", "aten::addmm", "aten::bmm"):
            k = "linear layers (GEMM)"
        elif n == "aten::mkldnn_convolution" or n.startswith(("aten::_slow_conv",
                                                              "aten::slow_conv")):
            k = "Omni-Shift (depthwise 5x5)" if ", 1, 5, 5]" in shapes else "convolutions"
        elif "layer_norm" in n:
            k = "LayerNorm"
        else:
            k = "elementwise and copies"
        families[k] += e.self_cpu_time_total / 1e6
    ops = sum(families.values())
    print(f"\nLALIC compress + decompress, profiled: {wall:.2f} s wall")
    print(f"  {'part':32s} {'seconds':>8s} {'share':>6s}")
    for k, v in families.most_common():
        print(f"  {k:32s} {v:8.2f} {100 * v / wall:5.1f}%")
    rans = coder_time["rANS (entropy coding)"]
    print(f"  {'entropy coding calls (rANS)':32s} {rans:8.2f} {100 * rans / wall:5.1f}%  "
          "(CompressAI coder calls, incl. their tensor ops)")
    print(f"  {'other (Python, not in ops)':32s} {max(0.0, wall - ops):8.2f}")


def _gpu_time(fn, device: str, repeats: int) -> tuple[float, float]:
    """(median seconds, peak bytes allocated) of fn() after one warm-up run."""
    fn()
    times = []
    peak = 0
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
            peak = max(peak, torch.cuda.max_memory_allocated())
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), peak


def main_gpu(args) -> None:
    """--device cuda: LALIC vs ELIC on the GPU (see the module docstring)."""
    import json

    if not torch.cuda.is_available() and not args.smoke:
        print("codec --device cuda: no CUDA GPU here; nothing to measure (exit 0). "
              "Use --smoke to check the script on the CPU.")
        return
    from compressai.models import Elic2022Official

    from lalic_core.models import LALIC

    device = "cuda" if torch.cuda.is_available() else "cpu"
    repeats = 1 if args.smoke else args.repeats
    x, source = load_image(args.image)
    sizes = {"main": (512, 768), "large": (2048, 2048)}
    if args.smoke:
        x = x[..., :64, :128].contiguous()
        sizes = {"main": (64, 128), "large": (128, 128)}
    x = x.to(device)
    torch.manual_seed(0)
    models = {"LALIC (paper)": LALIC.from_preset("paper").eval().to(device)}
    torch.manual_seed(0)
    models["ELIC (CompressAI)"] = Elic2022Official().eval().to(device)
    for m in models.values():
        m.update(force=True)
    results = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke)",
               "torch": torch.__version__, "image": source, "size": list(sizes["main"]),
               "models": {}}
    print(f"codec on {results['device']}: image {source} {sizes['main'][1]}x{sizes['main'][0]}, "
          f"torch {torch.__version__}, median of {repeats}")

    def save():
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))

    for name, m in models.items():
        r = {}
        with torch.inference_mode():
            r["forward_s"], r["forward_peak_bytes"] = _gpu_time(lambda m=m: m(x), device, repeats)
        # compress / decompress: TF32 off, deterministic cuDNN (else round trips fail on GPU)
        tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        try:
            with torch.inference_mode():
                enc = m.compress(x)
                r["compress_s"], r["compress_peak_bytes"] = _gpu_time(
                    lambda m=m: m.compress(x), device, repeats)
                r["decompress_s"], r["decompress_peak_bytes"] = _gpu_time(
                    lambda m=m, enc=enc: m.decompress(enc["strings"], enc["shape"]), device,
                    repeats)
                dec = m.decompress(enc["strings"], enc["shape"])
                r["bytes"] = sum(len(s[0]) for s in enc["strings"])
                if hasattr(m, "g_s") and "y_hat" in enc:
                    ref = m.g_s(enc["y_hat"]).clamp(0, 1)
                    r["decode_vs_encoder_max_abs"] = float((dec["x_hat"] - ref).abs().max())
        finally:
            (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) = tf32
        results["models"][name] = r
        save()
        print(f"  {name:20s} forward {r['forward_s']:.4f} s ({r['forward_peak_bytes'] / 2**30:.2f}"
              f" GiB), compress {r['compress_s']:.4f} s ({r['compress_peak_bytes'] / 2**30:.2f}"
              f" GiB), decompress {r['decompress_s']:.4f} s "
              f"({r['decompress_peak_bytes'] / 2**30:.2f} GiB), {r['bytes']} bytes")
    la, el = (results["models"][n] for n in ("LALIC (paper)", "ELIC (CompressAI)"))
    results["ratios"] = {key: la[f"{key}_s"] / el[f"{key}_s"]
                         for key in ("forward", "compress", "decompress")}
    print("  LALIC / ELIC: " + ", ".join(f"{k} {v:.2f}x" for k, v in results["ratios"].items())
          + "  (targets: forward <= 3x, decompress <= 1.25x)")
    if "decode_vs_encoder_max_abs" in la:
        print(f"  LALIC decode vs the encoder's reconstruction: max |diff| = "
              f"{la['decode_vs_encoder_max_abs']:.2e}")
    save()
    big = torch.rand(1, 3, *sizes["large"], generator=torch.Generator().manual_seed(0)).to(device)
    results["large"] = {"size": list(sizes["large"])}
    for name, m in models.items():
        try:
            with torch.inference_mode():
                seconds, peak = _gpu_time(lambda m=m: m(big), device, max(1, repeats // 2))
            results["large"][name] = {"forward_s": seconds, "forward_peak_bytes": peak}
            print(f"  {name:20s} forward at {sizes['large'][1]}x{sizes['large'][0]}: "
                  f"{seconds:.3f} s ({peak / 2**30:.2f} GiB)" +
                  ("  (target <= 1 s)" if name.startswith("LALIC") else ""))
        except torch.cuda.OutOfMemoryError as exc:
            results["large"][name] = {"error": str(exc)[:200]}
            print(f"  {name}: out of memory at {sizes['large']}")
        save()
    print("codec --device cuda: done" + (f"; results in {args.json}" if args.json else ""))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image", default=None, help="768x512 image (default: Kodak kodim23)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--smoke", action="store_true",
                        help="--device cuda only: small images, on the CPU if no GPU")
    parser.add_argument("--json", default=None, help="--device cuda only: write results here")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        main_gpu(args)
        return

    from compressai.models import Elic2022Official

    from lalic_core.models import LALIC

    x, source = load_image(args.image)
    torch.manual_seed(0)
    lalic = LALIC.from_preset("paper").eval()
    torch.manual_seed(0)
    elic = Elic2022Official().eval()
    torch.manual_seed(0)
    elic_fast = Elic2022Official().eval()
    _fast_indexes(elic_fast)
    models = {"LALIC (paper)": lalic, "ELIC (CompressAI)": elic,
              "ELIC + fast indexes": elic_fast}
    for m in models.values():
        m.update(force=True)

    print(f"image: {source}, {x.shape[-1]}x{x.shape[-2]}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; numba threading layer "
          f"{os.environ.get('NUMBA_THREADING_LAYER')}; load average before: "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    for m in models.values():  # warm-up: numba kernels, oneDNN primitives, allocator
        time_codec(m, x)
    results = {name: {"enc": [], "dec": []} for name in models}
    for _ in range(args.repeats):
        for name, m in models.items():
            run = time_codec(m, x)
            results[name]["enc"].append(run["enc"])
            results[name]["dec"].append(run["dec"])
            results[name].update(bytes=run["bytes"], x_hat=run["x_hat"])

    with torch.inference_mode():  # decoding is exact: the decoder rebuilds the encoder's y_hat
        enc = lalic.compress(x)
        err = (lalic.g_s(enc["y_hat"]).clamp(0, 1) - results["LALIC (paper)"]["x_hat"]).abs()
        y_forward = lalic.latent_codec(lalic.g_a(x))["y_hat"]
        flips = int(((y_forward - enc["y_hat"]).abs() > 0.5).sum())

    print(f"\n{'model':22s} {'encode s (median/min)':>22s} {'decode s (median/min)':>22s} "
          f"{'bytes':>8s}")
    for name, r in results.items():
        print(f"{name:22s} {statistics.median(r['enc']):10.3f} / {min(r['enc']):7.3f}   "
              f"{statistics.median(r['dec']):10.3f} / {min(r['dec']):7.3f}   {r['bytes']:8d}")
    print(f"(load average after: {os.getloadavg()[0]:.2f}; other processes on the machine "
          "slow both models, LALIC's many smaller parallel ops more)")
    la = results["LALIC (paper)"]
    for ref_name in ("ELIC (CompressAI)", "ELIC + fast indexes"):
        r = results[ref_name]
        print(f"LALIC / {ref_name:20s} encode {statistics.median(la['enc']) / statistics.median(r['enc']):.2f}x"
              f" (min {min(la['enc']) / min(r['enc']):.2f}x), decode "
              f"{statistics.median(la['dec']) / statistics.median(r['dec']):.2f}x "
              f"(min {min(la['dec']) / min(r['dec']):.2f}x)")
    print(f"LALIC decode vs the encoder's reconstruction: max |diff| = {err.max().item():.2e}; "
          f"latents rounded differently by compress and the eval forward: {flips} of "
          f"{enc['y_hat'].numel()}")
    if args.profile:
        profile_lalic(lalic, x)


if __name__ == "__main__":
    main()
