"""State dicts of LALIC models: reading, key normalisation, strict loading, architecture
inference.

Accepts what the official training and evaluation scripts save and read (sjtu-medialab/
RwkvCompress, on CompressAI): the state dict alone or under ``"state_dict"`` /
``"model_state_dict"``, keys prefixed with ``module.`` (DataParallel /
DistributedDataParallel), CompressAI's older EntropyBottleneck parameter names
(``_matrixN`` / ``_biasN`` / ``_factorN``, or ``_matrices.N`` ..., against the
``matrices.N`` / ``biases.N`` / ``factors.N`` of the installed CompressAI; whichever the
model uses wins) and ``.downsample.`` for ``.skip.``. :func:`infer_config` reads the
architecture (:class:`~lalic_core.models.config.LALICConfig`) from the tensor shapes.
Files are read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from lalic_core.models.config import LALICConfig

__all__ = [
    "CheckpointMismatchError",
    "infer_config",
    "load_state_dict_strict",
    "normalize_state_dict",
    "read_checkpoint_object",
    "read_state_dict",
    "stored_biwkv_semantics",
    "unwrap_state_dict",
]

#: Buffers that CompressAI resizes on load (empty until ``update()``), so their shapes may
#: differ between a checkpoint and a fresh model.
_RESIZABLE_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")
_WRAPPER_KEYS = ("state_dict", "model_state_dict")
_EB_PATTERN = re.compile(
    r"^(?P<prefix>.*entropy_bottleneck\.)"
    r"(?:_(?P<a>matrix|bias|factor)(?P<i>\d+)|_?(?P<b>matrices|biases|factors)\.(?P<j>\d+))$"
)
_PLURAL = {"matrix": "matrices", "bias": "biases", "factor": "factors"}
_SINGULAR = {v: k for k, v in _PLURAL.items()}


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not match the model's.

    Attributes ``missing`` (keys the model needs but the checkpoint lacks), ``unexpected``
    (checkpoint keys the model does not have) and ``mismatched`` ((key, checkpoint shape,
    model shape) triples) hold the full lists; the message shows the first few of each.
    """

    def __init__(self, missing, unexpected, mismatched, source: str = "checkpoint",
                 show: int = 20):
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), \
            list(mismatched)

        def listing(title, items, fmt=str):
            if not items:
                return ""
            lines = [f"  {fmt(x)}" for x in items[:show]]
            if len(items) > show:
                lines.append(f"  ... and {len(items) - show} more")
            return f"\n{title} ({len(items)}):\n" + "\n".join(lines)

        msg = (f"{source} does not match the model: {len(self.missing)} missing, "
               f"{len(self.unexpected)} unexpected, {len(self.mismatched)} with another shape"
               + listing("missing keys", self.missing)
               + listing("unexpected keys", self.unexpected)
               + listing("shape mismatches (key: checkpoint vs model)", self.mismatched,
                         lambda t: f"{t[0]}: {tuple(t[1])} vs {tuple(t[2])}"))
        super().__init__(msg)


def read_checkpoint_object(path: str | os.PathLike):
    """Whatever a checkpoint file holds (state dict or a dict around it), read with
    ``torch.load(weights_only=True)`` onto the CPU."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise ValueError(f"checkpoint: {path} is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"checkpoint: cannot read {path} as a PyTorch checkpoint "
                         f"(torch.load with weights_only=True failed: {first})") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The raw state dict of a checkpoint file (unwrapped from "state_dict" /
    "model_state_dict"), read with ``torch.load(weights_only=True)`` onto the CPU."""
    return unwrap_state_dict(read_checkpoint_object(path), source=str(path))


def stored_biwkv_semantics(obj) -> str | None:
    """The BiWKV semantics a checkpoint dict records (top-level "biwkv_semantics", or in its
    training "config"), None when it records none (official checkpoints, bare state dicts)."""
    if not isinstance(obj, Mapping):
        return None
    value = obj.get("biwkv_semantics")
    config = obj.get("config")
    if not isinstance(value, str) and isinstance(config, Mapping):
        value = config.get("biwkv_semantics")
    return value if isinstance(value, str) else None


