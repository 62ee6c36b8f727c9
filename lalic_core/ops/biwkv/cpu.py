"""Fused O(T) BiWKV forward and backward for the CPU (numba).

Algorithm (per batch item and channel; vectorised over a block of channels, parallel over
batch x channel blocks). With r = exp(-w) and e[i] = exp(k[i] - mu) for a reference mu::

    y[t] = (a[t] + c[t] + exp(u) e[t] v[t]) / (b[t] + d[t] + exp(u) e[t])

where a, b are the causal sums  a[t] = sum_{i<t} r^(t-1-i) e[i] v[i]  (b: without v), i.e. the
linear recurrence a[t] = r a[t-1] + e[t-1] v[t-1], and c, d the mirror anti-causal sums.

Numerical stability: time is cut into chunks of L tokens (L = 128 for blocks of <= 48
channels, shorter for wider blocks so that the chunk buffers stay in L2, and shorter still
when |w| is so large that r^L would leave float64's range). Each chunk j gets its own reference ("unit")
mu[j] = max(chunk max of k, log of the incoming left state, log of the incoming right state),
so every exponential is exp(x) with x <= 0 and every state is <= 1 at the chunk start
(the log-space rescaling of the official kernel, done once per chunk instead of per token).
All states are float64: compounding r in float32 over 2e5 tokens would lose ~T*eps.

Forward = two passes: over chunks right-to-left (the right state entering each chunk from
its right, as r^m * state + sum_rows r^row e v), then left-to-right (per chunk: local right
scan from that boundary state, then the left scan and the output). Rows of k, v, y are
always streamed upwards. Per element: 2 exps (branch-free polynomial, vectorised: numba's
math.exp is a scalar libm call; degree 7 for float32 inputs, 12 for float64), ~8
multiply-adds, 1 division.
Backward = the same two passes over q = dL/dy / D; it recomputes the denominator D from the
per-chunk units and boundary denominators saved by the forward (3 float64 per chunk and
channel), so the forward stores no (B, T, C) tensor besides y. The w-gradient uses the
distance-weighted recurrence P[t] = r (P[t-1] + Q[t-1]).

Accuracy (tests/test_biwkv.py): on the domain k in [-60, 60], decay and boost in [-20, 20]
(w = decay / T, u = boost / T), T <= 2e5, the outputs agree with the float64 reference to
~1e-7 (float32 inputs) and ~1e-14 (float64). Beyond it: the forward is exact for any
positive decay and for decay >= -600 (weights spanning < e^600), and finite for every w
(|w| is clamped at 200 per token); the backward is exact for any positive decay and for
decay >= -300, and may overflow below (its carried sums are kept in the forward's units).

Threads: numba's, limited to torch.get_num_threads(), on numba's "workqueue" layer (its
default "omp" layer shares torch's OpenMP runtime: the two thread teams then spin against each
other and every small torch op ran ~100x slower after the first BiWKV call on 2 cores).
Work items are (batch item, block of channels); the block (:func:`_channel_block`), and so
the chunk length and every rounding, depends on nothing but C: results are bit-identical for any
thread count and batch size, which an entropy decoder needs (a decoder running on other
threads than its encoder must compute the very same scales).
"""
from __future__ import annotations

import math

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload


def _prefer_workqueue_threads() -> None:
    """Select numba's "workqueue" threading layer (see the module docstring). Effective only
    before numba's first parallel launch; an explicit ``NUMBA_THREADING_LAYER`` or
    ``numba.config.THREADING_LAYER`` set by the user wins."""
    import os

    if "NUMBA_THREADING_LAYER" not in os.environ and numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER = "workqueue"


_prefer_workqueue_threads()

