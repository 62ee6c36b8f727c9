"""BiWKV semantics: the paper's formula and the official chunked kernels in exact arithmetic
(../shared/reference/README.md, "official CUDA kernel semantics"). The float64 reference is
checked against hand-written coefficients and the README's consequences; the CPU kernel
against the reference, values and gradients."""
from __future__ import annotations

import math

import pytest
import torch

from lalic_core.ops.biwkv import SEMANTICS, biwkv
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
    w, u, k, v = make_inputs(1, 600, 4, k_scale=1.0, decay=1.0, boost=1.0)
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
    w, u, k, v = make_inputs(1, 70, 2, k_scale=1.0, decay=2.0, boost=2.0)  # chunks of 3
    inputs = [x.requires_grad_() for x in (w, u, k, v)]
    assert torch.autograd.gradcheck(lambda *a: biwkv_reference(*a, semantics="official32"), inputs,
                                    fast_mode=True)


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


# ------------------------------------------------------------------------ the CPU kernel
def grads(backend, semantics, w, u, k, v, grad_y):
    inputs = [x.detach().clone().requires_grad_() for x in (w, u, k, v)]
    y = biwkv(*inputs, backend=backend, semantics=semantics)
    return (y.detach(), *torch.autograd.grad(y, inputs, grad_y.to(y.dtype)))


def assert_matches_reference(semantics, w, u, k, v, tol, seed=1):
    """CPU kernel (inputs in their dtype) vs the float64 reference: values and the four
    gradients, each relative to its largest magnitude (dw, du sum over B * T terms)."""
    grad_y = torch.randn(k.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    fast = grads("cpu", semantics, w, u, k, v, grad_y)
    exact = grads("reference", semantics, *(x.double() for x in (w, u, k, v)), grad_y)
    assert fast[0].dtype == k.dtype
    for name, a, b in zip(("y", "dw", "du", "dk", "dv"), fast, exact):
        assert torch.isfinite(a).all(), name
        scale = b.abs().max().clamp_min(1e-3)  # du = 0 exactly for the formula at T = 1
        torch.testing.assert_close(a.double() / scale, b / scale, rtol=tol, atol=tol,
                                   msg=f"{semantics} {name}")


# T = 1; T <= 32 (one token per chunk); T = 32, 64; T not a multiple of the chunk count;
# T < 64 chunks; ragged last chunk (T = 100: 25 chunks of 4; T = 130: 26 of 5); B > 1; odd C.
SHAPES = [(1, 1, 3), (2, 5, 3), (1, 32, 4), (2, 33, 5), (1, 40, 9), (1, 64, 3), (3, 70, 11),
          (1, 100, 7), (2, 130, 7)]


@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("B,T,C", SHAPES)
def test_cpu_matches_reference_float64(B, T, C, semantics):
    w, u, k, v = make_inputs(B, T, C, seed=T)
    assert_matches_reference(semantics, w, u, k, v, tol=1e-12)


@pytest.mark.parametrize("semantics", OFFICIAL)
@pytest.mark.parametrize("B,T,C", SHAPES)
def test_cpu_matches_reference_float32(B, T, C, semantics):
    w, u, k, v = make_inputs(B, T, C, dtype=torch.float32, seed=T)
    assert_matches_reference(semantics, w, u, k, v, tol=2.5e-5)


def domain_inputs(T, C, seed):
    """|w| T <= 20 (decay in [-20, 20], including both ends), |k| <= 60, boost in [-20, 20]."""
    g = torch.Generator().manual_seed(seed)
    k = torch.rand(1, T, C, generator=g, dtype=torch.float64) * 120 - 60
    v = torch.randn(1, T, C, generator=g, dtype=torch.float64)
    decay = torch.rand(C, generator=g, dtype=torch.float64) * 40 - 20
    decay[:2] = torch.tensor([-20.0, 20.0])
    boost = torch.rand(C, generator=g, dtype=torch.float64) * 40 - 20
    return decay / T, boost / T, k, v


@pytest.mark.parametrize("semantics", OFFICIAL)
@pytest.mark.parametrize("T", [1, 7, 32, 400])
def test_cpu_accuracy_domain_float32(T, semantics):
    """Between T = 33 and a few hundred with |decay| near 20 the official coefficients
    themselves turn negative (own term e^u + 1 - e^w with w ~ 0.5), so the domain is checked
    where every token is its own chunk and where chunks are long."""
    w, u, k, v = domain_inputs(T, 6, seed=T)
    assert_matches_reference(semantics, w, u, k.float(), v.float(), tol=2.5e-5)
    assert_matches_reference(semantics, w, u, k, v, tol=1e-11)


@pytest.mark.parametrize("semantics,T", [("official32", 40), ("official32", 70),
                                         ("official64", 130), ("formula", 9)])
def test_cpu_gradcheck_float64(semantics, T):
    w, u, k, v = make_inputs(2, T, 2, k_scale=1.0, decay=2.0, boost=2.0, seed=T)
    inputs = [x.requires_grad_() for x in (w, u, k, v)]
    assert torch.autograd.gradcheck(
        lambda *a: biwkv(*a, backend="cpu", semantics=semantics), inputs, fast_mode=T > 100)


def test_cpu_official_is_bit_identical_across_batches_and_threads():
    w, u, k, v = make_inputs(3, 300, 20, dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = biwkv(w, u, k, v, backend="cpu", semantics="official32")
        torch.set_num_threads(2)
        two = biwkv(w, u, k, v, backend="cpu", semantics="official32")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    assert torch.equal(biwkv(w, u, k[1:2], v[1:2], backend="cpu", semantics="official32"),
                       one[1:2])


@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 0, 3), (2, 5, 0)])
def test_cpu_official_empty_inputs(shape):
    k = torch.randn(*shape, requires_grad=True)
    v, w, u = torch.randn(*shape), torch.randn(shape[2]), torch.randn(shape[2])
    y = biwkv(w, u, k, v, backend="cpu", semantics="official64")
    assert y.shape == shape
    y.sum().backward()
    assert k.grad.shape == shape


def test_default_semantics_is_the_formula():
    w, u, k, v = make_inputs(2, 50, 6, dtype=torch.float32)
    assert torch.equal(biwkv(w, u, k, v), biwkv(w, u, k, v, semantics="formula"))
    assert not torch.equal(biwkv(w, u, k, v), biwkv(w, u, k, v, semantics="official32"))


@pytest.mark.parametrize("backend", ["reference", "cpu", "auto"])
def test_bad_semantics_in_biwkv_is_a_value_error(backend):
    w, u, k, v = make_inputs(1, 4, 2)
    with pytest.raises(ValueError, match=r"semantics.*official64"):
        biwkv(w, u, k, v, backend=backend, semantics="official16")
