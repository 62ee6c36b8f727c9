"""BiWKV (formula semantics): every fast backend against the exact float64 reference, which is itself checked
against the formula written as a plain loop. The Triton backend is tested in
tests/test_biwkv_triton.py (interpreter mode, subprocess)."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lalic_core.ops.biwkv import FLOPS_PER_ELEMENT, biwkv, biwkv_reference


def make_inputs(B, T, C, *, dtype=torch.float64, k_scale=3.0, decay=3.0, boost=3.0, seed=0):
    """Random inputs in the model's parametrisation: w = decay / T, u = boost / T."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(B, T, C, generator=g, dtype=torch.float64) * k_scale
    v = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    w = (torch.rand(C, generator=g, dtype=torch.float64) * 2 - 1) * decay / T
    u = (torch.rand(C, generator=g, dtype=torch.float64) * 2 - 1) * boost / T
    return w, u, k.to(dtype), v.to(dtype)


def formula_loop(w, u, k, v):
    """The paper's formula, term by term, in Python floats (tiny shapes only)."""
    B, T, C = k.shape
    y = torch.empty(B, T, C, dtype=torch.float64)
    for b in range(B):
        for c in range(C):
            for t in range(T):
                num = den = 0.0
                for i in range(T):
                    if i == t:
                        weight = math.exp(float(u[c]) + float(k[b, t, c]))
                    else:
                        weight = math.exp(-(abs(t - i) - 1) * float(w[c]) + float(k[b, i, c]))
                    num += weight * float(v[b, i, c])
                    den += weight
                y[b, t, c] = num / den
    return y


def reference_rows(w, u, k, v, rows):
    """Exact outputs for a few rows t only (O(T C) each): checks long sequences cheaply."""
    w, u, k, v = (x.double() for x in (w, u, k, v))
    T = k.shape[1]
    i = torch.arange(T, dtype=torch.float64)[:, None]
    out = []
    for t in rows:
        logits = -((t - i).abs() - 1) * w + k  # (B, T, C)
        logits[:, t] = u + k[:, t]
        out.append((torch.softmax(logits, dim=1) * v).sum(dim=1))
    return torch.stack(out, dim=1)  # (B, len(rows), C)


def grads(backend, w, u, k, v, grad_y):
    inputs = [x.detach().clone().requires_grad_() for x in (w, u, k, v)]
    y = biwkv(*inputs, backend=backend)
    return (y.detach(), *torch.autograd.grad(y, inputs, grad_y.to(y.dtype)))


def test_reference_equals_formula():
    w, u, k, v = make_inputs(2, 7, 3)
    torch.testing.assert_close(biwkv_reference(w, u, k, v), formula_loop(w, u, k, v),
                               rtol=1e-12, atol=1e-12)