#: Work items per batch item: the channels are split in this many blocks (multiples of 8
#: channels, one float32 vector, at most :data:`MAX_CHANNEL_BLOCK`). Derived from C alone, never
#: from the thread count, so that results never depend on the number of threads. Two items
#: keep 2 cores busy at B = 1; measured at (T, C) = (98304, 96), 2 threads: 48-channel blocks
#: ran at 2.0x the elementwise floor against 2.7x for 24-channel blocks.
BLOCKS_PER_ITEM = 2
MAX_CHANNEL_BLOCK = 128
#: Longest chunk (tokens): states are renormalised and boundary states stored once per chunk.
#: Long chunks stream k and v in longer bursts (faster once they leave the caches) ...
CHUNK = 128
#: ... but a chunk's float64 buffers (chunk length x channels of a work item) must stay in L2.
_CHUNK_BUFFER_ELEMENTS = 128 * 48
#: Largest |w| * L allowed inside one chunk (keeps r^L and 1/r^L far inside float64).
_MAX_LOG_GROWTH = 200.0
#: |w| is clamped here (per token); beyond it neighbouring weights differ by > e^200 anyway.
MAX_ABS_W = 200.0

# fastmath without 'nnan'/'ninf' (running maxima start at -inf); 'error_model=numpy': no
# zero-division checks, which would stop LLVM from vectorising the divisions.
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
_JIT = {"nogil": True, "cache": True, "fastmath": _FASTMATH, "error_model": "numpy"}

__all__ = ["biwkv_cpu_backward", "biwkv_cpu_forward", "chunk_length"]


@intrinsic
def _int64_bits_as_float64(typingctx, bits):
    """Reinterpret the bits of an int64 as a float64 (vectorises, unlike math.ldexp)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


_LOG2E = 1.4426950408889634
_LN2_HI = 0.693145751953125  # ln 2 split for exact range reduction (Cody-Waite)
_LN2_LO = 1.4286068203094173e-06


@njit(inline="always", **_JIT)
def _exp_reduced(x):
    """Range reduction x = n ln2 + f, |f| <= ln2/2 (Cody-Waite: exact); x clamped to
    [-708, 709]. Returns (f, 2^n), 2^n assembled in the exponent bits (vectorises)."""
    x = min(max(x, -708.0), 709.0)
    n = math.floor(x * _LOG2E + 0.5)
    f = (x - n * _LN2_HI) - n * _LN2_LO
    return f, _int64_bits_as_float64((np.int64(n) + 1023) << 52)


@njit(inline="always", **_JIT)
def _exp(x):
    """exp(x) in float64 to ~1 ulp, branch-free so that LLVM vectorises it (numba's
    math.exp is a scalar libm call): degree-12 Taylor polynomial on the reduced range
    (truncation error < 2e-16 relative)."""
    f, scale = _exp_reduced(x)
    p = 1.0 / 479001600.0
    p = p * f + 1.0 / 39916800.0
    p = p * f + 1.0 / 3628800.0
    p = p * f + 1.0 / 362880.0
    p = p * f + 1.0 / 40320.0
    p = p * f + 1.0 / 5040.0
    p = p * f + 1.0 / 720.0
    p = p * f + 1.0 / 120.0
    p = p * f + 1.0 / 24.0
    p = p * f + 1.0 / 6.0
    p = p * f + 0.5
    p = p * f + 1.0
    p = p * f + 1.0
    return p * scale


@njit(inline="always", **_JIT)
def _exp_single(x):
    """exp(x) to float32 accuracy (degree-7 polynomial: truncation error < 6e-9 relative),
    used when the inputs are float32."""
    f, scale = _exp_reduced(x)
    p = 1.0 / 5040.0
    p = p * f + 1.0 / 720.0
    p = p * f + 1.0 / 120.0
    p = p * f + 1.0 / 24.0
    p = p * f + 1.0 / 6.0
    p = p * f + 0.5
    p = p * f + 1.0
    p = p * f + 1.0
    return p * scale


def _exp_like(x, inputs):
    """exp(x) at the precision of the ``inputs`` array's dtype (chosen at compile time)."""
    raise NotImplementedError  # only callable from numba-compiled code


