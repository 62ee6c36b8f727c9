"""BiWKV forward and backward as chunk-parallel Triton kernels (GPU; also TRITON_INTERPRET=1).

The operator (LALIC paper Sec. 3.2, Vision-RWKV's bidirectional WKV), per batch item and
channel, with x[i] = exp(k[i]) (v[i] in the numerator, 1 in the denominator)::

    y[t] = (sum_{i != t} exp(-(|t-i| - 1) w) x[i] + exp(u) x[t]) / (same without v)

**Chunked algorithm.** T is cut into chunks of ``CHUNK`` (32) tokens; chunks are gathered
in groups of ``m`` chunks (formula: 64 chunks; official semantics: one group per official
chunk of ceil(T/32) or ceil(T/64) tokens, so that no chunk straddles an official chunk).
Three kernel launches, all parallel over (chunk or group, channel block, batch item):

1. ``_chunk_summary_kernel``: per chunk, the sums every other chunk needs, both directions:
   SL = sum_i exp(-w (q-1-i)) x[i] (what the chunk adds to the left-to-right state at its
   end q) and SR = sum_i exp(-w (i-p)) x[i] (right-to-left state at its start p), plus their
   distance-weighted versions (backward: d/dw) and, for the official semantics, the
   growth sums with exp(+w ...) that its chunk-start correction needs.
2. ``_group_summary_kernel``: the same sums per group, from its chunks' summaries.
3. ``_chunk_finish_kernel``: every chunk at once: its carries (the state entering the chunk
   from the left and from the right) as a direct, log-space weighted sum over the summaries
   of all earlier (later) groups plus the earlier (later) chunks of its own group -- no
   compounding of exp(-w) over many steps, hence no loss of accuracy with T -- then the
   in-chunk part by prefix / suffix sums (``tl.cumsum``) over the (CHUNK, channels) tile, and
   the outputs: y and log D (forward), or dk, dv and per-chunk partial sums of dw, du
   (backward, which runs the same machinery on q = dL/dy / D and q * y, since the
   coefficient matrix is symmetric for the formula and its transpose is the mirrored
   official one).

**Log-space offsets.** Every stored sum is a pair (mantissa, offset) meaning
mantissa * exp(offset); the offset of a sum is the log of its largest term, so mantissas
of denominators are >= 1 and no exponential overflows: in-chunk terms are exp(alpha -
max alpha), carries are combined by their largest offset (online rescaling over row tiles),
and each token's output is formed relative to its own offset o[t] = max(largest in-chunk
log-weight, carry offsets, u + k[t]). Accuracy: all sums and offsets are float64
(``_ACC``), loads and stores in the inputs' dtype (float16 / bfloat16 / float32 / float64);
float64 costs little on H100/H200 (half the float32 rate) and keeps the float64-oracle
accuracy of the sequential kernel (values and the d/dw sums, which cancel; for the same
reason the forward also saves y in float64 for the backward when its inputs are not).
Range: in-chunk factors reach exp(2 |w| CHUNK), so exact for |w| <~ 10 (the model passes
w = decay / T) and any k, any T.

**Official semantics** (``chunks`` = 32 or 64; ../shared/reference/README.md): for a token t
in the official chunk starting at s, terms from before s and all terms after t carry one
more factor exp(-w); terms s < i <= t add (1 - e^w) exp(w (t - i)) x[i] (the "growth"
sums); the denominator gets 1e-6 times exp(largest exponent the official kernel tracks),
as in the reference, from the offsets; its gradient (to the argmax key, w and u) comes from
running maxima in float64 torch (:func:`_official_eps_grads`).
The backward uses the transposed coefficients: mirrored roles of left and right.

No architecture-specific code, no warp shuffles: only tl ops.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["CHUNK", "biwkv_triton_backward", "biwkv_triton_forward"]

#: Tokens per chunk (one (CHUNK, channels) tile per program). Defaults chosen offline from
#: ptxas register counts for sm_90 (float64 tiles are register-bound): CHUNK 32, BLOCK_C 16,
#: 4 warps: forward 168 registers and no real spills (64 x 32 tiles with 4 warps spill 2.4 kB),
#: about 3 programs (12 warps) per SM. benchmarks/biwkv_gpu.py --tune times alternatives.
CHUNK = 32
#: Chunks per group for the formula semantics (carries sum over groups, then chunks).
GROUP = 64
#: Channels per program (a power of two) and warps per program.
BLOCK_C = 16
NUM_WARPS = 4
#: Relative epsilon of the official kernel's denominator.
OFFICIAL_EPS = 1e-6
_NEG = tl.constexpr(-1.0e30)  # stands for log(0); finite so that differences stay finite
_ACC = tl.constexpr(tl.float64)  # accumulation dtype of every sum and offset
_ROWS = tl.constexpr(16)  # summary rows per tile in the carry sums
# summary tables are (B, 8 value slots, rows, C): x1, x2, x1', x2' (distance-weighted),
# then the official growth sums x1, x2, x1', x2'


@triton.jit
def _chunk_span(j, T, CH: tl.constexpr, m, seg_len):
    """Token range [p, q) of chunk j (chunk j = sub-chunk j % m of group j // m)."""
    seg = j // m
    p = seg * seg_len + (j - seg * m) * CH
    q = tl.minimum(tl.minimum(p + CH, seg * seg_len + seg_len), T)
    return p, tl.maximum(q, p)


@triton.jit
def _slot(ptr, b, slot, rows, n_rows, C, ch):
    """Addresses of value slot ``slot`` of rows ``rows`` in a (B, 8, n_rows, C) table."""
    return ptr + ((b * 8 + slot) * n_rows + rows)[:, None] * C + ch[None, :]


@triton.jit
def _gather(tab_ptr, off_ptr, b, n_rows, C, lo, hi, target, ch, cmask, w_eff, T, m, seg_len,
            FIRST: tl.constexpr, GROUPS: tl.constexpr, LEFT: tl.constexpr,
            DIST: tl.constexpr, CH: tl.constexpr, BC: tl.constexpr):
    """Carry at token position ``target`` from summary rows [lo, hi) (chunks or groups):
    sum over rows of exp(-w_eff * delta) * (S, S' + delta * S) with delta the distance from
    the row's edge to ``target``, in log space with online rescaling. Returns
    (offset, s1, s2, s1', s2') for value slots FIRST..FIRST+3."""
    run = tl.full([BC], _NEG, _ACC)
    a1 = tl.zeros([BC], _ACC)
    a2 = tl.zeros([BC], _ACC)
    d1 = tl.zeros([BC], _ACC)
    d2 = tl.zeros([BC], _ACC)
    for r0 in range(lo, hi, _ROWS):
        rows = r0 + tl.arange(0, _ROWS)
        rmask = rows < hi
        if GROUPS:
            p_r = rows * seg_len
            q_r = tl.minimum(p_r + seg_len, T)
        else:
            p_r, q_r = _chunk_span(rows, T, CH, m, seg_len)
        if LEFT:
            delta = (target - q_r).to(_ACC)[:, None]
        else:
            delta = (p_r - target).to(_ACC)[:, None]
        mask = rmask[:, None] & cmask[None, :]
        off = tl.load(off_ptr + (b * n_rows + rows)[:, None] * C + ch[None, :], mask=mask,
                      other=_NEG)
        logit = tl.where(mask, off - w_eff[None, :] * delta, _NEG)
        new = tl.maximum(run, tl.max(logit, axis=0))
        scale = tl.exp(run - new)
        e = tl.where(mask, tl.exp(logit - new[None, :]), 0.0)
        s1 = tl.load(_slot(tab_ptr, b, FIRST, rows, n_rows, C, ch), mask=mask, other=0.0)
        s2 = tl.load(_slot(tab_ptr, b, FIRST + 1, rows, n_rows, C, ch), mask=mask, other=0.0)
        a1 = a1 * scale + tl.sum(e * s1, axis=0)
        a2 = a2 * scale + tl.sum(e * s2, axis=0)
        if DIST:
            t1 = tl.load(_slot(tab_ptr, b, FIRST + 2, rows, n_rows, C, ch), mask=mask,
                         other=0.0)
            t2 = tl.load(_slot(tab_ptr, b, FIRST + 3, rows, n_rows, C, ch), mask=mask,
                         other=0.0)
            d1 = d1 * scale + tl.sum(e * (t1 + delta * s1), axis=0)
            d2 = d2 * scale + tl.sum(e * (t2 + delta * s2), axis=0)
        run = new
    return run, a1, a2, d1, d2


@triton.jit
def _load_tile(lam_ptr, x1_ptr, x2_ptr, offs, valid, BWD: tl.constexpr):
    """The sequence a pass sums: log-weights lam and values x1, x2.
    Forward: lam = k, x1 = v, x2 = 1. Backward: lam = -log D, x1 = dL/dy, x2 = dL/dy * y."""
    lam = tl.load(lam_ptr + offs, mask=valid, other=0.0).to(_ACC)
    x1 = tl.load(x1_ptr + offs, mask=valid, other=0.0).to(_ACC)
    if BWD:
        lam = -lam
        x2 = x1 * tl.load(x2_ptr + offs, mask=valid, other=0.0).to(_ACC)
    else:
        x2 = tl.where(valid, 1.0, 0.0).to(_ACC)
    return tl.where(valid, lam, _NEG), x1, x2


@triton.jit
def _chunk_summary_kernel(lam_ptr, x1_ptr, x2_ptr, w_ptr, sl_ptr, sr_ptr, sl_off_ptr,
                          sr_off_ptr, g_off_ptr, T, C, NC, m, seg_len,
                          CH: tl.constexpr, BC: tl.constexpr, BWD: tl.constexpr,
                          OFFICIAL: tl.constexpr):
    """Per chunk [p, q): SL (slots 0-3, offset at q-1) and SR (slots 0-3, offset at p);
    official: growth sums in SL slots 4-5 (forward, exp(+w (q - i)), i > s) or SR slots 4-7
    (backward, exp(+w (i - p)), with distance weights)."""
    j = tl.program_id(0)
    ch = tl.program_id(1) * BC + tl.arange(0, BC)
    b = tl.program_id(2).to(tl.int64)
    cmask = ch < C
    p, q = _chunk_span(j, T, CH, m, seg_len)
    n = q - p
    d = tl.arange(0, CH)
    valid = (d < n)[:, None] & cmask[None, :]
    offs = (b * T + p + d).to(tl.int64)[:, None] * C + ch[None, :]
    lam, x1, x2 = _load_tile(lam_ptr, x1_ptr, x2_ptr, offs, valid, BWD)
    w = tl.load(w_ptr + ch, mask=cmask, other=0.0).to(_ACC)
    dd = d.to(_ACC)[:, None]
    alpha = tl.where(valid, lam + w[None, :] * dd, _NEG)
    beta = tl.where(valid, lam - w[None, :] * dd, _NEG)
    max_alpha = tl.max(alpha, axis=0)
    max_beta = tl.max(beta, axis=0)
    ea = tl.where(valid, tl.exp(alpha - max_alpha[None, :]), 0.0)
    eb = tl.where(valid, tl.exp(beta - max_beta[None, :]), 0.0)
    to_end = (n - 1 - d).to(_ACC)[:, None]
    row = (b * NC + j) * C + ch
    tl.store(sl_off_ptr + row, max_alpha - w * (n - 1), mask=cmask)
    tl.store(sr_off_ptr + row, max_beta, mask=cmask)
    rows = j + tl.zeros([1], tl.int32)
    tl.store(_slot(sl_ptr, b, 0, rows, NC, C, ch), tl.sum(ea * x1, axis=0)[None, :], mask=cmask[None, :])
    tl.store(_slot(sl_ptr, b, 1, rows, NC, C, ch), tl.sum(ea * x2, axis=0)[None, :], mask=cmask[None, :])
    tl.store(_slot(sr_ptr, b, 0, rows, NC, C, ch), tl.sum(eb * x1, axis=0)[None, :], mask=cmask[None, :])
    tl.store(_slot(sr_ptr, b, 1, rows, NC, C, ch), tl.sum(eb * x2, axis=0)[None, :], mask=cmask[None, :])
    if BWD:
        tl.store(_slot(sl_ptr, b, 2, rows, NC, C, ch), tl.sum(to_end * ea * x1, axis=0)[None, :], mask=cmask[None, :])
        tl.store(_slot(sl_ptr, b, 3, rows, NC, C, ch), tl.sum(to_end * ea * x2, axis=0)[None, :], mask=cmask[None, :])
        tl.store(_slot(sr_ptr, b, 2, rows, NC, C, ch), tl.sum(dd * eb * x1, axis=0)[None, :], mask=cmask[None, :])
        tl.store(_slot(sr_ptr, b, 3, rows, NC, C, ch), tl.sum(dd * eb * x2, axis=0)[None, :], mask=cmask[None, :])
    if OFFICIAL:
        if BWD:  # growth sums to the right: sum exp(lam[i] + w (i - p)) x[i] = exp(max_alpha) ...
            tl.store(g_off_ptr + row, max_alpha, mask=cmask)
            tl.store(_slot(sr_ptr, b, 4, rows, NC, C, ch), tl.sum(ea * x1, axis=0)[None, :], mask=cmask[None, :])
            tl.store(_slot(sr_ptr, b, 5, rows, NC, C, ch), tl.sum(ea * x2, axis=0)[None, :], mask=cmask[None, :])
            tl.store(_slot(sr_ptr, b, 6, rows, NC, C, ch), tl.sum(dd * ea * x1, axis=0)[None, :], mask=cmask[None, :])
            tl.store(_slot(sr_ptr, b, 7, rows, NC, C, ch), tl.sum(dd * ea * x2, axis=0)[None, :], mask=cmask[None, :])
        else:  # growth sums to the left: sum_{i > s} exp(lam[i] + w (q - i)) x[i]
            seg_start = (j // m) * seg_len
            after_start = ((p + d) > seg_start)[:, None]
            gb = tl.where(after_start, eb, 0.0)
            tl.store(g_off_ptr + row, max_beta + w * n, mask=cmask)
            tl.store(_slot(sl_ptr, b, 4, rows, NC, C, ch), tl.sum(gb * x1, axis=0)[None, :], mask=cmask[None, :])
            tl.store(_slot(sl_ptr, b, 5, rows, NC, C, ch), tl.sum(gb * x2, axis=0)[None, :], mask=cmask[None, :])


@triton.jit
def _group_summary_kernel(csl_ptr, csr_ptr, csl_off_ptr, csr_off_ptr, w_ptr, gsl_ptr, gsr_ptr,
                          gsl_off_ptr, gsr_off_ptr, T, C, NC, NG, m, seg_len,
                          CH: tl.constexpr, BC: tl.constexpr, DIST: tl.constexpr):
    """Group g's SL (at its end) and SR (at its start) from the summaries of its chunks."""
    g = tl.program_id(0)
    ch = tl.program_id(1) * BC + tl.arange(0, BC)
    b = tl.program_id(2).to(tl.int64)
    cmask = ch < C
    w = tl.load(w_ptr + ch, mask=cmask, other=0.0).to(_ACC)
    lo = g * m
    hi = tl.minimum(lo + m, NC)
    p_g = g * seg_len
    q_g = tl.minimum(p_g + seg_len, T)
    rows = g + tl.zeros([1], tl.int32)
    row = (b * NG + g) * C + ch
    o, s1, s2, t1, t2 = _gather(csl_ptr, csl_off_ptr, b, NC, C, lo, hi, q_g, ch, cmask, w, T, m,
                                seg_len, 0, False, True, DIST, CH, BC)
    tl.store(gsl_off_ptr + row, o, mask=cmask)  # weights exp(-w (q_g - 1 - i)), as for chunks
    tl.store(_slot(gsl_ptr, b, 0, rows, NG, C, ch), s1[None, :], mask=cmask[None, :])
    tl.store(_slot(gsl_ptr, b, 1, rows, NG, C, ch), s2[None, :], mask=cmask[None, :])
    if DIST:
        tl.store(_slot(gsl_ptr, b, 2, rows, NG, C, ch), t1[None, :], mask=cmask[None, :])
        tl.store(_slot(gsl_ptr, b, 3, rows, NG, C, ch), t2[None, :], mask=cmask[None, :])
    o, s1, s2, t1, t2 = _gather(csr_ptr, csr_off_ptr, b, NC, C, lo, hi, p_g, ch, cmask, w, T, m,
                                seg_len, 0, False, False, DIST, CH, BC)
    tl.store(gsr_off_ptr + row, o, mask=cmask)
    tl.store(_slot(gsr_ptr, b, 0, rows, NG, C, ch), s1[None, :], mask=cmask[None, :])
    tl.store(_slot(gsr_ptr, b, 1, rows, NG, C, ch), s2[None, :], mask=cmask[None, :])
    if DIST:
        tl.store(_slot(gsr_ptr, b, 2, rows, NG, C, ch), t1[None, :], mask=cmask[None, :])
        tl.store(_slot(gsr_ptr, b, 3, rows, NG, C, ch), t2[None, :], mask=cmask[None, :])


@triton.jit
def _cast(x, ptr):
    """float64 -> the element type of ``ptr``, through float32 for 16-bit outputs (float64 ->
    bfloat16 has no direct conversion everywhere, e.g. the interpreter)."""
    if ptr.dtype.element_ty == tl.float64:
        return x
    return x.to(tl.float32).to(ptr.dtype.element_ty)


@triton.jit
def _merge(o_a, a1, a2, a3, a4, o_b, b1, b2, b3, b4):
    """Sum of two log-space carries (offset, four mantissas)."""
    o = tl.maximum(o_a, o_b)
    sa = tl.exp(o_a - o)
    sb = tl.exp(o_b - o)
    return o, a1 * sa + b1 * sb, a2 * sa + b2 * sb, a3 * sa + b3 * sb, a4 * sa + b4 * sb


@triton.jit
def _chunk_finish_kernel(lam_ptr, x1_ptr, x2_ptr, k_ptr, v_ptr, w_ptr, u_ptr,
                         csl_ptr, csr_ptr, csl_off_ptr, csr_off_ptr, cg_off_ptr,
                         gsl_ptr, gsr_ptr, gsl_off_ptr, gsr_off_ptr,
                         out0_ptr, out1_ptr, out2_ptr, dw_ptr, du_ptr,
                         T, C, NC, NG, m, seg_len, eps,
                         CH: tl.constexpr, BC: tl.constexpr, BWD: tl.constexpr,
                         OFFICIAL: tl.constexpr, SAVE_Y64: tl.constexpr):
    """Carries + in-chunk sums + outputs of one chunk. Forward: out0 = y, out1 = log D,
    out2 = y in float64 (SAVE_Y64).
    Backward: out0 = dk, out1 = dv, and per-chunk partial sums dw_ptr, du_ptr (B, NC, C)."""
    j = tl.program_id(0)
    ch = tl.program_id(1) * BC + tl.arange(0, BC)
    b = tl.program_id(2).to(tl.int64)
    cmask = ch < C
    g = j // m
    p, q = _chunk_span(j, T, CH, m, seg_len)
    n = q - p
    w = tl.load(w_ptr + ch, mask=cmask, other=0.0).to(_ACC)
    u = tl.load(u_ptr + ch, mask=cmask, other=0.0).to(_ACC)
    zero = tl.zeros([BC], _ACC)
    # ---- carries entering the chunk: earlier (later) groups, then chunks of this group
    oa, A1, A2, A3, A4 = _gather(gsl_ptr, gsl_off_ptr, b, NG, C, 0, g, p, ch, cmask, w, T, m,
                                 seg_len, 0, True, True, BWD, CH, BC)
    if OFFICIAL and not BWD:  # terms before the official chunk: one more exp(-w)
        oa = oa - w
    oc, c1, c2, c3, c4 = _gather(csl_ptr, csl_off_ptr, b, NC, C, g * m, j, p, ch, cmask, w, T,
                                 m, seg_len, 0, False, True, BWD, CH, BC)
    oa, A1, A2, A3, A4 = _merge(oa, A1, A2, A3, A4, oc, c1, c2, c3, c4)
    ob, B1, B2, B3, B4 = _gather(gsr_ptr, gsr_off_ptr, b, NG, C, g + 1, NG, q, ch, cmask, w, T,
                                 m, seg_len, 0, True, False, BWD, CH, BC)
    if OFFICIAL and BWD:  # transposed: terms after the official chunk get one more exp(-w)
        ob = ob - w
        B3 = B3 + B1
        B4 = B4 + B2
    oc, c1, c2, c3, c4 = _gather(csr_ptr, csr_off_ptr, b, NC, C, j + 1,
                                 tl.minimum(g * m + m, NC), q, ch, cmask, w, T, m, seg_len,
                                 0, False, False, BWD, CH, BC)
    ob, B1, B2, B3, B4 = _merge(ob, B1, B2, B3, B4, oc, c1, c2, c3, c4)
    og = tl.full([BC], _NEG, _ACC)
    G1 = zero
    G2 = zero
    G3 = zero
    G4 = zero
    if OFFICIAL:
        if BWD:  # growth sums from later chunks of the official chunk
            og, G1, G2, G3, G4 = _gather(csr_ptr, cg_off_ptr, b, NC, C, j + 1,
                                         tl.minimum(g * m + m, NC), q, ch, cmask, -w, T, m,
                                         seg_len, 4, False, False, True, CH, BC)
        else:  # growth sums from earlier chunks of the official chunk
            og, G1, G2, G3, G4 = _gather(csl_ptr, cg_off_ptr, b, NC, C, g * m, j, p, ch,
                                         cmask, -w, T, m, seg_len, 4, False, True, False, CH,
                                         BC)
    # ---- the chunk's own tile
    d = tl.arange(0, CH)
    valid = (d < n)[:, None] & cmask[None, :]
    offs = (b * T + p + d).to(tl.int64)[:, None] * C + ch[None, :]
    lam, x1, x2 = _load_tile(lam_ptr, x1_ptr, x2_ptr, offs, valid, BWD)
    dd = d.to(_ACC)[:, None]
    wt = w[None, :]
    alpha = tl.where(valid, lam + wt * dd, _NEG)
    beta = tl.where(valid, lam - wt * dd, _NEG)
    max_alpha = tl.max(alpha, axis=0)[None, :]
    max_beta = tl.max(beta, axis=0)[None, :]
    ea = tl.where(valid, tl.exp(alpha - max_alpha), 0.0)
    eb = tl.where(valid, tl.exp(beta - max_beta), 0.0)
    # exclusive prefix sums (i < t) of ea * x and suffix sums (i > t) of eb * x
    pa1 = tl.cumsum(ea * x1, axis=0) - ea * x1
    pa2 = tl.cumsum(ea * x2, axis=0) - ea * x2
    sb1 = tl.cumsum(eb * x1, axis=0, reverse=True) - eb * x1
    sb2 = tl.cumsum(eb * x2, axis=0, reverse=True) - eb * x2
    to_end = (n - 1 - d).to(_ACC)[:, None]
    own_log = u[None, :] + lam
    big = tl.maximum(tl.maximum(tl.max(lam, axis=0)[None, :], own_log),
                     tl.maximum(oa[None, :] - wt * dd, ob[None, :] - wt * to_end))
    if OFFICIAL:
        big = tl.maximum(big, tl.maximum(og[None, :] + wt * dd, og[None, :] + wt * (to_end + 1)))
    fa = tl.exp(max_alpha - wt * (dd - 1) - big)  # in-chunk left sums, units of exp(big)
    fb = tl.exp(max_beta + wt * (dd + 1) - big)  # in-chunk right sums
    fca = tl.exp(oa[None, :] - wt * dd - big)  # left carry
    fcb = tl.exp(ob[None, :] - wt * to_end - big)  # right carry
    fown = tl.exp(own_log - big)
    left1 = fa * pa1 + fca * A1[None, :]
    left2 = fa * pa2 + fca * A2[None, :]
    right1 = fb * sb1 + fcb * B1[None, :]
    right2 = fb * sb2 + fcb * B2[None, :]
    own1 = fown * x1
    own2 = fown * x2
    if OFFICIAL:
        r = tl.exp(-wt)
        one_minus_ew = 1.0 - tl.exp(wt)
        seg_start = g * seg_len
        after_start = ((p + d) > seg_start)[:, None]
    if not BWD:
        if OFFICIAL:
            # growth sums F[t] = sum_{s < i <= t} exp(w (t - i)) x[i]
            gb = tl.where(after_start, eb, 0.0)
            fg = tl.exp(max_beta + wt * dd - big)
            fgc = tl.exp(og[None, :] + wt * dd - big)
            grow1 = fg * tl.cumsum(gb * x1, axis=0) + fgc * G1[None, :]
            grow2 = fg * tl.cumsum(gb * x2, axis=0) + fgc * G2[None, :]
            num = left1 + r * right1 + own1 + one_minus_ew * grow1
            den = left2 + r * right2 + own2 + one_minus_ew * grow2
            # + eps * exp(M[t]), M[t] the largest exponent the official kernel tracks
            # (lalic_core.ops.biwkv.naive._tracked_exponents; no gradient through M):
            # left keys, every key i >= s with -w (i - t), passed keys s < i <= t with
            # +w (t - i + 1), the own token with u
            big_left = tl.where(after_start, _prefix_max(alpha) - wt * (dd - 1), _NEG)
            passed = _prefix_max(tl.where(after_start, beta, _NEG)) + wt * (dd + 1)
            largest = tl.maximum(tl.maximum(own_log, oa[None, :] - wt * dd), big_left)
            largest = tl.maximum(largest, ob[None, :] - wt * (to_end + 1))
            largest = tl.maximum(largest, tl.maximum(max_beta, og[None, :]) + wt * dd)
            largest = tl.maximum(largest, tl.maximum(passed, og[None, :] + wt * (dd + 1)))
            den = den + eps * tl.exp(largest - big)
        else:
            num = left1 + right1 + own1
            den = left2 + right2 + own2
        den = tl.where(valid, den, 1.0)  # padding rows
        tl.store(out0_ptr + offs, _cast(num / den, out0_ptr), mask=valid)
        tl.store(out1_ptr + offs, big + tl.log(den), mask=valid)
        if SAVE_Y64:  # y in float64 for the backward (its d/dw sums cancel)
            tl.store(out2_ptr + offs, num / den, mask=valid)
    else:
        # distance-weighted sums (d/dw of the coefficients, up to sign)
        pa3 = tl.cumsum(dd * ea * x1, axis=0) - dd * ea * x1
        pa4 = tl.cumsum(dd * ea * x2, axis=0) - dd * ea * x2
        sb3 = tl.cumsum(dd * eb * x1, axis=0, reverse=True) - dd * eb * x1
        sb4 = tl.cumsum(dd * eb * x2, axis=0, reverse=True) - dd * eb * x2
        dleft1 = fa * ((dd - 1) * pa1 - pa3) + fca * (A3[None, :] + dd * A1[None, :])
        dleft2 = fa * ((dd - 1) * pa2 - pa4) + fca * (A4[None, :] + dd * A2[None, :])
        dright1 = fb * (sb3 - (dd + 1) * sb1) + fcb * (B3[None, :] + to_end * B1[None, :])
        dright2 = fb * (sb4 - (dd + 1) * sb2) + fcb * (B4[None, :] + to_end * B2[None, :])
        if OFFICIAL:
            # transposed official coefficients: every term before i one more exp(-w);
            # growth sums G[i] = sum_{i <= t, same official chunk} exp(w (t - i)) x[t], i > s
            q1 = r * left1 + right1 + own1
            q2 = r * left2 + right2 + own2
            dq1 = -r * (dleft1 + left1) - dright1
            dq2 = -r * (dleft2 + left2) - dright2
            suf1 = tl.cumsum(ea * x1, axis=0, reverse=True)
            suf2 = tl.cumsum(ea * x2, axis=0, reverse=True)
            suf3 = tl.cumsum(dd * ea * x1, axis=0, reverse=True)
            suf4 = tl.cumsum(dd * ea * x2, axis=0, reverse=True)
            fg = tl.exp(max_alpha - wt * dd - big)
            back = (to_end + 1)  # q - i
            fgc = tl.exp(og[None, :] + wt * back - big)
            grow1 = fg * suf1 + fgc * G1[None, :]
            grow2 = fg * suf2 + fgc * G2[None, :]
            dgrow1 = fg * (suf3 - dd * suf1) + fgc * (G3[None, :] + back * G1[None, :])
            dgrow2 = fg * (suf4 - dd * suf2) + fgc * (G4[None, :] + back * G2[None, :])
            grow1 = tl.where(after_start, grow1, 0.0)
            grow2 = tl.where(after_start, grow2, 0.0)
            dgrow1 = tl.where(after_start, dgrow1, 0.0)
            dgrow2 = tl.where(after_start, dgrow2, 0.0)
            ew = tl.exp(wt)
            q1 += one_minus_ew * grow1
            q2 += one_minus_ew * grow2
            dq1 += one_minus_ew * dgrow1 - ew * grow1
            dq2 += one_minus_ew * dgrow2 - ew * grow2
        else:
            q1 = left1 + right1 + own1
            q2 = left2 + right2 + own2
            dq1 = -(dleft1 + dright1)
            dq2 = -(dleft2 + dright2)
        kk = tl.load(k_ptr + offs, mask=valid, other=0.0).to(_ACC)
        vv = tl.load(v_ptr + offs, mask=valid, other=0.0).to(_ACC)
        scale = tl.where(valid, tl.exp(kk + big), 0.0)  # q was relative to exp(big)
        tl.store(out0_ptr + offs, _cast(scale * (vv * q1 - q2), out0_ptr),
                 mask=valid)
        tl.store(out1_ptr + offs, _cast(scale * q1, out1_ptr), mask=valid)
        # du: sum_t q[t] exp(u + k[t]) (v[t] - y[t]) = exp(u + k - log D) * (g v - g y)
        own_k = tl.where(valid, tl.exp(u[None, :] + kk + lam), 0.0)
        row = (b * NC + j) * C + ch
        tl.store(du_ptr + row, tl.sum(own_k * (x1 * vv - x2), axis=0), mask=cmask)
        tl.store(dw_ptr + row, tl.sum(scale * (vv * dq1 - dq2), axis=0), mask=cmask)


@triton.jit
def _max_fn(a, b):
    return tl.maximum(a, b)


@triton.jit
def _prefix_max(x):
    """Inclusive running maximum along the tokens of a tile."""
    return tl.associative_scan(x, 0, _max_fn)




# ----------------------------------------------------------------------------------------
# host side
# ----------------------------------------------------------------------------------------
def _layout(T: int, chunks: int) -> tuple[int, int, int, int]:
    """(chunks per group m, tokens per group, number of chunks NC, number of groups NG)."""
    if chunks:
        seg_len = max(1, -(-T // chunks))
        m = -(-seg_len // CHUNK)
        n_groups = -(-T // seg_len)
        return m, seg_len, n_groups * m, n_groups
    n_chunks = max(1, -(-T // CHUNK))
    return GROUP, GROUP * CHUNK, n_chunks, -(-n_chunks // GROUP)


def _block_c(C: int) -> int:
    return min(BLOCK_C, triton.next_power_of_2(max(C, 1)))


def _run_passes(lam, x1, x2, k, v, w, u, outs, chunks: int, backward: bool):
    """The three launches (summaries, group summaries, finish) of one pass."""
    B, T, C = lam.shape
    m, seg_len, NC, NG = _layout(T, chunks)
    dev = lam.device
    f64 = torch.float64
    # every slot a pass reads is written before (no memset needed)
    csl = torch.empty((B, 8, NC, C), dtype=f64, device=dev)
    csr = torch.empty_like(csl)
    csl_off = torch.empty((B, NC, C), dtype=f64, device=dev)
    csr_off = torch.empty_like(csl_off)
    cg_off = torch.empty_like(csl_off)
    gsl = torch.empty((B, 8, NG, C), dtype=f64, device=dev)
    gsr = torch.empty_like(gsl)
    gsl_off = torch.empty((B, NG, C), dtype=f64, device=dev)
    gsr_off = torch.empty_like(gsl_off)
    bc = _block_c(C)
    n_cb = triton.cdiv(C, bc)
    official = bool(chunks)
    warps = NUM_WARPS
    _chunk_summary_kernel[(NC, n_cb, B)](
        lam, x1, x2, w, csl, csr, csl_off, csr_off, cg_off, T, C, NC, m, seg_len,
        CH=CHUNK, BC=bc, BWD=backward, OFFICIAL=official, num_warps=warps)
    _group_summary_kernel[(NG, n_cb, B)](
        csl, csr, csl_off, csr_off, w, gsl, gsr, gsl_off, gsr_off, T, C, NC, NG, m, seg_len,
        CH=CHUNK, BC=bc, DIST=backward, num_warps=warps)
    dw_part = torch.empty((B, NC, C), dtype=f64, device=dev)
    du_part = torch.empty_like(dw_part)
    _chunk_finish_kernel[(NC, n_cb, B)](
        lam, x1, x2, k, v, w, u, csl, csr, csl_off, csr_off, cg_off,
        gsl, gsr, gsl_off, gsr_off, outs[0], outs[1], outs[2], dw_part, du_part,
        T, C, NC, NG, m, seg_len, OFFICIAL_EPS,
        CH=CHUNK, BC=bc, BWD=backward, OFFICIAL=official,
        SAVE_Y64=not backward and outs[2].shape[1] > 0, num_warps=warps)
    return dw_part, du_part


def _check_chunks(chunks: int) -> None:
    if chunks not in (0, 32, 64):
        raise ValueError(f"biwkv_triton: `chunks` must be 0 (formula), 32 or 64, got {chunks}")


def biwkv_triton_forward(w, u, k, v, chunks: int = 0):
    """BiWKV forward. w, u: (C,); k, v: (B, T, C) contiguous, float16/bfloat16/float32/float64
    (computed in float64, y in the dtype of k). ``chunks``: 0 for the formula, 32 / 64 for the
    official kernels' semantics. Returns (y, log D (B, T, C) float64, y in float64 (B, T, C)
    -- (B, 0, C) when k is float64 -- and an empty (B, 0, C) float64): the backward's d/dw
    sums cancel, so it reads y unrounded."""
    _check_chunks(chunks)
    B, T, C = k.shape
    k, v, w, u = k.contiguous(), v.contiguous(), w.contiguous(), u.contiguous()
    y = torch.empty_like(k)
    log_den = torch.empty((B, T, C), dtype=torch.float64, device=k.device)
    y64 = k.new_empty((B, T if k.dtype != torch.float64 else 0, C), dtype=torch.float64)
    if B * T * C:
        _run_passes(k, v, v, k, v, w, u, (y, log_den, y64), chunks, backward=False)
    return y, log_den, y64, k.new_empty((B, 0, C), dtype=torch.float64)


def _segment_cummax(x: torch.Tensor, seg_len: int, skip_first: bool = False):
    """Running max (values, token indices) of x (B, T, C) along T, restarting at every
    official chunk of ``seg_len`` tokens; ``skip_first``: the chunk's first token excluded."""
    B, T, C = x.shape
    n_seg = -(-T // seg_len)
    padded = x.new_full((B, n_seg * seg_len, C), float("-inf"))
    padded[:, :T] = x
    padded = padded.view(B, n_seg, seg_len, C)
    if skip_first:
        padded[:, :, 0] = float("-inf")
    values, local = torch.cummax(padded, dim=2)
    starts = torch.arange(n_seg, device=x.device).view(1, n_seg, 1, 1) * seg_len
    return (values.view(B, -1, C)[:, :T], (local + starts).view(B, -1, C)[:, :T])


def _official_eps_grads(grad_y, w, u, k, y, log_den, chunks: int):
    """Gradients of the official epsilon term eps * exp(M[t]) of the denominator (M[t]: the
    largest exponent the official kernel tracks, as lalic_core.ops.biwkv.naive defines it),
    in float64 torch: M[t] and its argmax from running maxima of k[i] + w i and k[i] - w i
    (before the chunk, inside it, from its start on, after its first token), then
    dL/dM[t] = -grad_y[t] y[t] eps exp(M[t] - log D[t]) goes to k at the argmax (scatter),
    to w with the argmax's distance coefficient and to u where the own token wins."""
    B, T, C = k.shape
    seg_len = max(1, -(-T // chunks))
    f64 = torch.float64
    k64, w64, u64 = k.to(f64), w.to(f64), u.to(f64)
    pos = torch.arange(T, device=k.device, dtype=f64).view(1, T, 1)
    t_idx = torch.arange(T, device=k.device).view(1, T, 1).expand(B, T, C)
    start = (t_idx // seg_len) * seg_len
    inc, dec = k64 + w64 * pos, k64 - w64 * pos
    neg = torch.tensor(float("-inf"), dtype=f64, device=k.device)
    cands, where = [], []
    # (a) keys before the official chunk: k[i] - w (t - i)
    vals, idx = torch.cummax(inc, dim=1)
    prev = (start - 1).clamp_min(0)
    cands.append(torch.where(start > 0, vals.gather(1, prev), neg) - w64 * pos)
    where.append(idx.gather(1, prev))
    # (b) keys s <= i < t: k[i] - w (t - i - 1)
    vals, idx = _segment_cummax(inc, seg_len)
    before = (t_idx - 1).clamp_min(0)
    cands.append(torch.where(t_idx > start, vals.gather(1, before), neg) - w64 * (pos - 1))
    where.append(idx.gather(1, before))
    # (c) keys i >= s: k[i] - w (i - t)
    vals, idx = torch.cummax(dec.flip(1), dim=1)
    vals, idx = vals.flip(1), (T - 1 - idx).flip(1)
    cands.append(vals.gather(1, start) + w64 * pos)
    where.append(idx.gather(1, start))
    # (d) passed keys s < i <= t: k[i] + w (t - i + 1)
    vals, idx = _segment_cummax(dec, seg_len, skip_first=True)
    cands.append(vals + w64 * (pos + 1))
    where.append(idx)
    # (e) the own token: u + k[t]
    cands.append(u64 + k64)
    where.append(t_idx)
    cands = torch.stack(cands)
    best, which = cands.max(dim=0)
    argmax = torch.stack(where).gather(0, which[None])[0]
    i_pos = argmax.to(f64)
    coeff = torch.stack([-(pos - i_pos), -(pos - i_pos - 1), -(i_pos - pos), pos - i_pos + 1,
                         torch.zeros_like(i_pos)]).gather(0, which[None])[0]
    h = -grad_y.to(f64) * y.to(f64) * OFFICIAL_EPS * torch.exp(best - log_den)
    dk = torch.zeros_like(k64).scatter_add_(1, argmax, h)
    dw = (h * coeff).sum((0, 1))
    du = torch.where(which == 4, h, 0.0).sum((0, 1))
    return dw, du, dk


def biwkv_triton_backward(grad_y, w, u, k, v, y, log_den, y64=None, unused=None,
                          chunks: int = 0):
    """Gradients (dw, du, dk, dv) of sum(grad_y * y); dw, du (C,) summed over the batch;
    log_den and y64: the forward's aux outputs."""
    _check_chunks(chunks)
    B, T, C = k.shape
    if y64 is not None and y64.shape[1] == T:
        y = y64
    grad_y = grad_y.contiguous()
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    if not B * T * C:
        return torch.zeros_like(w), torch.zeros_like(u), dk, dv
    dw_part, du_part = _run_passes(log_den, grad_y, y, k, v, w, u, (dk, dv, dv), chunks,
                                   backward=True)
    dw, du = dw_part.sum((0, 1)), du_part.sum((0, 1))
    if chunks:
        eps_dw, eps_du, eps_dk = _official_eps_grads(grad_y, w, u, k, y, log_den, chunks)
        dw, du = dw + eps_dw, du + eps_du
        dk = (dk.to(torch.float64) + eps_dk).to(dk.dtype)
    return dw.to(w.dtype), du.to(u.dtype), dk, dv