def test_reference_blocks_rows_without_changing_results(monkeypatch):
    from lalic_core.ops.biwkv import naive

    w, u, k, v = make_inputs(2, 50, 4)
    full = biwkv_reference(w, u, k, v)
    monkeypatch.setattr(naive, "_MAX_BLOCK_ELEMENTS", 2 * 50 * 4 * 3)  # 3 rows per block
    torch.testing.assert_close(biwkv_reference(w, u, k, v), full, rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("B,T,C", [(1, 1, 3), (2, 2, 5), (3, 37, 17), (1, 100, 8), (2, 129, 24)])
def test_cpu_backend_matches_reference(B, T, C, dtype):
    w, u, k, v = make_inputs(B, T, C, dtype=dtype, seed=T)
    grad_y = torch.randn(B, T, C, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fast = grads("cpu", w, u, k, v, grad_y)
    exact = grads("reference", w.double(), u.double(), k.double(), v.double(), grad_y)
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    assert fast[0].dtype == dtype
    for name, a, b in zip(("y", "dw", "du", "dk", "dv"), fast, exact):
        scale = b.abs().max().clamp_min(1.0)  # dw, du sum over B*T terms: compare relatively
        torch.testing.assert_close(a.double() / scale, b / scale, **tol, msg=name)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_gradcheck_float64(backend):
    w, u, k, v = make_inputs(2, 6, 3, k_scale=1.0, decay=2.0, boost=2.0)
    inputs = [x.requires_grad_() for x in (w, u, k, v)]
    assert torch.autograd.gradcheck(lambda *a: biwkv(*a, backend=backend), inputs)


def test_gradcheck_float64_multiple_chunks(monkeypatch):
    """Several chunks of the CPU kernel (chunk units and carries between chunks)."""
    from lalic_core.ops.biwkv import cpu

    monkeypatch.setattr(cpu, "CHUNK", 8)
    w, u, k, v = make_inputs(1, 37, 2, k_scale=2.0)
    inputs = [x.requires_grad_() for x in (w, u, k, v)]
    assert torch.autograd.gradcheck(lambda *a: biwkv(*a, backend="cpu"), inputs)


@pytest.mark.parametrize("chunk", [1, 2, 8, 32])
def test_cpu_backend_any_chunk_length(monkeypatch, chunk):
    """The chunking (units, boundary states, carries) is invisible in the results."""
    from lalic_core.ops.biwkv import cpu

    monkeypatch.setattr(cpu, "CHUNK", chunk)
    w, u, k, v = make_inputs(2, 45, 9, k_scale=8.0, decay=15.0)
    grad_y = torch.randn(2, 45, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    for name, a, b in zip(("y", "dw", "du", "dk", "dv"), grads("cpu", w, u, k, v, grad_y),
                          grads("reference", w, u, k, v, grad_y)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


# ------------------------------------------------------------------ the accuracy domain
# k in [-60, 60], decay and boost in [-20, 20] (w = decay / T, u = boost / T), T up to 2e5,
# including a spike of k far above its neighbours. Outputs are O(1): 1e-4 relative and
# 1e-5 absolute.
def domain_inputs(T, C, seed, spike=False):
    g = torch.Generator().manual_seed(seed)
    k = torch.rand(1, T, C, generator=g, dtype=torch.float64) * 120 - 60
    if spike:
        k = torch.rand(1, T, C, generator=g, dtype=torch.float64) * 4 - 30
        k[0, T // 3] = 60.0
    v = torch.randn(1, T, C, generator=g, dtype=torch.float64)
    decay = torch.tensor([-20.0, 20.0, 0.0, 1e-3] + [0.0] * (C - 4), dtype=torch.float64)
    decay[4:] = torch.rand(C - 4, generator=g, dtype=torch.float64) * 40 - 20
    boost = torch.rand(C, generator=g, dtype=torch.float64) * 40 - 20
    return decay / T, boost / T, k, v


@pytest.mark.parametrize("spike", [False, True])
@pytest.mark.parametrize("T", [1, 2, 5, 1000, 65_537, 200_000])
def test_accuracy_domain_forward(T, spike):
    w, u, k, v = domain_inputs(T, 8, seed=T, spike=spike)
    rows = sorted({0, T - 1, T // 3, T // 2} | set(torch.randint(0, T, (6,)).tolist()))
    exact = reference_rows(w, u, k, v, rows)
    for dtype in (torch.float32, torch.float64):
        y = biwkv(w, u, k.to(dtype), v.to(dtype), backend="cpu")
        assert torch.isfinite(y).all()
        torch.testing.assert_close(y[:, rows].double(), exact, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spike", [False, True])
def test_accuracy_domain_gradients(spike):
    T = 300
    w, u, k, v = domain_inputs(T, 8, seed=3, spike=spike)
    grad_y = torch.randn(1, T, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    exact = grads("reference", w, u, k, v, grad_y)
    fast = grads("cpu", w.float(), u.float(), k.float(), v.float(), grad_y)
    for name, a, b in zip(("y", "dw", "du", "dk", "dv"), fast, exact):
        assert torch.isfinite(a).all(), name
        scale = b.abs().max().clamp_min(1.0)
        torch.testing.assert_close(a.double() / scale, b / scale, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("decay", [-600.0, -100.0, 300.0, 5000.0, 1e6])
def test_outside_domain_exact(decay):
    """Decay far outside [-20, 20]: the chunk renormalisation keeps the forward exact while
    the weights span < e^600 (any decay >= -600) and for any positive decay."""
    T = 200
    w, u, k, v = domain_inputs(T, 8, seed=5)
    w = torch.full_like(w, decay / T)
    y = biwkv(w, u, k, v, backend="cpu")
    torch.testing.assert_close(y, biwkv_reference(w, u, k, v), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("decay", [-5000.0, -1e6])
def test_far_outside_domain_forward_finite(decay):
    """Weights spanning more than float64's range (up to e^5000): finite, approximate."""
    for T in (9, 200):
        w, u, k, v = domain_inputs(T, 8, seed=5)
        y = biwkv(torch.full_like(w, decay / T), u, k, v, backend="cpu")
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("decay", [-300.0, 300.0, 5000.0])
def test_outside_domain_gradients(decay):
    """The backward is exact while |decay| <= 300 and for any positive decay."""
    T = 100
    w, u, k, v = domain_inputs(T, 8, seed=6)
    w = torch.full_like(w, decay / T)
    grad_y = torch.randn(1, T, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for name, a, b in zip(("y", "dw", "du", "dk", "dv"), grads("cpu", w, u, k, v, grad_y),
                          grads("reference", w, u, k, v, grad_y)):
        scale = b.abs().max().clamp_min(1.0)
        torch.testing.assert_close(a / scale, b / scale, rtol=1e-8, atol=1e-8, msg=name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computed_in_float32(dtype):
    w, u, k, v = make_inputs(2, 40, 6, dtype=torch.float32, k_scale=1.0)
    k_low, v_low = k.to(dtype).requires_grad_(), v.to(dtype)
    y = biwkv(w, u, k_low, v_low)
    assert y.dtype == dtype
    expected = biwkv_reference(w, u, k_low.float(), v_low.float())
    torch.testing.assert_close(y.float(), expected.float(), rtol=0, atol=4 * torch.finfo(dtype).eps)
    y.float().sum().backward()
    assert k_low.grad.dtype == dtype and torch.isfinite(k_low.grad.float()).all()


def test_noncontiguous_inputs():
    w, u, k, v = make_inputs(2, 30, 6)
    k_t = k.transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
    torch.testing.assert_close(biwkv(w, u, k_t, v), biwkv_reference(w, u, k, v))


def test_flop_counter_counts_biwkv():
    B, T, C = 2, 33, 5
    w, u, k, v = make_inputs(B, T, C, dtype=torch.float32)
    k.requires_grad_()
    with FlopCounterMode(display=False) as counter:
        biwkv(w, u, k, v).sum().backward()
    counts = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    assert counts["lalic.biwkv"] == FLOPS_PER_ELEMENT["forward"] * B * T * C
    assert counts["lalic.biwkv_backward"] == FLOPS_PER_ELEMENT["backward"] * B * T * C


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "change, argument",
    [
        (lambda a: {**a, "k": a["k"][0]}, "`k`"),  # wrong rank
        (lambda a: {**a, "v": a["v"][:, :-1]}, "`v`"),  # wrong shape
        (lambda a: {**a, "w": a["w"][:-1]}, "`w`"),
        (lambda a: {**a, "u": a["u"][None]}, "`u`"),
        (lambda a: {**a, "k": a["k"].long(), "v": a["v"].long()}, "`k`"),  # wrong dtype
        (lambda a: {**a, "w": a["w"].int()}, "`w`"),
        (lambda a: {**a, "v": a["v"].double()}, "`v`"),  # dtype differs from k
        (lambda a: {**a, "u": a["u"].to("meta")}, "`u`"),  # wrong device
        (lambda a: {**a, "v": a["v"].numpy()}, "`v`"),  # not a tensor
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(change, argument):
    w, u, k, v = make_inputs(2, 5, 3, dtype=torch.float32)
    args = change({"w": w, "u": u, "k": k, "v": v})
    with pytest.raises(ValueError, match=argument):
        biwkv(**args)


def test_bad_input_message_gives_expected_shape():
    w, u, k, v = make_inputs(2, 5, 3, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"\(C,\) = \(3,\)"):
        biwkv(w[:2], u, k, v)


def test_unknown_backend():
    w, u, k, v = make_inputs(1, 4, 2)
    with pytest.raises(ValueError, match="backend"):
        biwkv(w, u, k, v, backend="cuda")


def test_triton_backend_on_cpu_tensors_is_a_clear_error(monkeypatch):
    from lalic_core.ops import biwkv as biwkv_module

    if not biwkv_module.triton_available():
        pytest.skip("triton is not installed")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    w, u, k, v = make_inputs(1, 4, 2)
    with pytest.raises(ValueError, match="CUDA"):
        biwkv(w, u, k, v, backend="triton")


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 0, 3), (2, 5, 0)])
def test_empty_inputs(backend, shape):
    k = torch.randn(*shape, requires_grad=True)
    v, w, u = torch.randn(*shape), torch.randn(shape[2]), torch.randn(shape[2])
    y = biwkv(w, u, k, v, backend=backend)
    assert y.shape == shape
    y.sum().backward()
    assert k.grad.shape == shape


def test_cpu_backend_is_bit_identical_across_thread_counts_and_batches():
    """An entropy decoder on other threads than its encoder must compute the same bits."""
    g = torch.Generator().manual_seed(5)
    k = torch.randn(3, 700, 40, generator=g)
    v = torch.randn(3, 700, 40, generator=g)
    w = torch.rand(40, generator=g) * 0.1
    u = torch.randn(40, generator=g)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = biwkv(w, u, k, v, backend="cpu")
        torch.set_num_threads(2)
        two = biwkv(w, u, k, v, backend="cpu")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    assert torch.equal(biwkv(w, u, k[1:2], v[1:2], backend="cpu"), one[1:2])


def test_deprecated_torch_backend_is_the_cpu_backend_and_warns_once(monkeypatch):
    from lalic_core.ops import biwkv as biwkv_module

    monkeypatch.setattr(biwkv_module, "_warned_backends", set())
    w, u, k, v = make_inputs(2, 30, 5)
    with pytest.warns(DeprecationWarning, match="'cpu'"):
        y = biwkv(w, u, k, v, backend="torch")
    assert torch.equal(y, biwkv(w, u, k, v, backend="cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(biwkv(w, u, k, v, backend="torch"), y)  # warned once only
