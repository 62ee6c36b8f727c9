"""BiWKV semantics: the paper's formula and the official chunked kernels in exact arithmetic
(../shared/reference/README.md, "official CUDA kernel semantics"). The float64 reference is
checked against hand-written coefficients and the README's consequences; the CPU kernel
against the reference, values and gradients."""
from __future__ import annotations

import math

import pytest
import torch

from lalic_core.ops.biwkv.naive import (
    EPS,
    _official_coefficients,
    biwkv_reference,
    coefficient_matrix,
)

OFFICIAL = ("official32", "official64")


def make_inputs(B, T, C, *, dtype=torch.float64, k_scale=3.0, decay=3.0, boost=3.0, seed=0):
    """Random inputs in the model's parametrisation: w = decay / T, u = boost / T."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(B, T, C, generator=g, dtype=torch.float64) * k_scale
    v = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    w = (torch.rand(C, generator=g, dtype=torch.float64) * 2 - 1) * decay / T
    u = (torch.rand(C, generator=g, dtype=torch.float64) * 2 - 1) * boost / T
    return w, u, k.to(dtype), v.to(dtype)


def one_chunk_per_token_loop(w, u, k, v):
    """README consequence for T <= chunks: the formula with |t-i| in place of |t-i| - 1,
    plus the kernel's epsilon times its largest tracked exponent, term by term."""
    B, T, C = k.shape
    y = torch.empty(B, T, C, dtype=torch.float64)
    for b in range(B):
        for c in range(C):
            wc, uc = float(w[c]), float(u[c])
            kk, vv = k[b, :, c].tolist(), v[b, :, c].tolist()
            for t in range(T):
                num = den = 0.0
                for i in range(T):
                    weight = math.exp(uc + kk[t]) if i == t else math.exp(-abs(t - i) * wc + kk[i])
                    num += weight * vv[i]
                    den += weight
                # tracked: every key at distance |t-i| (the own key also with exponent k[t])
                largest = max([kk[i] - abs(t - i) * wc for i in range(T)] + [uc + kk[t]])
                y[b, t, c] = num / (den + EPS * math.exp(largest))
    return y


# ------------------------------------------------------------------ the float64 reference
@pytest.mark.parametrize("semantics,T", [("official32", 1), ("official32", 7), ("official32", 32),
                                         ("official64", 40), ("official64", 64)])
def test_reference_one_token_per_chunk(semantics, T):
    w, u, k, v = make_inputs(2, T, 3, decay=4.0, boost=4.0, seed=T)
    torch.testing.assert_close(biwkv_reference(w, u, k, v, semantics),
                               one_chunk_per_token_loop(w, u, k, v), rtol=1e-12, atol=1e-12)


def test_reference_coefficients_by_hand_two_chunks():
    """T = 5 cut into 2 chunks ([0, 3) and [3, 5)), coefficients written out from the README."""
    w, u = 0.3, -0.2
    r, grow, own = math.exp(-w), 1 - math.exp(w), math.exp(u)
    expected = torch.tensor([
        [own, r, r**2, r**3, r**4],                    # t = 0 = s
        [1.0, own + grow, r, r**2, r**3],              # t = 1: i = s is not > s
        [r, 1.0 + grow * math.exp(w), own + grow, r, r**2],
        [r**3, r**2, r, own, r],                       # t = 3 = s (second chunk)
        [r**4, r**3, r**2, 1.0, own + grow],
    ], dtype=torch.float64)
    W = _official_coefficients(torch.tensor([w], dtype=torch.float64),
                               torch.tensor([u], dtype=torch.float64), 5, torch.arange(5), 2)[0]
    torch.testing.assert_close(W, expected, rtol=1e-15, atol=1e-15)


def test_reference_single_token_epsilon():
    """T = 1: y = e^(u+k) v / (e^(u+k) + EPS e^max(k, u+k)) (the kernel tracks k and u + k)."""
    k = torch.tensor([[[1.5, -2.0]]], dtype=torch.float64)
    v = torch.tensor([[[0.7, -3.0]]], dtype=torch.float64)
    w = torch.tensor([0.4, -0.1], dtype=torch.float64)
    u = torch.tensor([0.25, -0.5], dtype=torch.float64)
    own = torch.exp(u + k)
    expected = own * v / (own + EPS * torch.exp(torch.maximum(k, u + k)))
    for semantics in OFFICIAL:
        torch.testing.assert_close(biwkv_reference(w, u, k, v, semantics), expected,
                                   rtol=1e-15, atol=1e-15)


def test_reference_official_vs_formula_small_difference_at_large_T():
    """README: with w = decay / T the two semantics differ little at large T."""
    w, u, k, v = make_inputs(1, 1000, 4, k_scale=1.0, decay=1.0, boost=1.0)
    diff = biwkv_reference(w, u, k, v, "official32") - biwkv_reference(w, u, k, v)
    assert 1e-7 < diff.abs().max() < 1e-3


def test_coefficient_matrix_shapes_and_formula():
    W = coefficient_matrix(0.5, 0.1, 6)
    t = torch.arange(6)
    expected = torch.exp(-0.5 * ((t[:, None] - t[None]).abs() - 1.0)).double()
    expected.fill_diagonal_(math.exp(0.1))
    torch.testing.assert_close(W, expected)
    Wc = coefficient_matrix(torch.tensor([0.5, 0.2]), torch.tensor([0.1, 0.0]), 70, "official64")
    assert Wc.shape == (2, 70, 70)
    torch.testing.assert_close(Wc[0], coefficient_matrix(0.5, 0.1, 70, "official64"))


def test_reference_gradcheck_official():
    w, u, k, v = make_inputs(1, 70, 2, k_scale=1.0, decay=2.0, boost=2.0)
    inputs = [x.requires_grad_() for x in (w, u, k, v)]
    assert torch.autograd.gradcheck(lambda *a: biwkv_reference(*a, semantics="official32"), inputs)


def test_reference_blocks_rows_without_changing_results(monkeypatch):
    from lalic_core.ops.biwkv import naive

    w, u, k, v = make_inputs(2, 80, 3)
    full = biwkv_reference(w, u, k, v, "official32")
    monkeypatch.setattr(naive, "_MAX_BLOCK_ELEMENTS", 2 * 80 * 3 * 3 * 5)  # 5 rows per block
    torch.testing.assert_close(biwkv_reference(w, u, k, v, "official32"), full,
                               rtol=0, atol=1e-15)


def test_bad_semantics_is_a_value_error():
    w, u, k, v = make_inputs(1, 4, 2)
    with pytest.raises(ValueError, match="official32"):
        biwkv_reference(w, u, k, v, semantics="official")
    with pytest.raises(ValueError, match="semantics"):
        coefficient_matrix(0.1, 0.0, 4, "cuda")
