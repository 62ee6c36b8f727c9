"""Model complexity: parameters, FLOPs (BiWKV included) and time per module.

Conventions
- FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on the eval-mode
  forward pass (``path="forward"``, what papers usually count: g_a, h_a, h_s, the entropy
  model with CompressAI's two-pass checkerboard, g_s), or on ``compress`` / ``decompress``.
  One multiply-add = 2 FLOPs, so MACs = FLOPs / 2. The counter sees matrix products and
  convolutions only (elementwise ops, LayerNorm, sigmoid, softmax-free BiWKV arithmetic are
  free) except for operators that register a formula: BiWKV registers its own (see
  :mod:`lalic_core.ops.biwkv`), reported separately as ``biwkv_flops``.
- Omni-Shift is counted collapsed (one depthwise 5x5 convolution), as in inference.
- Transposed convolutions: torch counts them per input pixel; thop-style counters (common
  in learned-compression papers) per output pixel, 4x more for stride 2.
  :attr:`FlopCount.gmacs_thop_style` gives the count with that convention (BiWKV excluded).
- Parameters: ``inference`` = what an inference model needs (Omni-Shift collapsed: its
  alpha and 1x1/3x3/5x5 training branches excluded, the collapsed kernel included);
  ``training`` = trainable tensors (branches included, collapsed kernel excluded);
  ``total`` = every parameter of the state dict. Shared modules (h_a, h_s, which the
  official model holds twice) count once.

``python -m lalic_core.complexity`` prints the paper-versus-measured table at 768x512.
"""
from __future__ import annotations

import math
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from lalic_core import paper as _paper

__all__ = [
    "PAPER_NUMBERS",
    "PAPER_SIZE",
    "FlopCount",
    "ParamCount",
    "complexity_rows",
    "complexity_table",
    "count_flops",
    "count_params",
    "format_complexity",
    "time_modules",
]

#: The paper's numbers per preset (GFLOPs at its resolution, millions of parameters), from
#: :mod:`lalic_core.paper`: its ablation table, and Table 1's LALIC row for "paper".
PAPER_NUMBERS: dict[str, tuple[float, float]] = {
    **{preset: (row["gflops"], row["params_m"]) for preset, row in _paper.ABLATION.items()},
    "paper": (_paper.TABLE1["LALIC"]["gflops"], _paper.TABLE1["LALIC"]["params_m"]),
}

_PARTS = (
    ("g_a", r"g_a"),
    ("h_a", r"(latent_codec\.hyper\.)?h_a"),
    ("h_s", r"(latent_codec\.hyper\.)?h_s"),
    ("entropy bottleneck", r"latent_codec\.hyper\.entropy_bottleneck"),
    ("channel context", r"latent_codec\.y\.channel_context\.y\d+"),
    ("spatial context", r"latent_codec\.y\.latent_codec\.y\d+\.context_prediction"),
    ("param aggregation", r"latent_codec\.y\.latent_codec\.y\d+\.entropy_parameters"),
    ("g_s", r"g_s"),
)


@dataclass(frozen=True)
class ParamCount:
    inference: int
    training: int
    total: int

    def __str__(self) -> str:
        return (f"{self.inference / 1e6:.2f}M inference, {self.training / 1e6:.2f}M training, "
                f"{self.total / 1e6:.2f}M stored")


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one pass (multiply-add = 2 FLOPs). ``by_part`` splits ``flops`` over the
    model's parts (g_a, h_a, ..., "other" for the rest)."""

    flops: int
    biwkv_flops: int
    by_part: dict[str, int] = field(default_factory=dict)
    size: tuple[int, int] = (0, 0)
    path: str = "forward"
    #: FLOPs of the transposed convolutions as torch counts them (per input pixel) and as
    #: thop-style counters do (per output pixel: stride**2 times more).
    deconv_flops: int = 0
    deconv_flops_by_output: int = 0

    @property
    def macs(self) -> float:
        return self.flops / 2

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def gmacs(self) -> float:
        return self.flops / 2e9

    @property
    def gmacs_without_biwkv(self) -> float:
        return (self.flops - self.biwkv_flops) / 2e9

    @property
    def gmacs_thop_style(self) -> float:
        """GMACs without BiWKV, transposed convolutions counted per output pixel (the
        convention of thop-style counters, common in learned-compression papers)."""
        return (self.flops - self.biwkv_flops - self.deconv_flops
                + self.deconv_flops_by_output) / 2e9

    def __str__(self) -> str:
        return (f"{self.gflops:.3g} GFLOPs = {self.gmacs:.3g} GMACs at {self.size[0]}x"
                f"{self.size[1]} ({self.path}; BiWKV {self.biwkv_flops / 1e9:.3g} GFLOPs)")