@overload(_exp_like, inline="always", jit_options={"fastmath": _FASTMATH, "error_model": "numpy"})
def _exp_like_impl(x, inputs):
    if getattr(inputs, "dtype", None) == types.float32:
        return lambda x, inputs: _exp_single(x)
    return lambda x, inputs: _exp(x)


@intrinsic
def _float64_bits_as_int64(typingctx, x):
    """Reinterpret the bits of a float64 as an int64."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@njit(inline="always", **_JIT)
def _log_scale(x):
    """ln(2) * floor(log2(x)) for normal x > 0 (read from its exponent bits); -709 for x = 0.

    Chunk units only need the order of magnitude of a state; reading the exponent bits
    vectorises, math.log does not.
    """
    exponent = ((_float64_bits_as_int64(x) >> 52) & 0x7FF) - 1023
    return np.float64(exponent) * 0.6931471805599453


@njit(**_JIT)
def _forward_block(k, v, r, eu, b, c0, c1, n_chunks, y, unit_s, left_den_s, right_den_s,
                   chunk_max_s, right_num_s, right_scale_s):
    """Forward for batch item b and channels c0:c1 (see the module docstring).

    Rows of k, v and y are always read upwards within a chunk, and rows of the chunk
    buffers are visited downwards through an index array (`down`): with an affine
    descending row pointer LLVM's hoisted alias check fails and the loop would run scalar.
    """
    T = k.shape[1]
    L = (T + n_chunks - 1) // n_chunks
    n = c1 - c0
    rr = r[c0:c1]
    eu_ = eu[c0:c1]
    down = np.arange(L - 1, -1, -1)

    # ---- pass 1, right to left: right states at chunk ends, in each chunk's own unit ----
    num = np.zeros(n)
    den = np.zeros(n)
    scale = np.zeros(n)  # log-scale of (num, den)
    cmax = np.empty(n)
    acc_num = np.empty(n)
    acc_den = np.empty(n)
    power = np.empty(n)
    for j in range(n_chunks - 1, -1, -1):
        t0 = j * L
        t1 = min(T, t0 + L)
        cmax[:] = -np.inf
        for t in range(t0, t1):
            kr = k[b, t, c0:c1]
            for c in range(n):
                cmax[c] = max(cmax[c], kr[c])
        for c in range(n):  # new unit: max(chunk max of k, log of the carried state)
            s = max(cmax[c], scale[c] + _log_scale(den[c]))
            f = _exp(scale[c] - s) if den[c] > 0.0 else 0.0
            num[c] *= f
            den[c] *= f
            scale[c] = s
        chunk_max_s[b, j, c0:c1] = cmax
        right_num_s[b, j, c0:c1] = num
        right_den_s[b, j, c0:c1] = den
        right_scale_s[b, j, c0:c1] = scale
        # state before the chunk = r^m * state after it + sum_rows r^row e v (rows upwards)
        acc_num[:] = 0.0
        acc_den[:] = 0.0
        power[:] = 1.0
        for t in range(t0, t1):
            kr = k[b, t, c0:c1]
            vr = v[b, t, c0:c1]
            for c in range(n):
                e = power[c] * _exp_like(kr[c] - scale[c], k)
                acc_num[c] += e * vr[c]
                acc_den[c] += e
                power[c] *= rr[c]
        for c in range(n):
            num[c] = power[c] * num[c] + acc_num[c]
            den[c] = power[c] * den[c] + acc_den[c]

    # ---- pass 2, left to right: per chunk, local right scan, then left scan and output ----
    e_buf = np.empty((L, n))
    ev_buf = np.empty((L, n))
    rnum_buf = np.empty((L, n))  # right numerator + own term, per token of the chunk
    rden_buf = np.empty((L, n))
    lnum = np.zeros(n)
    lden = np.zeros(n)
    unit = np.zeros(n)  # the chunk's unit; the left state is kept in it
    rnum = np.empty(n)
    rden = np.empty(n)
    rscale = np.empty(n)
    for j in range(n_chunks):
        t0 = j * L
        m = min(T, t0 + L) - t0
        cmax[:] = chunk_max_s[b, j, c0:c1]
        rnum[:] = right_num_s[b, j, c0:c1]
        rden[:] = right_den_s[b, j, c0:c1]
        rscale[:] = right_scale_s[b, j, c0:c1]
        for c in range(n):  # chunk unit: max(chunk max of k, logs of both carried states)
            s = max(cmax[c], unit[c] + _log_scale(lden[c]), rscale[c] + _log_scale(rden[c]))
            fl = _exp(unit[c] - s) if lden[c] > 0.0 else 0.0
            fr = _exp(rscale[c] - s) if rden[c] > 0.0 else 0.0
            lnum[c] *= fl
            lden[c] *= fl
            rnum[c] *= fr
            rden[c] *= fr
            unit[c] = s
        unit_s[b, j, c0:c1] = unit
        left_den_s[b, j, c0:c1] = lden
        right_den_s[b, j, c0:c1] = rden
        for row in range(m):
            kr = k[b, t0 + row, c0:c1]
            vr = v[b, t0 + row, c0:c1]
            er = e_buf[row]
            evr = ev_buf[row]
            for c in range(n):
                e = _exp_like(kr[c] - unit[c], k)
                er[c] = e
                evr[c] = e * vr[c]
        for i in range(L - m, L):
            row = down[i]
            er = e_buf[row]
            evr = ev_buf[row]
            rn = rnum_buf[row]
            rd = rden_buf[row]
            for c in range(n):
                rn[c] = rnum[c] + eu_[c] * evr[c]
                rd[c] = rden[c] + eu_[c] * er[c]
                rnum[c] = rr[c] * rnum[c] + evr[c]
                rden[c] = rr[c] * rden[c] + er[c]
        for row in range(m):
            er = e_buf[row]
            evr = ev_buf[row]
            rn = rnum_buf[row]
            rd = rden_buf[row]
            yr = y[b, t0 + row, c0:c1]
            for c in range(n):
                yr[c] = (lnum[c] + rn[c]) / (lden[c] + rd[c])
                lnum[c] = rr[c] * lnum[c] + evr[c]
                lden[c] = rr[c] * lden[c] + er[c]


@njit(parallel=True, **_JIT)
def _forward_kernel(k, v, r, eu, n_chunks, block, y, unit_s, left_den_s, right_den_s):
    B, _, C = k.shape
    n_blocks = (C + block - 1) // block
    chunk_max_s = np.empty((B, n_chunks, C))
    right_num_s = np.empty((B, n_chunks, C))
    right_scale_s = np.empty((B, n_chunks, C))
    for item in prange(B * n_blocks):
        b = item // n_blocks
        c0 = (item % n_blocks) * block
        c1 = min(C, c0 + block)
        _forward_block(k, v, r, eu, b, c0, c1, n_chunks, y, unit_s, left_den_s, right_den_s,
                       chunk_max_s, right_num_s, right_scale_s)


@njit(**_JIT)
def _chunk_q(k, y, g, b, c0, c1, t0, m, unit, rr, eu_, left_den, right_den,
             e_buf, q_buf, qy_buf, rden_buf):
    """For the m tokens of the chunk starting at t0: e = exp(k - unit), and q = g / D and
    q * y, with D recomputed by local scans from the chunk's boundary denominators."""
    n = c1 - c0
    for row in range(m):
        kr = k[b, t0 + row, c0:c1]
        er = e_buf[row]
        for c in range(n):
            er[c] = _exp_like(kr[c] - unit[c], k)
    L = e_buf.shape[0]
    down = np.arange(L - 1, -1, -1)  # see _forward_block
    rden = right_den.copy()
    for i in range(L - m, L):
        row = down[i]
        er = e_buf[row]
        rd = rden_buf[row]
        for c in range(n):
            rd[c] = rden[c] + eu_[c] * er[c]
            rden[c] = rr[c] * rden[c] + er[c]
    lden = left_den.copy()
    for row in range(m):
        er = e_buf[row]
        rd = rden_buf[row]
        gr = g[b, t0 + row, c0:c1]
        yr = y[b, t0 + row, c0:c1]
        qr = q_buf[row]
        qyr = qy_buf[row]
        for c in range(n):
            q = gr[c] / (lden[c] + rd[c])
            qr[c] = q
            qyr[c] = q * yr[c]
            lden[c] = rr[c] * lden[c] + er[c]


