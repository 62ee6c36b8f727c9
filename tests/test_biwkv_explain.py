"""lalic_core.analysis.biwkv_explain: the implied attention matrix, its plots, backend errors."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from lalic_core.analysis.biwkv_explain import (
    attention_weights,
    compare_backends,
    format_errors,
    plot_weight_matrices,
    plot_weight_profile,
    weights_explorer,
)
from lalic_core.ops.biwkv import biwkv, triton_available


def _inputs(B=2, T=23, C=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(B, T, C, generator=g, dtype=torch.float64) * 2
    v = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    w = torch.randn(C, generator=g, dtype=torch.float64) * 0.3  # negative ones too
    u = torch.randn(C, generator=g, dtype=torch.float64)
    return w, u, k, v


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_weights_times_values_is_biwkv(backend):
    w, u, k, v = _inputs()
    A = attention_weights(w, u, k)  # (B, C, T, T)
    assert A.shape == (2, 5, 23, 23)
    y = torch.einsum("bcti,bic->btc", A, v)
    torch.testing.assert_close(y, biwkv(w, u, k, v, backend=backend), rtol=1e-9, atol=1e-10)


def test_rows_are_probabilities():
    w, u, k, _ = _inputs()
    A = attention_weights(w, u, k)
    assert (A >= 0).all()
    torch.testing.assert_close(A.sum(-1), torch.ones(A.shape[:-1], dtype=torch.float64))


def test_equal_keys_give_a_mirror_symmetric_matrix():
    A = attention_weights([0.2], [1.5], T=9)[0, 0]
    torch.testing.assert_close(A, A.flip(0, 1))  # reading the sequence backwards
    # the middle row: weight ratio of neighbours at distance d and d+1 is exp(w); the own
    # token's weight relative to a neighbour's is exp(u)
    row = A[4]
    torch.testing.assert_close(row[2] / row[1], torch.exp(torch.tensor(0.2, dtype=torch.float64)))
    torch.testing.assert_close(row[4] / row[3], torch.exp(torch.tensor(1.5, dtype=torch.float64)))
    # w = 0 and u = 0: uniform attention
    torch.testing.assert_close(attention_weights(0.0, 0.0, T=4)[0, 0],
                               torch.full((4, 4), 0.25, dtype=torch.float64))


def test_bad_arguments():
    with pytest.raises(ValueError, match="same shape"):
        attention_weights([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="positive `T`"):
        attention_weights([0.1], [0.1])
    with pytest.raises(ValueError, match=r"\(B, T, 1\)"):
        attention_weights([0.1], [0.1], torch.zeros(1, 4, 2))


def test_plots_draw():
    fig = plot_weight_matrices([(0.1, 0.0), (-0.02, 2.0)], T=16, k_scale=1.0)
    assert len([a for a in fig.axes if a.get_images()]) == 2
    fig2 = plot_weight_profile(0.05, 1.0, H=6, W=8)
    image = fig2.axes[1].get_images()[0].get_array()
    assert image.shape == (6, 8)
    plt.close("all")


def test_explorer_redraws_on_slider_change():
    ui = weights_explorer(H=4, W=4)
    sliders = [c for c in ui.children if hasattr(c, "value") and c.description]
    assert [s.description for s in sliders] == ["decay w", "boost u"]
    before = plt.get_fignums()
    sliders[0].value = 0.2
    assert len(plt.get_fignums()) > len(before)  # a new figure was drawn
    plt.close("all")


def test_compare_backends_torch():
    rows = compare_backends(backends=("cpu",), shape=(1, 40, 6))
    assert [(r["backend"], r["dtype"]) for r in rows] == [("cpu", "float64"),
                                                         ("cpu", "float32")]
    assert rows[0]["max_abs"] < 1e-10 and rows[1]["max_abs"] < 1e-5
    assert "cpu" in format_errors(rows)


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_compare_backends_triton_interpreted():
    rows = compare_backends(backends=("triton",), shape=(1, 7, 3), dtypes=("float64",))
    assert rows[0]["backend"] == "triton" and rows[0]["max_abs"] < 1e-10
    assert "interpreter" in rows[0]["device"] or torch.cuda.is_available()