def _omni_shift_split(model: nn.Module) -> tuple[int, int]:
    """(training-branch parameters, collapsed-kernel parameters) of all Omni-Shifts."""
    from lalic_core.layers import OmniShift

    branches = collapsed = 0
    for m in model.modules():
        if isinstance(m, OmniShift):
            branches += sum(p.numel() for p in (m.alpha, m.conv1x1.weight, m.conv3x3.weight,
                                                m.conv5x5.weight))
            collapsed += m.conv5x5_reparam.weight.numel()
    return branches, collapsed


def count_params(model: nn.Module) -> ParamCount:
    """Parameters of ``model`` (see the module docstring for the three counts)."""
    total = sum(p.numel() for p in model.parameters())
    branches, collapsed = _omni_shift_split(model)
    return ParamCount(inference=total - branches, training=total - collapsed, total=total)


def _check_size(size) -> tuple[int, int]:
    try:
        H, W = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"`size` must be (H, W), got {size!r}") from None
    if H <= 0 or W <= 0:
        raise ValueError(f"`size` must be positive, got {size!r}")
    return H, W


class _Pass(nn.Module):
    """Runs one pass of ``model`` as a module call, so that torch's module tracker names
    every submodule ``_Pass.model.<name>`` whatever the pass."""

    def __init__(self, model: nn.Module, call):
        super().__init__()
        self.model = model
        self._call = call

    def forward(self):
        return self._call()


def _run(model: nn.Module, x: torch.Tensor, path: str):
    """Returns a callable running ``path`` on x (compress outputs prepared outside)."""
    if path == "forward":
        return _Pass(model, lambda: model(x))
    if path == "compress":
        return _Pass(model, lambda: model.compress(x))
    if path == "decompress":
        out = model.compress(x)
        return _Pass(model, lambda: model.decompress(out["strings"], out["shape"]))
    raise ValueError(f"`path` must be 'forward', 'compress' or 'decompress', got {path!r}")


