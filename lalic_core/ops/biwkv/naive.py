"""Exact O(T^2) reference of BiWKV, the oracle every fast backend is tested against.

BiWKV (bidirectional WKV, LALIC paper Sec. 3.2, after Vision-RWKV) mixes the T tokens of
each channel independently. For one batch item and one channel, with per-token decay ``w``
and boost ``u``::

    y[t] = ( sum_{i != t} exp(-(|t-i| - 1) * w + k[i]) * v[i]  +  exp(u + k[t]) * v[t] )
         / ( sum_{i != t} exp(-(|t-i| - 1) * w + k[i])         +  exp(u + k[t]) )

i.e. ``y[t]`` is a softmax-weighted average of ``v`` over all tokens, with logits
``k[i] - (|t-i| - 1) * w`` off the diagonal and ``k[t] + u`` on it. This module evaluates
exactly that: it builds the (rows x T) logit matrix for a block of query rows, applies a
float64 softmax (max-subtracted, hence exact for any finite logits) and multiplies by ``v``.
Query rows are processed in blocks so that T = 16384 fits in memory; the whole function is
plain torch, so autograd differentiates it with respect to w, u, k and v.

``semantics="official32"`` / ``"official64"``: what the official chunked CUDA kernels compute
in exact arithmetic (../shared/reference/README.md, "official CUDA kernel semantics"). T is cut
into chunks of L = ceil(T / 32) (or 64) tokens; for a token t in the chunk starting at s::

    y[t] = sum_i W[t, i] exp(k[i]) v[i] / (sum_i W[t, i] exp(k[i]) + EPS * exp(M[t]))

with W from :func:`coefficient_matrix` and M[t] the largest exponent the kernel tracks
(:func:`_tracked_exponents`): its epsilon is added to a denominator rescaled by exp(M[t]).
"""
from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

#: Upper bound on the number of float64 logits materialised at once (128 MiB).
_MAX_BLOCK_ELEMENTS = 1 << 24
#: Semantics and the number of chunks of T each one cuts (0: no chunks, the formula).
SEMANTICS_CHUNKS = {"formula": 0, "official32": 32, "official64": 64}
#: The official kernels add this to their max-rescaled denominator.
EPS = 1e-6


def semantics_chunks(semantics: str) -> int:
    """Number of chunks of ``semantics`` (0 for the formula); ValueError if unknown."""
    if semantics not in SEMANTICS_CHUNKS:
        raise ValueError(
            f"biwkv: `semantics` must be one of {tuple(SEMANTICS_CHUNKS)}, got {semantics!r}"
        )
    return SEMANTICS_CHUNKS[semantics]


