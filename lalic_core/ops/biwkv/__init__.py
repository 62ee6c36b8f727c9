"""BiWKV, the bidirectional linear attention of LALIC's Bi-RWKV blocks (paper Sec. 3.2).

``biwkv(w, u, k, v, backend="auto", semantics="formula")`` with w, u of shape (C,) and k, v
of shape (B, T, C) returns (B, T, C)::

    y[t] = ( sum_{i != t} exp(-(|t-i| - 1) * w + k[i]) * v[i]  +  exp(u + k[t]) * v[t] )
         / ( sum_{i != t} exp(-(|t-i| - 1) * w + k[i])         +  exp(u + k[t]) )

independently for every batch item and channel (the model passes w = decay / T and
u = boost / T, so w may be negative: weights that grow with distance).

Semantics (``SEMANTICS``): ``"formula"`` is the formula above; ``"official32"`` and
``"official64"`` are what the official chunked CUDA kernels compute in exact arithmetic (32
chunks in the current kernel, 64 in the older one the pretrained checkpoints were trained
with): chunk-start coefficients one decay step off and an epsilon relative to the largest
tracked exponent (../shared/reference/README.md, "official CUDA kernel semantics";
:func:`.naive.coefficient_matrix` gives the coefficients).

Backends (all differentiable in w, u, k and v):

- ``"reference"``: exact float64 O(T^2) softmax form (:mod:`.naive`), the test oracle.
- ``"cpu"``: fused O(T) numba kernel (:mod:`.cpu`); tensors on another device are
  computed on the CPU and moved back. ``"torch"`` is a deprecated alias of it.
- ``"triton"``: Triton kernels (:mod:`.triton_kernel`) for CUDA tensors.
- ``"auto"``: ``"triton"`` for CUDA tensors when Triton is installed, else ``"cpu"``.

float16/bfloat16 inputs are computed in float32 and the result cast back.

The fast backends run as the custom operator ``torch.ops.lalic.biwkv`` (backward:
``torch.ops.lalic.biwkv_backward``), which has a FLOP formula, so
``torch.utils.flop_counter.FlopCounterMode`` counts BiWKV in models. Convention: 2 FLOPs per
multiply-add (as torch counts matmuls), over the O(T) recurrence that defines the cost of
the operator: per element (b, t, c), four state updates (left and right numerator and
denominator) and the two own-token terms, i.e. 6 multiply-adds = **12 FLOPs forward**; the
backward counts twice the forward (**24 FLOPs**). Exponentials and the division are not
counted, as torch does not count elementwise operations. The "reference" backend is plain
torch autograd (the test oracle) and is not counted.
"""
from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from lalic_core.ops.biwkv.cpu import biwkv_cpu_backward, biwkv_cpu_forward
from lalic_core.ops.biwkv.naive import (
    SEMANTICS_CHUNKS,
    biwkv_reference,
    coefficient_matrix,
    semantics_chunks,
)

__all__ = [
    "BACKENDS",
    "FLOPS_PER_ELEMENT",
    "SEMANTICS",
    "biwkv",
    "biwkv_reference",
    "coefficient_matrix",
    "triton_available",
]

BACKENDS = ("auto", "reference", "cpu", "triton")
#: "formula" (the paper's), "official32" / "official64" (the official chunked kernels).
SEMANTICS = tuple(SEMANTICS_CHUNKS)
#: Deprecated backend names and what they mean now (warned about once per name).
_DEPRECATED_BACKENDS = {"torch": "cpu"}
_warned_backends: set[str] = set()
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: FLOPs counted per (b, t, c) element: forward and backward (see the module docstring).
FLOPS_PER_ELEMENT = {"forward": 12, "backward": 24}


def triton_available() -> bool:
    """True when Triton can be imported (it is only installed on Linux)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# ----------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------
def _check_inputs(w, u, k, v) -> None:
    """Raise ValueError naming the argument and the expected shape on any user mistake."""
    for name, x in (("w", w), ("u", u), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(  # noqa: TRY004 (project convention: user mistakes -> ValueError)
                f"biwkv: `{name}` must be a torch.Tensor, got {type(x).__name__}"
            )
    if k.dim() != 3:
        raise ValueError(
            f"biwkv: `k` must have shape (B, T, C) (3 dimensions), got shape {tuple(k.shape)}"
        )
    B, T, C = k.shape
    if v.shape != k.shape:
        raise ValueError(
            f"biwkv: `v` must have the shape of `k`, (B, T, C) = {(B, T, C)}, "
            f"got {tuple(v.shape)}"
        )
    for name, x in (("w", w), ("u", u)):
        if x.shape != (C,):
            raise ValueError(
                f"biwkv: `{name}` must have shape (C,) = ({C},) to match `k` of shape "
                f"(B, T, C) = {(B, T, C)}, got {tuple(x.shape)}"
            )
    for name, x in (("w", w), ("u", u), ("k", k), ("v", v)):
        if x.dtype not in _FLOAT_DTYPES:
            raise ValueError(
                f"biwkv: `{name}` must be a floating tensor (float16, bfloat16, float32 or "
                f"float64), got dtype {x.dtype}"
            )
    if v.dtype != k.dtype:
        raise ValueError(f"biwkv: `v` must have the dtype of `k` ({k.dtype}), got {v.dtype}")
    for name, x in (("w", w), ("u", u), ("v", v)):
        if x.device != k.device:
            raise ValueError(
                f"biwkv: `{name}` must be on the device of `k` ({k.device}), got {x.device}"
            )


def _resolve_backend(backend: str, k: Tensor) -> str:
    if backend in _DEPRECATED_BACKENDS:
        new = _DEPRECATED_BACKENDS[backend]
        if backend not in _warned_backends:
            _warned_backends.add(backend)
            warnings.warn(
                f"biwkv: backend {backend!r} is deprecated (it is the numba CPU kernel); "
                f"use {new!r}", DeprecationWarning, stacklevel=3,
            )
        backend = new
    if backend not in BACKENDS:
        raise ValueError(f"biwkv: `backend` must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if k.is_cuda and triton_available() else "cpu"
    if backend == "triton":
        if not triton_available():
            raise ValueError("biwkv: backend 'triton' needs the `triton` package (Linux only)")
        if not k.is_cuda and not _triton_interpreted():
            raise ValueError(
                f"biwkv: backend 'triton' needs CUDA tensors (got `k` on {k.device}); set "
                "TRITON_INTERPRET=1 before importing triton to run it on the CPU interpreter"
            )
    return backend


# ----------------------------------------------------------------------------------------
# the custom operator of the fast backends (one FLOP formula, one autograd rule)
# ----------------------------------------------------------------------------------------
def _forward_impl(w: Tensor, u: Tensor, k: Tensor, v: Tensor, backend: str, chunks: int):
    if backend == "triton":
        from lalic_core.ops.biwkv.triton_kernel import biwkv_triton_forward

        return biwkv_triton_forward(w, u, k, v, chunks=chunks)
    return biwkv_cpu_forward(w, u, k, v, chunks)


@torch.library.custom_op("lalic::biwkv", mutates_args=())
def _biwkv_op(
    w: Tensor, u: Tensor, k: Tensor, v: Tensor, backend: str, chunks: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Returns y and three float64 (B, *, C) tensors that the backend's backward needs
    (CPU formula: per-chunk units and boundary denominators; CPU official: denominators and
    the epsilon's tracked maximum; Triton: log-denominators and y in float64). ``chunks``: 0
    for the formula, 32 or 64 for the official semantics."""
    return _forward_impl(w, u, k, v, backend, chunks)


