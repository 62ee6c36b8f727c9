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

Official semantics (``chunks`` = 32 or 64; :mod:`.naive` defines them): separate kernels,
per (batch item, channel) in float64 with one unit per column (the max of k over T, so every
exp(k - unit) <= 1) and plain recurrences: a chunk-local left sum, the sum over earlier chunks
(joined at each chunk start one decay step further), the right sum, and the chunk-local sum
carrying the (1 - e^w) terms; plus the kernel's tracked maximum for its epsilon, whose key
and w multiplier are saved so that the backward (the adjoint of these recurrences) sends the
epsilon's gradient to that key. Exact (~1e-14 relative against the reference) while the
range of k plus |w| T stays well inside float64's exponent range (~700; the domain
|k| <= 60, |w| T <= 20 uses < 140); |w| is not clamped on this path.

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

__all__ = ["biwkv_cpu_backward", "biwkv_cpu_forward", "chunk_length", "official_chunk_length"]


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


# ----------------------------------------------------------------------------------------
# official semantics (the official chunked CUDA kernels in exact arithmetic, naive.py)
# ----------------------------------------------------------------------------------------
#: The official kernels add this to their max-rescaled denominator (naive.EPS).
OFFICIAL_EPS = 1e-6


@njit(**_JIT)
def _official_forward_block(k, v, w, u, L, b, c0, c1, y, den_s, argj_s, argm_s):
    """Official-semantics forward for batch item b, channels c0:c1, chunks of L tokens.

    With x = exp(k - mu) (times v for the numerator; mu = max of k over T, so x <= 1):
    left sum = P + S, S[t] = sum_{s<=i<t} r^(t-1-i) x[i] over the chunk (r = e^-w) and
    P[t] = sum_{i<s} r^(t-i) x[i] over the chunks before (P += r S at each chunk start), right sum
    R[t] = sum_{i>t} r^(i-t) x[i], and the chunk-local Z[t] = sum_{s<i<=t} g^(t-i) x[i]
    (g = e^w) that carries the (1 - e^w) terms. The kernel's tracked maximum M[t] is kept as
    (value, key index j, multiplier m) with value = k[j] + w m (j = -1: the own u + k[t]),
    so that the backward can send the epsilon's gradient to the right key."""
    T = k.shape[1]
    n = c1 - c0
    n_chunks = (T + L - 1) // L
    mu = np.full(n, -np.inf)
    for t in range(T):
        for c in range(n):
            mu[c] = max(mu[c], k[b, t, c0 + c])
    # ---- right to left: R (numerator, denominator) and the tracked maximum at chunk starts
    r_num = np.empty((T, n))
    r_den = np.empty((T, n))
    start_val = np.empty((n_chunks, n))
    start_j = np.empty((n_chunks, n), dtype=np.int64)
    start_m = np.empty((n_chunks, n), dtype=np.int64)
    an = np.zeros(n)
    ad = np.zeros(n)
    mv = np.full(n, -np.inf)
    mj = np.zeros(n, dtype=np.int64)
    mm = np.zeros(n, dtype=np.int64)
    for t in range(T - 1, -1, -1):
        for c in range(n):
            cc = c0 + c
            r = math.exp(-w[cc])
            r_num[t, c] = an[c]
            r_den[t, c] = ad[c]
            kk = k[b, t, cc]
            e = math.exp(kk - mu[c])
            an[c] = r * (an[c] + e * v[b, t, cc])
            ad[c] = r * (ad[c] + e)
            if kk > mv[c] - w[cc]:  # max over i >= t of k[i] - w (i - t)
                mv[c], mj[c], mm[c] = kk, t, 0
            else:
                mv[c], mm[c] = mv[c] - w[cc], mm[c] - 1
        if t % L == 0:
            start_val[t // L] = mv
            start_j[t // L] = mj
            start_m[t // L] = mm
    # ---- left to right: P, S, Z, the tracked maxima, output
    pn = np.zeros(n)
    pd = np.zeros(n)
    sn = np.zeros(n)
    sd = np.zeros(n)
    zn = np.zeros(n)
    zd = np.zeros(n)
    lv = np.full(n, -np.inf)  # left tracked maximum over the keys before the chunk ...
    lj = np.zeros(n, dtype=np.int64)
    lm = np.zeros(n, dtype=np.int64)
    cv = np.full(n, -np.inf)  # ... and over the chunk's keys before t
    cj = np.zeros(n, dtype=np.int64)
    cm = np.zeros(n, dtype=np.int64)
    ov = np.empty(n)  # right tracked maximum of the kernel's (c, d) state
    oj = np.zeros(n, dtype=np.int64)
    om = np.zeros(n, dtype=np.int64)
    for t in range(T):
        chunk_start = t % L == 0
        for c in range(n):
            cc = c0 + c
            wc = w[cc]
            r = math.exp(-wc)
            g = math.exp(wc)
            kk = k[b, t, cc]
            vv = v[b, t, cc]
            e = math.exp(kk - mu[c])
            ev = e * vv
            if chunk_start:
                if t > 0:  # the chunk's keys join the keys before it, one step further
                    pn[c] += r * sn[c]
                    pd[c] += r * sd[c]
                    sn[c] = 0.0
                    sd[c] = 0.0
                    if cv[c] - wc > lv[c]:
                        lv[c], lj[c], lm[c] = cv[c] - wc, cj[c], cm[c] - 1
                    cv[c] = -np.inf
                zn[c] = 0.0
                zd[c] = 0.0
                j = t // L
                ov[c], oj[c], om[c] = start_val[j, c], start_j[j, c], start_m[j, c]
            else:
                zn[c] = g * zn[c] + ev
                zd[c] = g * zd[c] + e
                if kk + wc > ov[c] + wc:
                    ov[c], oj[c], om[c] = kk + wc, t, 1
                else:
                    ov[c], om[c] = ov[c] + wc, om[c] + 1
            best, bj, bm = ov[c], oj[c], om[c]
            if u[cc] + kk > best:
                best, bj, bm = u[cc] + kk, -1, 0
            if lv[c] > best:
                best, bj, bm = lv[c], lj[c], lm[c]
            if cv[c] > best:
                best, bj, bm = cv[c], cj[c], cm[c]
            eu = math.exp(u[cc])
            num = pn[c] + sn[c] + r_num[t, c] + eu * ev + (1.0 - g) * zn[c]
            den = (pd[c] + sd[c] + r_den[t, c] + eu * e + (1.0 - g) * zd[c]
                   + OFFICIAL_EPS * math.exp(best - mu[c]))
            y[b, t, cc] = num / den
            den_s[b, t, cc] = den
            argj_s[b, t, cc] = bj
            argm_s[b, t, cc] = bm
            pn[c] *= r
            pd[c] *= r
            sn[c] = r * sn[c] + ev
            sd[c] = r * sd[c] + e
            lv[c], lm[c] = lv[c] - wc, lm[c] - 1
            if kk > cv[c] - wc:
                cv[c], cj[c], cm[c] = kk, t, 0
            else:
                cv[c], cm[c] = cv[c] - wc, cm[c] - 1


@njit(parallel=True, **_JIT)
def _official_forward_kernel(k, v, w, u, L, block, y, den_s, argj_s, argm_s):
    B, _, C = k.shape
    n_blocks = (C + block - 1) // block
    for item in prange(B * n_blocks):
        b = item // n_blocks
        c0 = (item % n_blocks) * block
        _official_forward_block(k, v, w, u, L, b, c0, min(C, c0 + block), y, den_s, argj_s,
                                argm_s)


@njit(**_JIT)
def _official_backward_block(k, v, y, gy, w, u, L, b, c0, c1, den_s, argj_s, argm_s,
                             dk, dv, du, dw):
    """Official-semantics backward for batch item b, channels c0:c1: the adjoint of the
    forward's three recurrences, run twice (x = e v against q = dL/dy / D, and x = e against
    p = -q y), from their stored states; then the epsilon term's gradient, which goes to the
    key (and w multiplier) of the tracked maximum."""
    T = k.shape[1]
    n = c1 - c0
    mu = np.full(n, -np.inf)
    for t in range(T):
        for c in range(n):
            mu[c] = max(mu[c], k[b, t, c0 + c])
    ex = np.empty((2, T, n))  # the two x's: e v and e
    h = np.empty((2, T, n))  # their adjoints: q and p
    for t in range(T):
        for c in range(n):
            cc = c0 + c
            e = math.exp(k[b, t, cc] - mu[c])
            ex[0, t, c] = e * v[b, t, cc]
            ex[1, t, c] = e
            q = gy[b, t, cc] / den_s[b, t, cc]
            h[0, t, c] = q
            h[1, t, c] = -q * y[b, t, cc]
    p_pre = np.empty((2, T, n))  # P and S used at t (see the forward)
    s_pre = np.empty((2, T, n))
    z = np.empty((2, T, n))
    r_pre = np.empty((2, T, n))
    xh = np.zeros((2, T, n))  # adjoints of the two x's
    dw_acc = np.zeros(n)
    du_acc = np.zeros(n)
    state = np.zeros((3, n))
    for a in range(2):  # forward states again
        state[:] = 0.0
        for t in range(T):
            for c in range(n):
                r = math.exp(-w[c0 + c])
                if t % L == 0 and t > 0:
                    state[2, c] += r * state[0, c]
                    state[0, c] = 0.0
                s_pre[a, t, c] = state[0, c]
                p_pre[a, t, c] = state[2, c]
                state[0, c] = r * state[0, c] + ex[a, t, c]
                state[2, c] *= r
                g = math.exp(w[c0 + c])
                state[1, c] = 0.0 if t % L == 0 else g * state[1, c] + ex[a, t, c]
                z[a, t, c] = state[1, c]
        state[:] = 0.0
        for t in range(T - 1, -1, -1):
            for c in range(n):
                r_pre[a, t, c] = state[0, c]
                state[0, c] = math.exp(-w[c0 + c]) * (state[0, c] + ex[a, t, c])
    for a in range(2):  # adjoints: left and chunk-local parts right to left
        state[:] = 0.0
        for t in range(T - 1, -1, -1):
            for c in range(n):
                cc = c0 + c
                r = math.exp(-w[cc])
                g = math.exp(w[cc])
                eu = math.exp(u[cc])
                ht = h[a, t, c]
                # left: chunk start: P += r S, S = 0; out += P + S; P = r P, S = r S + x
                xh[a, t, c] += state[0, c]
                dw_acc[c] -= r * (state[0, c] * s_pre[a, t, c] + state[2, c] * p_pre[a, t, c])
                state[0, c] = r * state[0, c] + ht
                state[2, c] = r * state[2, c] + ht
                if t % L == 0 and t > 0:  # S before the reset: r S[t-1] + x[t-1]
                    s_end = r * s_pre[a, t - 1, c] + ex[a, t - 1, c]
                    dw_acc[c] -= state[2, c] * r * s_end
                    state[0, c] = r * state[2, c]
                # own and chunk-local: out += e^u x + (1 - g) Z; Z = g Z + x (0 at chunk start)
                xh[a, t, c] += eu * ht
                du_acc[c] += eu * ht * ex[a, t, c]
                dw_acc[c] -= g * ht * z[a, t, c]
                state[1, c] += (1.0 - g) * ht
                if t % L == 0:
                    state[1, c] = 0.0
                else:
                    dw_acc[c] += g * state[1, c] * z[a, t - 1, c]
                    xh[a, t, c] += state[1, c]
                    state[1, c] *= g
        state[:] = 0.0
        for t in range(T):  # right: out += R; R = r (R + x)
            for c in range(n):
                r = math.exp(-w[c0 + c])
                dw_acc[c] -= r * state[0, c] * (r_pre[a, t, c] + ex[a, t, c])
                state[0, c] *= r
                xh[a, t, c] += state[0, c]
                state[0, c] += h[a, t, c]
    for t in range(T):
        for c in range(n):
            cc = c0 + c
            e = ex[1, t, c]
            dv[b, t, cc] = e * xh[0, t, c]
            dk[b, t, cc] = e * (v[b, t, cc] * xh[0, t, c] + xh[1, t, c])
    for t in range(T):  # epsilon * exp(M[t]): M[t] = k[j] + w m, or u + k[t]
        for c in range(n):
            cc = c0 + c
            j = np.int64(argj_s[b, t, cc])
            m = argm_s[b, t, cc]
            if j < 0:
                exponent = u[cc] + k[b, t, cc]
                j = t
            else:
                exponent = k[b, j, cc] + w[cc] * m
            grad = h[1, t, c] * OFFICIAL_EPS * math.exp(exponent - mu[c])
            dk[b, j, cc] += grad
            if argj_s[b, t, cc] < 0:
                du_acc[c] += grad
            else:
                dw_acc[c] += grad * m
    for c in range(n):
        du[b, c0 + c] = du_acc[c]
        dw[b, c0 + c] = dw_acc[c]


@njit(parallel=True, **_JIT)
def _official_backward_kernel(k, v, y, gy, w, u, L, block, den_s, argj_s, argm_s,
                              dk, dv, du, dw):
    B, _, C = k.shape
    n_blocks = (C + block - 1) // block
    for item in prange(B * n_blocks):
        b = item // n_blocks
        c0 = (item % n_blocks) * block
        _official_backward_block(k, v, y, gy, w, u, L, b, c0, min(C, c0 + block), den_s,
                                 argj_s, argm_s, dk, dv, du, dw)


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


def official_chunk_length(T: int, chunks: int) -> int:
    """Tokens per chunk of the official kernels: ceil(T / chunks)."""
    return max(1, -(-T // chunks))


def _official_forward(w, u, k, v, chunks):
    B, T, C = k.shape
    dtype = _compute_dtype(k.dtype)
    k_np, v_np = _as_numpy(k, dtype), _as_numpy(v, dtype)
    w_np, u_np = _as_numpy(w, torch.float64), _as_numpy(u, torch.float64)
    y = np.empty_like(k_np)
    den, argj, argm = (np.empty((B, T, C)) for _ in range(3))
    if B * T * C:
        _official_forward_kernel(k_np, v_np, w_np, u_np, official_chunk_length(T, chunks),
                                 _channel_block(B, C), y, den, argj, argm)
    out = [torch.from_numpy(x) for x in (y, den, argj, argm)]
    out[0] = out[0].to(k.dtype)
    return tuple(x.to(k.device) for x in out)


def _official_backward(grad_y, w, u, k, v, y, den, argj, argm, chunks):
    B, T, C = k.shape
    dtype = _compute_dtype(k.dtype)
    k_np, v_np, y_np, g_np = (_as_numpy(x, dtype) for x in (k, v, y, grad_y))
    w_np, u_np = _as_numpy(w, torch.float64), _as_numpy(u, torch.float64)
    dk = np.empty_like(k_np)
    dv = np.empty_like(k_np)
    du = np.zeros((B, C))
    dw = np.zeros((B, C))
    if B * T * C:
        _official_backward_kernel(k_np, v_np, y_np, g_np, w_np, u_np,
                                  official_chunk_length(T, chunks), _channel_block(B, C),
                                  *(_as_numpy(x, torch.float64) for x in (den, argj, argm)),
                                  dk, dv, du, dw)
    grads = (
        torch.from_numpy(dw).sum(0).to(w.dtype),
        torch.from_numpy(du).sum(0).to(u.dtype),
        torch.from_numpy(dk).to(k.dtype),
        torch.from_numpy(dv).to(v.dtype),
    )
    return tuple(x.to(k.device) for x in grads)


def biwkv_cpu_forward(w, u, k, v, chunks: int = 0):
    """Forward on CPU (tensors on other devices are copied to the CPU and back).

    ``chunks``: 0 for the formula, 32 or 64 for the official kernels' semantics.
    Returns (y, aux0, aux1, aux2), float64 tensors that the backward needs besides y:
    formula: unit, left_den, right_den of shape (B, n_chunks, C); official: the denominator
    and the key index and w multiplier of the epsilon's tracked maximum, (B, T, C)."""
    _use_torch_thread_count()
    if chunks:
        return _official_forward(w, u, k, v, chunks)
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


def biwkv_cpu_backward(grad_y, w, u, k, v, y, unit, left_den, right_den, chunks: int = 0):
    """Gradients (dw, du, dk, dv) of sum(grad_y * y), from the forward's saved tensors
    (aux0..2 of :func:`biwkv_cpu_forward` with the same ``chunks``)."""
    _use_torch_thread_count()
    if chunks:
        return _official_backward(grad_y, w, u, k, v, y, unit, left_den, right_den, chunks)
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