def unwrap_state_dict(obj, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside ``obj`` (itself, or under "state_dict" / "model_state_dict")."""
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{source}: expected a state dict (a mapping of names to tensors), "
                         f"optionally under {' or '.join(map(repr, _WRAPPER_KEYS))}; got "
                         f"{type(obj).__name__}")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(map(repr, list(obj)[:8]))
        raise ValueError(f"{source}: no tensors found in the checkpoint (top-level keys: "
                         f"{keys})")
    return tensors


def normalize_state_dict(state_dict: Mapping[str, torch.Tensor],
                         model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Rename keys to this code's names: strip ``module.``, ``.downsample.`` -> ``.skip.``,
    EntropyBottleneck parameters to the naming ``model`` uses (the installed CompressAI's
    ``matrices.N`` when no model is given); fill the top-level ``h_a.*`` / ``h_s.*`` from
    ``latent_codec.hyper.h_a.*`` / ``h_s.*`` (the same modules) when only one copy is there."""
    target_plural = True
    if model is not None:
        names = set(model.state_dict())
        if any(re.search(r"entropy_bottleneck\._matrix\d+$", k) for k in names):
            target_plural = False

    def rename(key: str) -> str:
        while key.startswith("module."):
            key = key[len("module."):]
        key = key.replace(".downsample.", ".skip.")
        m = _EB_PATTERN.match(key)
        if m:
            kind = m["a"] or _SINGULAR[m["b"]]
            idx = m["i"] or m["j"]
            key = (f"{m['prefix']}{_PLURAL[kind]}.{idx}" if target_plural
                   else f"{m['prefix']}_{kind}{idx}")
        return key

    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = rename(key)
        if new in out:
            raise ValueError(f"checkpoint: keys {key!r} and another one both map to {new!r}")
        out[new] = value
    for part in ("h_a", "h_s"):
        hyper = f"latent_codec.hyper.{part}."
        top = [k for k in out if k.startswith(f"{part}.")]
        shared = [k for k in out if k.startswith(hyper)]
        if shared and not top:
            out.update({k[len("latent_codec.hyper."):]: out[k] for k in shared})
        elif top and not shared:
            out.update({"latent_codec.hyper." + k: out[k] for k in top})
    return out


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                           source: str = "checkpoint") -> nn.Module:
    """Load ``state_dict`` (after :func:`normalize_state_dict`) into ``model`` with strict key
    and shape matching; raises :class:`CheckpointMismatchError` listing the differences.
    CompressAI's entropy-coder buffers (CDF tables, scale table) are resized as needed."""
    state_dict = normalize_state_dict(state_dict, model)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        (k, state_dict[k].shape, expected[k].shape) for k in expected
        if k in state_dict and state_dict[k].shape != expected[k].shape
        and not k.rsplit(".", 1)[-1] in _RESIZABLE_BUFFERS
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(missing, unexpected, mismatched, source)
    model.load_state_dict(dict(state_dict), strict=True)  # CompressAI's: resizes CDF buffers
    return model


