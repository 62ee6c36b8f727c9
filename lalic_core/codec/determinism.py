"""Deterministic numerics for entropy coding: :func:`deterministic_coding`.

The encoder and the decoder must compute the same scale index for every latent element from
the entropy-parameter path (hyper-synthesis h_s, SCCTX channel-context, checkerboard-context
and parameter-aggregation networks). On a GPU, TF32 matmuls/convolutions (on by default for
cuDNN) and non-deterministic cuDNN algorithms make the scales differ between the two passes
by ~1e-3 relative, enough to move scales across table boundaries: the rANS decoder then
desynchronises. Within :func:`deterministic_coding`:

- TF32 off (``torch.backends.cuda.matmul.allow_tf32``, ``torch.backends.cudnn.allow_tf32``,
  float32 matmul precision "highest"), cuDNN deterministic and not benchmarking,
  ``torch.use_deterministic_algorithms(True, warn_only=True)``;
- the model's 4-d weights in the contiguous (NCHW) layout;
- optionally (``entropy_float64=True``) the entropy-parameter networks run in float64, their
  outputs rounded back to float32: differences between machines (~1e-7 relative in float32)
  shrink to ~1e-16 before that rounding.

Everything is restored on exit, the user's settings and the model alike.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

__all__ = ["deterministic_coding", "entropy_parameter_modules"]

#: Names of the submodules that compute the entropy parameters in CompressAI latent codecs.
ENTROPY_PARAMETER_NAMES = ("h_s", "channel_context", "context_prediction", "entropy_parameters")


def entropy_parameter_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of the entropy-parameter networks inside ``model.latent_codec`` (or the
    model): h_s, each channel context, checkerboard context and parameter aggregation."""
    root = getattr(model, "latent_codec", model)
    out, seen = [], set()
    for name, module in root.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        parent = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
        if (leaf in ENTROPY_PARAMETER_NAMES or parent == "channel_context") \
                and not isinstance(module, nn.ModuleDict) and id(module) not in seen:
            if any(name.startswith(n + ".") for n, _ in out):
                continue
            seen.add(id(module))
            out.append((name, module))
    return out


def _cast(value, dtype: torch.dtype):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


@contextmanager
def _float64(model: nn.Module) -> Iterator[None]:
    """The entropy-parameter networks in float64 (inputs cast up, outputs back to the dtype
    the module had: float32, or float64 for a model that is float64 already)."""
    modules = entropy_parameter_modules(model)
    saved = []
    handles = []
    for _, module in modules:
        dtype = next((t.dtype for t in module.parameters() if t.is_floating_point()),
                     torch.float32)
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point():
                saved.append((tensor, tensor.data))
                tensor.data = tensor.data.double()
        handles.append(module.register_forward_pre_hook(
            lambda _m, args: _cast(args, torch.float64)))
        handles.append(module.register_forward_hook(
            lambda _m, _args, out, dtype=dtype: _cast(out, dtype)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for tensor, data in saved:
            tensor.data = data


@contextmanager
def _contiguous_weights(model: nn.Module) -> Iterator[None]:
    saved = []
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.dim() == 4 and not tensor.is_contiguous():
            saved.append((tensor, tensor.data))
            tensor.data = tensor.data.contiguous()
    try:
        yield
    finally:
        for tensor, data in saved:
            tensor.data = data


@contextmanager
def _backend_settings() -> Iterator[None]:
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = {
        "matmul_tf32": matmul.allow_tf32,
        "cudnn_tf32": cudnn.allow_tf32,
        "deterministic": cudnn.deterministic,
        "benchmark": cudnn.benchmark,
        "algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "precision": torch.get_float32_matmul_precision(),
        "cublas": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
    try:
        matmul.allow_tf32 = False
        cudnn.allow_tf32 = False
        cudnn.deterministic = True
        cudnn.benchmark = False
        torch.set_float32_matmul_precision("highest")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        yield
    finally:
        matmul.allow_tf32 = saved["matmul_tf32"]
        cudnn.allow_tf32 = saved["cudnn_tf32"]
        cudnn.deterministic = saved["deterministic"]
        cudnn.benchmark = saved["benchmark"]
        torch.set_float32_matmul_precision(saved["precision"])
        torch.use_deterministic_algorithms(saved["algorithms"], warn_only=saved["warn_only"])
        if saved["cublas"] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved["cublas"]


@contextmanager
def deterministic_coding(model: nn.Module | None = None, *,
                         entropy_float64: bool = False) -> Iterator[None]:
    """Deterministic numerics for ``model.compress``/``model.decompress`` on any device
    (see the module docstring); the user's settings and the model are restored on exit."""
    with ExitStack() as stack:
        stack.enter_context(_backend_settings())
        if model is not None:
            stack.enter_context(_contiguous_weights(model))
            if entropy_float64:
                stack.enter_context(_float64(model))
        yield