@njit(**_JIT)
def _backward_block(k, v, y, g, r, eu, b, c0, c1, unit_s, left_den_s, right_den_s,
                    dk, dv, du, dw, bq_s, br_s, bpq_s, bpr_s):
    """Backward for batch item b and channels c0:c1 (same chunking and memory order as
    the forward). Sums over t of W[t, i] q[t] (Q), q[t] y[t] (R) and their distance-weighted
    versions (PQ, PR) are carried in the unit of the current chunk."""
    T = k.shape[1]
    n_chunks = unit_s.shape[1]
    L = (T + n_chunks - 1) // n_chunks
    n = c1 - c0
    rr = r[c0:c1]
    eu_ = eu[c0:c1]
    down = np.arange(L - 1, -1, -1)
    e_buf = np.empty((L, n))
    q_buf = np.empty((L, n))
    qy_buf = np.empty((L, n))
    tmp_buf = np.empty((L, n))
    unit = np.empty(n)
    other_unit = np.empty(n)  # unit of the chunk the carried states come from

    # ---- pass 1, right to left: right sums at chunk ends ----
    sq = np.zeros(n)
    sr = np.zeros(n)
    spq = np.zeros(n)
    spr = np.zeros(n)
    for j in range(n_chunks - 1, -1, -1):
        t0 = j * L
        m = min(T, t0 + L) - t0
        unit[:] = unit_s[b, j, c0:c1]
        if j < n_chunks - 1:
            other_unit[:] = unit_s[b, j + 1, c0:c1]
            for c in range(n):
                f = _exp(unit[c] - other_unit[c])
                sq[c] *= f
                sr[c] *= f
                spq[c] *= f
                spr[c] *= f
        bq_s[b, j, c0:c1] = sq
        br_s[b, j, c0:c1] = sr
        bpq_s[b, j, c0:c1] = spq
        bpr_s[b, j, c0:c1] = spr
        _chunk_q(k, y, g, b, c0, c1, t0, m, unit, rr, eu_, left_den_s[b, j, c0:c1],
                 right_den_s[b, j, c0:c1], e_buf, q_buf, qy_buf, tmp_buf)
        for i in range(L - m, L):
            row = down[i]
            qr = q_buf[row]
            qyr = qy_buf[row]
            for c in range(n):
                spq[c] = rr[c] * (spq[c] + sq[c])
                spr[c] = rr[c] * (spr[c] + sr[c])
                sq[c] = rr[c] * sq[c] + qr[c]
                sr[c] = rr[c] * sr[c] + qyr[c]

    # ---- pass 2, left to right: local right sums, then left sums and the gradients ----
    rq_buf = np.empty((L, n))  # right sum of q + own term
    rr_buf = np.empty((L, n))  # right sum of q*y + own term
    rp_buf = tmp_buf  # v * (distance-weighted right sum of q) - (... of q*y)
    lq = np.zeros(n)
    lr = np.zeros(n)
    lpq = np.zeros(n)
    lpr = np.zeros(n)
    du_acc = np.zeros(n)
    dw_acc = np.zeros(n)
    for j in range(n_chunks):
        t0 = j * L
        m = min(T, t0 + L) - t0
        unit[:] = unit_s[b, j, c0:c1]
        if j > 0:
            other_unit[:] = unit_s[b, j - 1, c0:c1]
            for c in range(n):
                f = _exp(unit[c] - other_unit[c])
                lq[c] *= f
                lr[c] *= f
                lpq[c] *= f
                lpr[c] *= f
        _chunk_q(k, y, g, b, c0, c1, t0, m, unit, rr, eu_, left_den_s[b, j, c0:c1],
                 right_den_s[b, j, c0:c1], e_buf, q_buf, qy_buf, tmp_buf)
        sq[:] = bq_s[b, j, c0:c1]
        sr[:] = br_s[b, j, c0:c1]
        spq[:] = bpq_s[b, j, c0:c1]
        spr[:] = bpr_s[b, j, c0:c1]
        for i in range(L - m, L):
            row = down[i]
            qr = q_buf[row]
            qyr = qy_buf[row]
            vb = v[b, t0 + row, c0:c1]
            a = rq_buf[row]
            a2 = rr_buf[row]
            a3 = rp_buf[row]
            for c in range(n):
                a[c] = sq[c] + eu_[c] * qr[c]
                a2[c] = sr[c] + eu_[c] * qyr[c]
                a3[c] = vb[c] * spq[c] - spr[c]
                spq[c] = rr[c] * (spq[c] + sq[c])
                spr[c] = rr[c] * (spr[c] + sr[c])
                sq[c] = rr[c] * sq[c] + qr[c]
                sr[c] = rr[c] * sr[c] + qyr[c]
        for row in range(m):
            er = e_buf[row]
            vb = v[b, t0 + row, c0:c1]
            qr = q_buf[row]
            qyr = qy_buf[row]
            a = rq_buf[row]
            a2 = rr_buf[row]
            a3 = rp_buf[row]
            dkr = dk[b, t0 + row, c0:c1]
            dvr = dv[b, t0 + row, c0:c1]
            for c in range(n):
                e = er[c]
                vv = vb[c]
                qsum = lq[c] + a[c]
                dvr[c] = e * qsum
                dkr[c] = e * (vv * qsum - (lr[c] + a2[c]))
                du_acc[c] += e * (qr[c] * vv - qyr[c])
                dw_acc[c] += e * (vv * lpq[c] - lpr[c] + a3[c])
                lpq[c] = rr[c] * (lpq[c] + lq[c])
                lpr[c] = rr[c] * (lpr[c] + lr[c])
                lq[c] = rr[c] * lq[c] + qr[c]
                lr[c] = rr[c] * lr[c] + qyr[c]
    du[b, c0:c1] = eu_ * du_acc
    dw[b, c0:c1] = -dw_acc


