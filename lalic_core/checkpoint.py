"""Loading LALIC checkpoints, the official pretrained ones included.

``load_checkpoint(path)`` accepts what the official training and evaluation scripts save
and read (sjtu-medialab/RwkvCompress, on CompressAI): the state dict alone or under
``"state_dict"`` / ``"model_state_dict"``, keys prefixed with ``module.`` (DataParallel /
DistributedDataParallel), CompressAI's older EntropyBottleneck parameter names
(``_matrixN`` / ``_biasN`` / ``_factorN``, or ``_matrices.N`` ..., against the
``matrices.N`` / ``biases.N`` / ``factors.N`` of the installed CompressAI; whichever the
model uses wins) and ``.downsample.`` for ``.skip.``. It infers the architecture from the
tensor shapes (or takes ``model=`` a model or a preset name), matches keys strictly, and
returns the model in eval mode with the entropy-coder tables ready (``update()``) and the
Omni-Shifts collapsed. Files are read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "CheckpointMismatchError",
    "load_checkpoint",
    "load_state_dict_strict",
    "normalize_state_dict",
    "read_state_dict",
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


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The raw state dict of a checkpoint file (unwrapped from "state_dict" /
    "model_state_dict"), read with ``torch.load(weights_only=True)`` onto the CPU."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise ValueError(f"checkpoint: {path} is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"checkpoint: cannot read {path} as a PyTorch checkpoint "
                         f"(torch.load with weights_only=True failed: {first})") from None
    return unwrap_state_dict(obj, source=str(path))


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


def load_checkpoint(
    path: str | os.PathLike | Mapping[str, torch.Tensor],
    model: nn.Module | str | None = None,
    *,
    device: str | torch.device = "cpu",
    update: bool = True,
) -> nn.Module:
    """Load a LALIC checkpoint (official or ours) for coding.

    Args:
        path: checkpoint file (or an already loaded state dict / checkpoint dict).
        model: None (infer the architecture from the tensor shapes), a preset name
            (``LALIC.from_preset``) or a model instance to load into.
        device: where the returned model lives.
        update: (re)build the entropy-coder tables from the weights,
            ``model.update(force=True)``, as CompressAI's evaluation script does.

    Returns:
        The model in eval mode, Omni-Shifts collapsed, ready for ``compress``/``decompress``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable checkpoint, or the architecture cannot be inferred.
        CheckpointMismatchError (a ValueError): keys or shapes differ from the model's.
    """
    from lalic_core.models.lalic import LALIC, infer_config

    if isinstance(path, Mapping):
        source = "checkpoint"
        state_dict = unwrap_state_dict(path, source)
    else:
        source = str(path)
        state_dict = read_state_dict(path)
    if model is None:
        model = LALIC.from_config(infer_config(normalize_state_dict(state_dict)))
    elif isinstance(model, str):
        model = LALIC.from_preset(model)
    elif not isinstance(model, nn.Module):
        raise ValueError(f"load_checkpoint: `model` must be None, a preset name or an "
                         f"nn.Module, got {type(model).__name__}")
    load_state_dict_strict(model, state_dict, source)
    model = model.to(device).eval()
    if update and hasattr(model, "update"):
        model.update(force=True)
    if hasattr(model, "reparameterize"):
        model.reparameterize()
    return model