def _positions(T: int, rows: torch.Tensor, chunks: int, device):
    """Query rows t (R, 1), keys i (1, T) and the start s (R, 1) of each row's chunk."""
    t = rows.to(device=device, dtype=torch.int64)[:, None]
    i = torch.arange(T, device=device)[None, :]
    L = math.ceil(T / chunks) if chunks else max(T, 1)
    return t, i, (t // L) * L


def _official_coefficients(w, u, T, rows, chunks):
    """W[c, r, i] of the official kernel for query rows ``rows`` (README list, line by line).

    Exponents are computed only where their case applies (0 elsewhere) so that no masked-out
    exp overflows into a NaN gradient."""
    t, i, s = _positions(T, rows, chunks, w.device)
    w_ = w[:, None, None]
    u_ = u[:, None, None]
    grow = 1.0 - torch.exp(w_)  # the (1 - e^w) of the chunk-start error

    def exp_where(mask, exponent):
        return torch.where(mask, torch.exp(torch.where(mask, exponent, 0.0)), 0.0)

    before_chunk = i < s  # i < s: exp(-w (t - i))
    W = exp_where(before_chunk, -w_ * (t - i))
    in_chunk_before = (i >= s) & (i < t)  # s <= i < t: exp(-w (t-i-1)) [+ (1-e^w) exp(w (t-i))]
    W = W + exp_where(in_chunk_before, -w_ * (t - i - 1))
    W = W + grow * exp_where(in_chunk_before & (i > s), w_ * (t - i))
    own = i == t  # i = t: e^u [+ (1 - e^w) if t > s]
    W = W + exp_where(own, u_ + 0 * i) + torch.where(own & (t > s), grow, 0.0)
    after = i > t  # i > t: exp(-w (i - t))
    return W + exp_where(after, -w_ * (i - t))


def _tracked_exponents(w, u, T, rows, chunks):
    """X[c, r, i]: the largest exponent (without k[i]) that the official kernel's running
    maxima hold for key i at query row t; M[t] = max_i (X[t, i] + k[i]).

    Left state (a, b): keys i < t with their own exponent, -w (t-i) before the chunk and
    -w (t-i-1) inside it. Right state (c, d): set at the chunk start to the keys i >= s with
    -w (i - t) (i = s included, though subtracted at once), then moved by +w per token while
    subtracting key i with +w (t - i + 1) for s < i <= t. Own token: u."""
    t, i, s = _positions(T, rows, chunks, w.device)
    w_ = w[:, None, None]
    none = torch.tensor(-math.inf, dtype=w.dtype, device=w.device)
    left = torch.where(i < s, -w_ * (t - i), torch.where(i < t, -w_ * (t - i - 1), none))
    right = torch.where(i >= s, -w_ * (i - t), none)
    subtracted = torch.where((i > s) & (i <= t), w_ * (t - i + 1), none)
    own = torch.where(i == t, u[:, None, None] + 0 * w_, none)
    return torch.maximum(torch.maximum(left, right), torch.maximum(subtracted, own))


def coefficient_matrix(
    w: torch.Tensor | float, u: torch.Tensor | float, T: int, semantics: str = "formula"
) -> torch.Tensor:
    """The coefficient W[t, i] multiplying exp(k[i]) v[i] (and exp(k[i]) in the
    denominator) for query token t, in float64 (for plots and checks).

    Args:
        w, u: scalars, or (C,) tensors for one matrix per channel.
        T: number of tokens.
        semantics: "formula", "official32" or "official64".

    Returns:
        (T, T) for scalar w and u, (C, T, T) for (C,) ones. The official kernels' epsilon
        is not part of W (see :func:`biwkv_reference`).
    """
    chunks = semantics_chunks(semantics)
    scalar = not (isinstance(w, torch.Tensor) and w.dim() == 1)
    w = torch.as_tensor(w, dtype=torch.float64).reshape(-1)
    u = torch.as_tensor(u, dtype=torch.float64, device=w.device).reshape(-1)
    w, u = torch.broadcast_tensors(w, u)
    rows = torch.arange(T)
    if chunks:
        W = _official_coefficients(w, u, T, rows, chunks)
    else:
        t, i, _ = _positions(T, rows, 0, w.device)
        W = torch.exp(-w[:, None, None] * ((t - i).abs() - 1))
        W = torch.where(t == i, torch.exp(u)[:, None, None], W)
    return W[0] if scalar else W


def _rows_block(
    w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int, stop: int
) -> torch.Tensor:
    """Outputs for query rows ``start:stop``; all tensors float64, k and v (B, T, C)."""
    T = k.shape[1]
    t = torch.arange(start, stop, device=k.device, dtype=torch.float64)[:, None]  # (R, 1)
    i = torch.arange(T, device=k.device, dtype=torch.float64)[None, :]  # (1, T)
    distance = (t - i).abs()  # (R, T)
    diagonal = distance == 0
    # logits[b, r, i, c] = -(|t-i| - 1) * w[c] + k[b, i, c], and u[c] + k[b, t, c] on the diagonal
    decay = -(distance - 1)[..., None] * w  # (R, T, C)
    decay = torch.where(diagonal[..., None], u.expand_as(decay), decay)
    logits = decay[None] + k[:, None, :, :]  # (B, R, T, C)
    weights = torch.softmax(logits, dim=2)
    return (weights * v[:, None, :, :]).sum(dim=2)  # (B, R, C)


def _official_rows_block(w, u, k, v, start, stop, chunks):
    """Official-semantics outputs for query rows ``start:stop``; float64, k and v (B, T, C)."""
    T = k.shape[1]
    rows = torch.arange(start, stop, device=k.device)
    W = _official_coefficients(w, u, T, rows, chunks)  # (C, R, T)
    X = _tracked_exponents(w, u, T, rows, chunks)  # (C, R, T)
    unit = k.detach().amax(dim=1, keepdim=True)  # y does not depend on it: exps stay <= 1
    e = torch.exp(k - unit)  # (B, T, C)
    num = torch.einsum("cri,bic->brc", W, e * v)
    den = torch.einsum("cri,bic->brc", W, e)
    M = (X.permute(1, 2, 0)[None] + k[:, None]).amax(dim=2)  # (B, R, C)
    return num / (den + EPS * torch.exp(M - unit))


def biwkv_reference(
    w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    semantics: str = "formula",
) -> torch.Tensor:
    """Exact BiWKV in float64: O(B * T^2 * C) time; query rows are processed in blocks so
    that each intermediate stays below ~128 MiB (T = 16384 at C = 96 fits easily).

    Args:
        w: (C,) per-token decay (the model passes ``decay / T``).
        u: (C,) boost of the token itself (the model passes ``boost / T``).
        k: (B, T, C) keys.
        v: (B, T, C) values.
        semantics: "formula" (the paper's formula) or "official32" / "official64" (the
            official chunked kernels in exact arithmetic, see the module docstring).

    Returns:
        (B, T, C) tensor in the dtype of ``k``. Differentiable with respect to all inputs
        (blocks are recomputed in backward, so the backward pass also fits in memory).
    """
    chunks = semantics_chunks(semantics)
    out_dtype = k.dtype
    w, u, k, v = (x.to(torch.float64) for x in (w, u, k, v))
    B, T, C = k.shape
    if T == 0:
        return (k * v).to(out_dtype)  # empty, but connected to the inputs for autograd
    rows = max(1, _MAX_BLOCK_ELEMENTS // max(1, B * T * C))
    if chunks:
        rows = max(1, rows // 3)  # W, X and their (B, R, T, C) sum
    block_fn = _rows_block if not chunks else (
        lambda w, u, k, v, start, stop: _official_rows_block(w, u, k, v, start, stop, chunks))
    needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (w, u, k, v))
    blocks = []
    for start in range(0, T, rows):
        stop = min(T, start + rows)
        if needs_grad and T > rows:  # keep only the inputs of each block alive for backward
            block = checkpoint(block_fn, w, u, k, v, start, stop, use_reentrant=False)
        else:
            block = block_fn(w, u, k, v, start, stop)
        blocks.append(block)
    return torch.cat(blocks, dim=1).to(out_dtype)
