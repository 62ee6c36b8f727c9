"""BiWKV forward and backward as Triton kernels (GPU; also runs under TRITON_INTERPRET=1).

Same algebra as the CPU kernel (:mod:`.cpu`): with r = exp(-w) and e[t] = exp(k[t] - kmax)
(kmax: per batch item and channel, so every exponential is <= 1)::

    y[t] = (a[t] + c[t] + exp(u) e[t] v[t]) / (b[t] + d[t] + exp(u) e[t])

a, b: causal sums (a[t] = r a[t-1] + e[t-1] v[t-1]), c, d: the mirror anti-causal sums.
One program (one warp) handles one batch item and 32 channels and walks the sequence (the
parallelism of the official CUDA kernel: one thread per batch item and channel): a right-to-left pass stores c, d; a
left-to-right pass forms y and saves the denominator D for the backward. The backward walks
q = dL/dy / D the same way; the w-gradient uses the distance-weighted recurrence
P[t] = r (P[t-1] + Q[t-1]). States are float64 (compounding r in float32 over 1e5 tokens
loses ~T * eps); loads and stores are in the inputs' dtype. No architecture-specific code.

Numerical range: exact while the weights stay inside float64's range, i.e. for
|w| * T <~ 600 and a spread of k below ~600 (the accuracy domain of the tests is |w| T <= 20,
|k| <= 60); the CPU kernel additionally renormalises per chunk.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["biwkv_triton_backward", "biwkv_triton_forward"]


@triton.jit
def _fwd_right_kernel(k_ptr, v_ptr, w_ptr, kmax_ptr, rnum_ptr, rden_ptr, T, C,
                      BLOCK_C: tl.constexpr):
    """Right-to-left: rnum[t] = sum_{i>t} r^(i-t-1) e[i] v[i], rden[t] likewise without v."""
    b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = offs < C
    r = tl.exp(-tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float64))
    kmax = tl.load(kmax_ptr + b * C + offs, mask=mask, other=0.0)
    num = tl.zeros([BLOCK_C], dtype=tl.float64)
    den = tl.zeros([BLOCK_C], dtype=tl.float64)
    for i in range(T):
        row = (b * T + (T - 1 - i)) * C + offs
        tl.store(rnum_ptr + row, num, mask=mask)
        tl.store(rden_ptr + row, den, mask=mask)
        kk = tl.load(k_ptr + row, mask=mask, other=0.0).to(tl.float64)
        vv = tl.load(v_ptr + row, mask=mask, other=0.0).to(tl.float64)
        e = tl.exp(kk - kmax)
        num = r * num + e * vv
        den = r * den + e


@triton.jit
def _fwd_left_kernel(k_ptr, v_ptr, w_ptr, u_ptr, kmax_ptr, rnum_ptr, rden_ptr, y_ptr, d_ptr,
                     T, C, BLOCK_C: tl.constexpr):
    """Left-to-right: y[t] and the denominator D[t] (in units of exp(kmax))."""
    b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = offs < C
    r = tl.exp(-tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float64))
    eu = tl.exp(tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float64))
    kmax = tl.load(kmax_ptr + b * C + offs, mask=mask, other=0.0)
    num = tl.zeros([BLOCK_C], dtype=tl.float64)
    den = tl.zeros([BLOCK_C], dtype=tl.float64)
    for t in range(T):
        row = (b * T + t) * C + offs
        kk = tl.load(k_ptr + row, mask=mask, other=0.0).to(tl.float64)
        vv = tl.load(v_ptr + row, mask=mask, other=0.0).to(tl.float64)
        e = tl.exp(kk - kmax)
        ev = e * vv
        total_num = num + tl.load(rnum_ptr + row, mask=mask, other=0.0) + eu * ev
        total_den = den + tl.load(rden_ptr + row, mask=mask, other=1.0) + eu * e
        tl.store(y_ptr + row, (total_num / total_den).to(y_ptr.dtype.element_ty), mask=mask)
        tl.store(d_ptr + row, total_den, mask=mask)
        num = r * num + ev
        den = r * den + e


@triton.jit
def _bwd_right_kernel(g_ptr, y_ptr, d_ptr, v_ptr, w_ptr, u_ptr, sq_ptr, sr_ptr, sp_ptr, T, C,
                      BLOCK_C: tl.constexpr):
    """Right-to-left sums over t > i of W[t, i] q[t] (+ own term), of W q y, and
    v[i] * (distance-weighted sum of q) - (distance-weighted sum of q y)."""
    b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = offs < C
    r = tl.exp(-tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float64))
    eu = tl.exp(tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float64))
    sq = tl.zeros([BLOCK_C], dtype=tl.float64)
    sr = tl.zeros([BLOCK_C], dtype=tl.float64)
    spq = tl.zeros([BLOCK_C], dtype=tl.float64)
    spr = tl.zeros([BLOCK_C], dtype=tl.float64)
    for i in range(T):
        row = (b * T + (T - 1 - i)) * C + offs
        g = tl.load(g_ptr + row, mask=mask, other=0.0).to(tl.float64)
        yy = tl.load(y_ptr + row, mask=mask, other=0.0).to(tl.float64)
        vv = tl.load(v_ptr + row, mask=mask, other=0.0).to(tl.float64)
        q = g / tl.load(d_ptr + row, mask=mask, other=1.0)
        qy = q * yy
        tl.store(sq_ptr + row, sq + eu * q, mask=mask)
        tl.store(sr_ptr + row, sr + eu * qy, mask=mask)
        tl.store(sp_ptr + row, vv * spq - spr, mask=mask)
        spq = r * (spq + sq)
        spr = r * (spr + sr)
        sq = r * sq + q
        sr = r * sr + qy


@triton.jit
def _bwd_left_kernel(g_ptr, y_ptr, d_ptr, k_ptr, v_ptr, w_ptr, kmax_ptr, sq_ptr, sr_ptr,
                     sp_ptr, dk_ptr, dv_ptr, du_ptr, dw_ptr, T, C, BLOCK_C: tl.constexpr):
    """Left-to-right: dk, dv per element; sums for du (without the exp(u) factor) and dw."""
    b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = offs < C
    r = tl.exp(-tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float64))
    kmax = tl.load(kmax_ptr + b * C + offs, mask=mask, other=0.0)
    lq = tl.zeros([BLOCK_C], dtype=tl.float64)
    lr = tl.zeros([BLOCK_C], dtype=tl.float64)
    lpq = tl.zeros([BLOCK_C], dtype=tl.float64)
    lpr = tl.zeros([BLOCK_C], dtype=tl.float64)
    du_acc = tl.zeros([BLOCK_C], dtype=tl.float64)
    dw_acc = tl.zeros([BLOCK_C], dtype=tl.float64)
    for t in range(T):
        row = (b * T + t) * C + offs
        g = tl.load(g_ptr + row, mask=mask, other=0.0).to(tl.float64)
        yy = tl.load(y_ptr + row, mask=mask, other=0.0).to(tl.float64)
        kk = tl.load(k_ptr + row, mask=mask, other=0.0).to(tl.float64)
        vv = tl.load(v_ptr + row, mask=mask, other=0.0).to(tl.float64)
        q = g / tl.load(d_ptr + row, mask=mask, other=1.0)
        qy = q * yy
        e = tl.exp(kk - kmax)
        qsum = lq + tl.load(sq_ptr + row, mask=mask, other=0.0)
        rsum = lr + tl.load(sr_ptr + row, mask=mask, other=0.0)
        tl.store(dv_ptr + row, (e * qsum).to(dv_ptr.dtype.element_ty), mask=mask)
        tl.store(dk_ptr + row, (e * (vv * qsum - rsum)).to(dk_ptr.dtype.element_ty), mask=mask)
        du_acc += e * (q * vv - qy)
        dw_acc += e * (vv * lpq - lpr + tl.load(sp_ptr + row, mask=mask, other=0.0))
        lpq = r * (lpq + lq)
        lpr = r * (lpr + lr)
        lq = r * lq + q
        lr = r * lr + qy
    tl.store(du_ptr + b * C + offs, du_acc, mask=mask)
    tl.store(dw_ptr + b * C + offs, -dw_acc, mask=mask)


def _launch_grid(B: int, C: int, block_c: int) -> tuple[int, int]:
    return (B, triton.cdiv(C, block_c))


def _block_c(C: int) -> int:
    """Channels per program: one warp of 32 lanes (more programs, more SMs busy)."""
    return min(32, triton.next_power_of_2(max(C, 1)))


def biwkv_triton_forward(w, u, k, v):
    """Returns (y, kmax (B, 1, C), D (B, T, C), empty (B, 0, C)); k, v float32/float64."""
    B, T, C = k.shape
    k, v = k.contiguous(), v.contiguous()
    w, u = w.contiguous(), u.contiguous()
    kmax = k.amax(dim=1, keepdim=True).to(torch.float64) if T else k.new_zeros(
        (B, 1, C), dtype=torch.float64)
    y = torch.empty_like(k)
    den = torch.empty((B, T, C), dtype=torch.float64, device=k.device)
    if B * T * C:
        rnum = torch.empty_like(den)
        rden = torch.empty_like(den)
        block_c = _block_c(C)
        grid = _launch_grid(B, C, block_c)
        _fwd_right_kernel[grid](k, v, w, kmax, rnum, rden, T, C, BLOCK_C=block_c,
                           num_warps=1)
        _fwd_left_kernel[grid](k, v, w, u, kmax, rnum, rden, y, den, T, C, BLOCK_C=block_c,
                           num_warps=1)
    return y, kmax, den, k.new_empty((B, 0, C), dtype=torch.float64)


def biwkv_triton_backward(grad_y, w, u, k, v, y, kmax, den, unused):
    """Gradients (dw, du, dk, dv) of sum(grad_y * y) from the forward's saved tensors."""
    B, T, C = k.shape
    grad_y = grad_y.contiguous()
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    du = torch.zeros((B, C), dtype=torch.float64, device=k.device)
    dw = torch.zeros((B, C), dtype=torch.float64, device=k.device)
    if B * T * C:
        sq = torch.empty((B, T, C), dtype=torch.float64, device=k.device)
        sr = torch.empty_like(sq)
        sp = torch.empty_like(sq)
        block_c = _block_c(C)
        grid = _launch_grid(B, C, block_c)
        _bwd_right_kernel[grid](grad_y, y, den, v, w, u, sq, sr, sp, T, C, BLOCK_C=block_c,
                                num_warps=1)
        _bwd_left_kernel[grid](grad_y, y, den, k, v, w, kmax, sq, sr, sp, dk, dv, du, dw, T, C,
                               BLOCK_C=block_c, num_warps=1)
    eu = torch.exp(u.to(torch.float64))
    return (dw.sum(0).to(w.dtype), (eu * du.sum(0)).to(u.dtype), dk, dv)
