"""Models by name: the presets and ``module:factory`` specs (:func:`build_model`) and
checkpoint files (:func:`load_checkpoint`, the official pretrained ones included).

Zoo entries (``NAME:QUALITY``) are one level up, in :mod:`lalic_core.zoo`, which builds
them with :func:`build_model`; :func:`lalic_core.codec.resolve_model` accepts all three.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Mapping

import torch
from torch import nn

from lalic_core.models.config import PRESETS
from lalic_core.models.lalic import LALIC
from lalic_core.models.state_dict import (
    infer_config,
    load_state_dict_strict,
    normalize_state_dict,
    read_checkpoint_object,
    stored_biwkv_semantics,
    unwrap_state_dict,
)

__all__ = ["build_model", "load_checkpoint", "preset_names"]


def preset_names() -> tuple[str, ...]:
    """Names of the LALIC presets (:data:`lalic_core.models.config.PRESETS`)."""
    return tuple(PRESETS)


def build_model(spec: str, *, seed: int | None = None) -> nn.Module:
    """A randomly initialised model from ``spec``: a LALIC preset name (:func:`preset_names`)
    or ``"package.module:factory"`` (a callable returning a CompressAI-style model).

    ``seed``: build under this torch seed (the global RNG state is restored afterwards), so
    every process builds the same weights; None uses (and advances) the global RNG.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"model: expected a preset name or 'module:factory', got {spec!r}")
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"model: cannot import {spec!r} ({exc})") from None
    elif spec in PRESETS:
        def factory():
            return LALIC.from_preset(spec)
    else:
        raise ValueError(f"model: unknown LALIC preset {spec!r}; choose one of "
                         f"{', '.join(PRESETS)} or give 'module:factory'")
    if seed is None:
        model = factory()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = factory()
    if not isinstance(model, nn.Module) or not callable(getattr(model, "aux_loss", None)):
        raise TypeError(f"model: {spec!r} did not build a CompressAI-style model (an "
                        "nn.Module with aux_loss() whose forward returns x_hat and "
                        "likelihoods)")
    return model


def load_checkpoint(
    path: str | os.PathLike | Mapping[str, torch.Tensor],
    model: nn.Module | str | None = None,
    *,
    device: str | torch.device = "cpu",
    update: bool = True,
    biwkv_semantics: str | None = None,
) -> nn.Module:
    """Load a LALIC checkpoint (official or ours) for coding.

    Args:
        path: checkpoint file (or an already loaded state dict / checkpoint dict).
        model: None (infer the architecture from the tensor shapes), a preset name
            (``LALIC.from_preset``) or a model instance to load into.
        device: where the returned model lives.
        update: (re)build the entropy-coder tables from the weights,
            ``model.update(force=True)``, as CompressAI's evaluation script does.
        biwkv_semantics: what BiWKV computes ("formula", "official32", "official64"; see
            :mod:`lalic_core.ops.biwkv`). None: what the checkpoint records (our trainer's
            checkpoints do), else "formula" (or a given model's own setting). The official
            pretrained checkpoints (lalic-mse-q1..q6.pth) record nothing but were trained
            with the older 64-chunk CUDA kernel: pass ``biwkv_semantics="official64"`` to
            compute what they were trained with (../shared/reference/README.md); official
            bitstreams decode correctly only under the semantics they were encoded with.

    Returns:
        The model in eval mode, Omni-Shifts collapsed, ready for ``compress``/``decompress``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable checkpoint, or the architecture cannot be inferred.
        CheckpointMismatchError (a ValueError): keys or shapes differ from the model's.
    """
    if isinstance(path, Mapping):
        source, obj = "checkpoint", path
    else:
        source, obj = str(path), read_checkpoint_object(path)
    state_dict = unwrap_state_dict(obj, source)
    semantics = biwkv_semantics if biwkv_semantics is not None else stored_biwkv_semantics(obj)
    if model is None:
        model = LALIC.from_config(infer_config(normalize_state_dict(state_dict)))
    elif isinstance(model, str):
        model = LALIC.from_preset(model)
    elif not isinstance(model, nn.Module):
        raise ValueError(f"load_checkpoint: `model` must be None, a preset name or an "
                         f"nn.Module, got {type(model).__name__}")
    if semantics is not None:
        if callable(getattr(model, "set_biwkv_semantics", None)):
            model.set_biwkv_semantics(semantics)
        elif semantics != "formula":
            raise ValueError(f"load_checkpoint: biwkv_semantics={semantics!r} needs a LALIC "
                             f"model, got {type(model).__name__}")
    load_state_dict_strict(model, state_dict, source)
    model = model.to(device).eval()
    if update and hasattr(model, "update"):
        model.update(force=True)
    if hasattr(model, "reparameterize"):
        model.reparameterize()
    return model