def _sorted_indices(state_dict: Mapping, prefix: str, suffix: str) -> list[int]:
    out = []
    for key in state_dict:
        if key.startswith(prefix) and key.endswith(suffix):
            middle = key[len(prefix):-len(suffix)]
            if middle.isdigit():
                out.append(int(middle))
    return sorted(set(out))


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> LALICConfig:
    """The :class:`LALICConfig` whose model has the keys and shapes of ``state_dict``
    (official or ours, after key normalisation), read from the tensor shapes.

    N only matters where it clips an inner width of the parameter aggregation (2N); when
    no width is clipped, 128 (or the largest N that reproduces the shapes) is returned.
    """
    def shape(key):
        if key not in state_dict:
            raise ValueError(f"infer_config: the state dict has no key {key!r}; it does not "
                             "look like a LALIC model (pass `model=` or a preset)")
        return tuple(state_dict[key].shape)

    def stage(prefix):
        convs = [i for i in _sorted_indices(state_dict, prefix, ".weight")
                 if len(shape(f"{prefix}{i}.weight")) == 4]
        blocks = _sorted_indices(state_dict, prefix, ".gamma1")
        return convs, blocks

    convs, blocks = stage("g_a.")
    if len(convs) != 4:
        raise ValueError(f"infer_config: expected 4 convolutions in g_a, found {len(convs)}; "
                         "the state dict does not look like a LALIC model (pass `model=` "
                         "or a preset)")
    dims = [shape(f"g_a.{i}.weight")[0] for i in convs]
    depths = [sum(convs[j] < b < convs[j + 1] for b in blocks) for j in range(3)]
    hprefix = "h_a." if "h_a.0.weight" in state_dict else "latent_codec.hyper.h_a."
    hconvs, hblocks = stage(hprefix)
    if len(hconvs) != 2:
        raise ValueError(f"infer_config: expected 2 convolutions in h_a, found {len(hconvs)}")
    dims += [shape(f"{hprefix}{i}.weight")[0] for i in hconvs]
    depths.append(len(hblocks))
    hidden_rate = 4
    for prefix, idx in (("g_a.", blocks), (hprefix, hblocks)):
        if idx:
            key = f"{prefix}{idx[0]}.ffn.key.weight"
            hidden_rate = shape(key)[0] // shape(key)[1]
            break

    lc = "latent_codec.y."
    groups = []
    while f"{lc}latent_codec.y{len(groups)}.context_prediction.weight" in state_dict:
        groups.append(shape(f"{lc}latent_codec.y{len(groups)}.context_prediction.weight")[1])
    if not groups:
        raise ValueError("infer_config: no channel groups found (keys "
                         f"'{lc}latent_codec.y0.context_prediction.weight', ...)")
    M = dims[3]

    kw: dict = {}
    if f"{lc}latent_codec.y0.entropy_parameters.0.mix.weight" in state_dict:
        scctx = "rwkv"
        if len(groups) > 1:
            cc = f"{lc}channel_context.y1."
            kw["ctx_dim"] = shape(f"{cc}0.weight")[0]
            ctx_blocks = _sorted_indices(state_dict, cc, ".gamma1")
            kw["ctx_depth"] = len(ctx_blocks)
            if ctx_blocks:
                key = f"{cc}{ctx_blocks[0]}.ffn.key.weight"
                kw["ctx_hidden_rate"] = shape(key)[0] // shape(key)[1]
    else:
        scctx = "conv"
        if len(groups) > 1:
            cc = f"{lc}channel_context.y1."
            n_convs = len(_sorted_indices(state_dict, cc, ".weight"))
            if n_convs == 4:
                scctx = "convplus"
                kw["ctx_dim"] = shape(f"{cc}0.weight")[0]
            elif n_convs != 3:
                raise ValueError(f"infer_config: unknown channel context with {n_convs} convs")

    # N: from an inner width of the parameter aggregation that the 2N floor clipped.
    layer = ".mix.weight" if scctx == "rwkv" else ".weight"
    clipped, ramp_min = set(), None
    for k, g in enumerate(groups):
        in_ch = 2 * g + (k > 0) * 2 * g + M
        ramp = torch.linspace(in_ch, 2 * g, 4).floor().int().tolist()
        for j, i in enumerate((0, 2), start=1):
            width = shape(f"{lc}latent_codec.y{k}.entropy_parameters.{i}{layer}")[0]
            if width != ramp[j]:
                clipped.add(width)
            ramp_min = ramp[j] if ramp_min is None else min(ramp_min, ramp[j])
    if len(clipped) > 1 or any(c % 2 for c in clipped):
        raise ValueError(f"infer_config: inconsistent parameter-aggregation widths {clipped}")
    N = clipped.pop() // 2 if clipped else min(128, ramp_min // 2)
    return LALICConfig(N=N, M=M, dims=tuple(dims), depths=tuple(depths), groups=tuple(groups),
                       scctx=scctx, hidden_rate=hidden_rate, **kw)