@njit(parallel=True, **_JIT)
def _backward_kernel(k, v, y, g, r, eu, block, unit_s, left_den_s, right_den_s, dk, dv, du, dw):
    B, _, C = k.shape
    n_chunks = unit_s.shape[1]
    n_blocks = (C + block - 1) // block
    bq_s = np.empty((B, n_chunks, C))
    br_s = np.empty((B, n_chunks, C))
    bpq_s = np.empty((B, n_chunks, C))
    bpr_s = np.empty((B, n_chunks, C))
    for item in prange(B * n_blocks):
        b = item // n_blocks
        c0 = (item % n_blocks) * block
        c1 = min(C, c0 + block)
        _backward_block(k, v, y, g, r, eu, b, c0, c1, unit_s, left_den_s, right_den_s,
                        dk, dv, du, dw, bq_s, br_s, bpq_s, bpr_s)


def chunk_length(w: torch.Tensor, channels: int) -> int:
    """Chunk length: a power of two <= CHUNK whose buffers for ``channels`` channels fit in
    L2, halved further while |w| * L could push r^L out of float64's range."""
    w_max = float(w.detach().abs().max()) if w.numel() else 0.0
    w_max = min(w_max, MAX_ABS_W)
    L = CHUNK
    while L > 16 and L * channels > _CHUNK_BUFFER_ELEMENTS:
        L //= 2
    while L > 1 and w_max * L > _MAX_LOG_GROWTH:
        L //= 2
    return L