@_biwkv_op.register_fake
def _biwkv_fake(w, u, k, v, backend, chunks):
    ctx = torch.library.get_ctx()  # the middle sizes depend on the backend and on |w|
    aux = [k.new_empty((k.shape[0], ctx.new_dynamic_size(), k.shape[2]), dtype=torch.float64)
           for _ in range(3)]
    return (torch.empty_like(k), *aux)


@torch.library.custom_op("lalic::biwkv_backward", mutates_args=())
def _biwkv_backward_op(
    grad_y: Tensor, w: Tensor, u: Tensor, k: Tensor, v: Tensor, y: Tensor,
    aux0: Tensor, aux1: Tensor, aux2: Tensor, backend: str, chunks: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients (w, u, k, v) of sum(grad_y * y); aux*: the forward's extra outputs."""
    if backend == "triton":
        from lalic_core.ops.biwkv.triton_kernel import biwkv_triton_backward

        return biwkv_triton_backward(grad_y, w, u, k, v, y, aux0, aux1, aux2, chunks=chunks)
    return biwkv_cpu_backward(grad_y, w, u, k, v, y, aux0, aux1, aux2, chunks)


@_biwkv_backward_op.register_fake
def _biwkv_backward_fake(grad_y, w, u, k, v, y, aux0, aux1, aux2, backend, chunks):
    return torch.empty_like(w), torch.empty_like(u), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    w, u, k, v, backend, chunks = inputs
    y, *aux = output
    ctx.save_for_backward(w, u, k, v, y, *aux)
    ctx.backend = backend
    ctx.chunks = chunks
    ctx.mark_non_differentiable(*aux)


def _backward(ctx, grad_y, *unused_aux_grads):
    dw, du, dk, dv = torch.ops.lalic.biwkv_backward(
        grad_y.contiguous(), *ctx.saved_tensors, ctx.backend, ctx.chunks
    )
    return dw, du, dk, dv, None, None


_biwkv_op.register_autograd(_backward, setup_context=_setup_context)


@register_flop_formula(torch.ops.lalic.biwkv)
def _biwkv_flops(w_shape, u_shape, k_shape, v_shape, *args, out_shape=None, **kwargs):
    B, T, C = k_shape
    return FLOPS_PER_ELEMENT["forward"] * B * T * C


@register_flop_formula(torch.ops.lalic.biwkv_backward)
def _biwkv_backward_flops(grad_y_shape, *args, out_shape=None, **kwargs):
    B, T, C = grad_y_shape
    return FLOPS_PER_ELEMENT["backward"] * B * T * C


# ----------------------------------------------------------------------------------------
# public entry point
# ----------------------------------------------------------------------------------------
def biwkv(
    w: Tensor, u: Tensor, k: Tensor, v: Tensor, backend: str = "auto",
    semantics: str = "formula",
) -> Tensor:
    """Bidirectional WKV attention (see the module docstring for the formula).

    Args:
        w: (C,) per-token decay (``decay / T`` in the model); may be negative.
        u: (C,) boost of each token's own position (``boost / T`` in the model).
        k: (B, T, C) keys; v: (B, T, C) values, same dtype and device as ``k``.
        backend: "auto", "reference", "cpu" or "triton" ("torch": deprecated alias of "cpu").
        semantics: "formula", "official32" or "official64" (see the module docstring).

    Returns:
        (B, T, C) tensor with the dtype and device of ``k``.
    """
    _check_inputs(w, u, k, v)
    chunks = semantics_chunks(semantics)
    backend = _resolve_backend(backend, k)
    if backend == "reference":
        return biwkv_reference(w, u, k, v, semantics)
    out_dtype = k.dtype
    if out_dtype in (torch.float16, torch.bfloat16):
        k, v = k.float(), v.float()
    y = _biwkv_op(w, u, k.contiguous(), v.contiguous(), backend, chunks)[0]
    return y.to(out_dtype)
