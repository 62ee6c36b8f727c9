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
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

#: Upper bound on the number of float64 logits materialised at once (128 MiB).
_MAX_BLOCK_ELEMENTS = 1 << 24


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


def biwkv_reference(
    w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """Exact BiWKV in float64: O(B * T^2 * C) time; query rows are processed in blocks so
    that each intermediate stays below ~128 MiB (T = 16384 at C = 96 fits easily).

    Args:
        w: (C,) per-token decay (the model passes ``decay / T``).
        u: (C,) boost of the token itself (the model passes ``boost / T``).
        k: (B, T, C) keys.
        v: (B, T, C) values.

    Returns:
        (B, T, C) tensor in the dtype of ``k``. Differentiable with respect to all inputs
        (blocks are recomputed in backward, so the backward pass also fits in memory).
    """
    out_dtype = k.dtype
    w, u, k, v = (x.to(torch.float64) for x in (w, u, k, v))
    B, T, C = k.shape
    if T == 0:
        return (k * v).to(out_dtype)  # empty, but connected to the inputs for autograd
    rows = max(1, _MAX_BLOCK_ELEMENTS // max(1, B * T * C))
    needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (w, u, k, v))
    blocks = []
    for start in range(0, T, rows):
        stop = min(T, start + rows)
        if needs_grad and T > rows:  # keep only the inputs of each block alive for backward
            block = checkpoint(_rows_block, w, u, k, v, start, stop, use_reentrant=False)
        else:
            block = _rows_block(w, u, k, v, start, stop)
        blocks.append(block)
    return torch.cat(blocks, dim=1).to(out_dtype)