def _channel_block(B: int, C: int) -> int:
    """Channels per work item, from C alone (see :data:`BLOCKS_PER_ITEM`); B is not used:
    results must not depend on the batch size or the thread count either."""
    block = -(-C // BLOCKS_PER_ITEM)
    block = -(-block // 8) * 8
    return max(8, min(block, MAX_CHANNEL_BLOCK))


def _as_numpy(x: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    return x.detach().to(device="cpu", dtype=dtype).contiguous().numpy()


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _decay_and_boost(w: torch.Tensor, u: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    w64 = w.detach().to(device="cpu", dtype=torch.float64).clamp(-MAX_ABS_W, MAX_ABS_W)
    u64 = u.detach().to(device="cpu", dtype=torch.float64)
    return torch.exp(-w64).numpy(), torch.exp(u64).numpy()


def _use_torch_thread_count() -> None:
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def biwkv_cpu_forward(w, u, k, v):
    """Forward on CPU (tensors on other devices are copied to the CPU and back).
    Returns (y, unit, left_den, right_den); the last three, of shape (B, n_chunks, C)
    float64, are what the backward needs besides y."""
    _use_torch_thread_count()
    B, T, C = k.shape
    dtype = _compute_dtype(k.dtype)
    k_np, v_np = _as_numpy(k, dtype), _as_numpy(v, dtype)
    r, eu = _decay_and_boost(w, u)
    block = _channel_block(B, C)
    n_chunks = -(-T // chunk_length(w, block)) if T else 0
    y = np.empty_like(k_np)
    unit = np.empty((B, n_chunks, C))
    left_den = np.empty((B, n_chunks, C))
    right_den = np.empty((B, n_chunks, C))
    if B * T * C:
        _forward_kernel(k_np, v_np, r, eu, n_chunks, block, y, unit, left_den,
                        right_den)
    out = [torch.from_numpy(x) for x in (y, unit, left_den, right_den)]
    out[0] = out[0].to(k.dtype)
    return tuple(x.to(k.device) for x in out)


def biwkv_cpu_backward(grad_y, w, u, k, v, y, unit, left_den, right_den):
    """Gradients (dw, du, dk, dv) of sum(grad_y * y), from the forward's saved tensors."""
    _use_torch_thread_count()
    B, T, C = k.shape
    dtype = _compute_dtype(k.dtype)
    k_np, v_np, y_np, g_np = (_as_numpy(x, dtype) for x in (k, v, y, grad_y))
    r, eu = _decay_and_boost(w, u)
    dk = np.empty_like(k_np)
    dv = np.empty_like(k_np)
    du = np.zeros((B, C))
    dw = np.zeros((B, C))
    if B * T * C:
        _backward_kernel(k_np, v_np, y_np, g_np, r, eu, _channel_block(B, C),
                         *(_as_numpy(x, torch.float64) for x in (unit, left_den, right_den)),
                         dk, dv, du, dw)
    dw_t = torch.from_numpy(dw).sum(0)
    # |w| is clamped at MAX_ABS_W: no gradient flows through the clamp
    dw_t = torch.where(w.detach().cpu().abs() > MAX_ABS_W, 0.0, dw_t)
    grads = (
        dw_t.to(w.dtype),
        torch.from_numpy(du).sum(0).to(u.dtype),
        torch.from_numpy(dk).to(k.dtype),
        torch.from_numpy(dv).to(v.dtype),
    )
    return tuple(x.to(k.device) for x in grads)