class _eval_mode:
    def __init__(self, model: nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _image(model: nn.Module, H: int, W: int, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(batch, 3, H, W, generator=g).to(_device(model))


def count_flops(model: nn.Module, size=(512, 768), *, path: str = "forward") -> FlopCount:
    """FLOPs of ``model`` on one (1, 3, H, W) image, ``size = (H, W)`` (768x512 landscape
    Kodak is (512, 768)), in eval mode. ``path``: "forward" (default), "compress" or
    "decompress" (these two need ``model.update()`` done)."""
    from torch.utils.flop_counter import FlopCounterMode

    H, W = _check_size(size)
    deconv = {"input": 0, "output": 0}

    def count_deconv(module, args, out):
        x = args[0]
        k = math.prod(module.kernel_size) * module.in_channels // module.groups
        deconv["input"] += 2 * x.shape[0] * x.shape[2:].numel() * k * module.out_channels
        deconv["output"] += 2 * out.numel() * k

    handles = [m.register_forward_hook(count_deconv) for m in model.modules()
               if isinstance(m, nn.ConvTranspose2d)]
    try:
        with _eval_mode(model), torch.no_grad():
            run = _run(model, _image(model, H, W), path)
            deconv.update(input=0, output=0)
            counter = FlopCounterMode(display=False)
            with counter:
                run()
    finally:
        for h in handles:
            h.remove()
    counts = counter.get_flop_counts()
    total = int(sum(counts.get("Global", {}).values()))
    biwkv = int(sum(v for op, v in counts.get("Global", {}).items() if "biwkv" in str(op)))
    by_part: dict[str, int] = defaultdict(int)
    seen = 0
    prefix = "_Pass.model."
    for name, ops in counts.items():
        if not name.startswith(prefix):
            continue
        rel = name[len(prefix):]
        for part, pattern in _PARTS:
            if re.fullmatch(pattern, rel):
                by_part[part] += int(sum(ops.values()))
                seen += int(sum(ops.values()))
                break
    if total - seen:
        by_part["other"] = total - seen
    return FlopCount(flops=total, biwkv_flops=biwkv, by_part=dict(by_part), size=(H, W),
                     path=path, deconv_flops=deconv["input"],
                     deconv_flops_by_output=deconv["output"])


def _pre_hook(key: int, starts: dict):
    def hook(module, args):
        starts[key].append(time.perf_counter())
    return hook


def _post_hook(key: int, label: str, starts: dict, times: dict):
    def hook(module, args, out):
        times[label] += time.perf_counter() - starts[key].pop()
    return hook


def time_modules(
    model: nn.Module,
    x: torch.Tensor | tuple[int, int] = (512, 768),
    *,
    depth: int | None = 1,
    types: Iterable[type] | None = None,
    path: str = "forward",
    repeats: int = 1,
) -> dict[str, float]:
    """Seconds spent in each module during ``path`` (eval mode, no grad), by forward hooks.

    Select modules by ``depth`` (names with at most ``depth`` dots below the root, e.g. 1:
    ``g_a``, ``latent_codec.y``...; a module shared under two names is reported under the
    first) or by ``types`` (times summed per class name, e.g. ``types=(OmniShift,
    nn.Linear)``). Times are inclusive of children and averaged over ``repeats`` runs after
    one warm-up run; "total" is the whole pass.
    """
    if not isinstance(x, torch.Tensor):
        H, W = _check_size(x)
        x = _image(model, H, W)
    types = tuple(types) if types is not None else None
    times: dict[str, float] = defaultdict(float)
    starts: dict[int, list[float]] = defaultdict(list)
    handles: list = []
    hooked: set[int] = set()
    chosen: dict[int, str] = {}
    for name, module in model.named_modules():
        if not name or id(module) in chosen:
            continue
        if types is not None:
            if isinstance(module, types):
                chosen[id(module)] = type(module).__name__
        elif depth is None or name.count(".") < depth:
            chosen[id(module)] = name
    for module in model.modules():
        key = id(module)
        if key not in chosen or key in hooked:
            continue
        hooked.add(key)
        handles.append(module.register_forward_pre_hook(_pre_hook(key, starts)))
        handles.append(module.register_forward_hook(_post_hook(key, chosen[key], starts, times)))
    try:
        with _eval_mode(model), torch.no_grad():
            run = _run(model, x, path)
            run()  # warm-up
            times.clear()
            t0 = time.perf_counter()
            for _ in range(repeats):
                run()
            total = time.perf_counter() - t0
    finally:
        for handle in handles:
            handle.remove()
    out = {k: v / repeats for k, v in times.items()}
    out["total"] = total / repeats
    return out


def _fmt(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def complexity_table(
    presets: Iterable[str] = ("2222-conv", "2466-conv", "2466-convplus", "paper"),
    size=(512, 768),
) -> str:
    """Markdown table of measured parameters and FLOPs of ``presets`` at ``size`` next to
    the paper's numbers (random weights; counts do not depend on them)."""
    from lalic_core.models import LALIC

    H, W = _check_size(size)
    rows = [
        ("| preset | paper GFLOPs | paper params (M) | GMACs (all) | GMACs w/o BiWKV | "
         "BiWKV GMACs | GMACs thop-style | GFLOPs (2/MAC) | inference params (M) | "
         "training params (M) |"),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in presets:
        model = LALIC.from_preset(name)
        p = count_params(model)
        f = count_flops(model, (H, W))
        paper = PAPER_NUMBERS.get(name)
        pf, pp = (f"{paper[0]:.0f}", f"{paper[1]:.1f}") if paper else ("-", "-")
        cells = [name, pf, pp, _fmt(f.gmacs), _fmt(f.gmacs_without_biwkv),
                 f"{f.biwkv_flops / 2e9:.2f}", _fmt(f.gmacs_thop_style), _fmt(f.gflops),
                 f"{p.inference / 1e6:.2f}", f"{p.training / 1e6:.2f}"]
        rows.append("| " + " | ".join(cells) + " |")
        del model
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="LALIC params and FLOPs against the paper")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 768), metavar=("H", "W"))
    parser.add_argument("--presets", nargs="+",
                        default=["2222-conv", "2466-conv", "2466-convplus", "paper"])
    args = parser.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    print(complexity_table(args.presets, tuple(args.size)))


if __name__ == "__main__":
    main()


# --------------------------------------------------------------------------------------------
# Presets against the paper's tables
# --------------------------------------------------------------------------------------------
PAPER_SIZE = (512, 768)


def complexity_rows(presets: Sequence[str] = ("2222-conv", "2466-conv", "2466-convplus",
                                              "2466-rwkv"),
                    size: tuple[int, int] = PAPER_SIZE, elic: bool = False) -> list[dict]:
    """Parameters and MACs of LALIC presets (and CompressAI's ELIC with ``elic=True``),
    counted at ``size`` = (H, W) and scaled to the paper's 768x512 by the pixel ratio (exact
    for these fully convolutional models when H, W are multiples of 64, BiWKV being linear
    in tokens). One dict per model with the paper's numbers beside (:mod:`lalic_core.paper`).
    """
    from lalic_core.models.lalic import LALIC

    h, w = (int(s) for s in size)
    if h <= 0 or w <= 0 or h % 64 or w % 64:
        raise ValueError(f"`size` must be (H, W) multiples of 64, got {size!r}")
    factor = PAPER_SIZE[0] * PAPER_SIZE[1] / (h * w)
    models: list[tuple[str, dict, Callable[[], nn.Module]]] = []
    for name in presets:
        paper = _paper.ABLATION.get(name) or ({**_paper.TABLE1["LALIC"], "label": "LALIC (paper model)"}
                                       if name == "paper" else {})
        models.append((name, paper, lambda name=name: LALIC.from_preset(name)))
    if elic:
        def make_elic():
            from compressai.models import Elic2022Official

            return Elic2022Official()
        models.append(("ELIC (CompressAI)", {**_paper.TABLE1["ELIC"], "label": "ELIC"}, make_elic))
    rows = []
    for name, paper, make in models:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = make()
        params, flops = count_params(model), count_flops(model, (h, w))
        rows.append({
            "model": name,
            "label": paper.get("label", name),
            "params_m": params.inference / 1e6,
            "gmacs": flops.gmacs * factor,
            "gmacs_without_biwkv": flops.gmacs_without_biwkv * factor,
            "gmacs_thop_style": flops.gmacs_thop_style * factor,
            "paper_gflops": paper.get("gflops"),
            "thop_vs_paper_pct": (100 * (flops.gmacs_thop_style * factor / paper["gflops"] - 1)
                                  if paper.get("gflops") else None),
            "paper_params_m": paper.get("params_m"),
            "paper_bd_rate": paper.get("bd_rate", paper.get("bd_kodak")),
            "counted_at": f"{w}x{h}",
        })
        del model
    return rows


def format_complexity(rows: Sequence[Mapping]) -> str:
    """Markdown table of :func:`complexity_rows`: torch-counted GMACs with and without BiWKV,
    thop-style GMACs (without BiWKV, transposed convolutions per output pixel) and how far
    those are from the paper's "GFLOPs"."""
    return _paper.markdown_table(list(rows), [
        ("label", "model"), ("paper_params_m", "paper params (M)"),
        ("params_m", "params (M)"), ("paper_gflops", "paper GFLOPs"),
        ("gmacs", "GMACs (torch)"), ("gmacs_without_biwkv", "GMACs w/o BiWKV"),
        ("gmacs_thop_style", "GMACs (thop-style)"), ("thop_vs_paper_pct", "thop vs paper (%)"),
        ("paper_bd_rate", "paper BD-rate (%)"), ("counted_at", "counted at")])
