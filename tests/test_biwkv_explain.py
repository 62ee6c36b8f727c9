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
    from lalic_core.widgets import weights_explorer

    ui = weights_explorer(H=4, W=4, schedule="now")
    assert list(ui.controls) == ["decay w", "boost u"]
    w, u = ui.controls.values()
    assert ui.redraws == 1 and ui.shown == {"decay w": "0.050", "boost u": "1.00"}
    before = plt.get_fignums()
    w.value = 0.2
    u.value = 2.0
    assert ui.redraws == 3 and ui.error is None
    assert ui.shown == {"decay w": "0.200", "boost u": "2.00"}
    assert "shown: decay w = 0.200 | boost u = 2.00" in ui.out.outputs[1]["text"]
    assert "image/png" in ui.out.outputs[0]["data"]
    assert plt.get_fignums() == before  # figures outside pyplot: nothing shown twice


def test_compare_backends_torch():
    rows = compare_backends(backends=("cpu",), shape=(1, 40, 6))
    assert [(r["backend"], r["dtype"]) for r in rows] == [("cpu", "float64"),
                                                         ("cpu", "float32")]
    assert rows[0]["max_abs"] < 1e-10 and rows[1]["max_abs"] < 1e-5
    assert "cpu" in format_errors(rows)


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_compare_backends_triton_interpreted():
    rows = compare_backends(backends=("triton",), shape=(1, 7, 3), dtypes=("float64",),
                            use_cache=False)
    assert rows[0]["backend"] == "triton" and rows[0]["max_abs"] < 1e-10
    assert "interpreter" in rows[0]["device"] or torch.cuda.is_available()


@pytest.mark.skipif(not triton_available() or torch.cuda.is_available(),
                    reason="needs triton on a machine without CUDA (the interpreter path)")
def test_triton_interpreter_result_is_cached(tmp_path, monkeypatch):
    from lalic_core.analysis import biwkv_explain

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(biwkv_explain, "_INTERPRETED", {})
    calls = []
    real = biwkv_explain._errors_interpreted

    def counting(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(biwkv_explain, "_errors_interpreted", counting)
    first = compare_backends(backends=("triton",), shape=(1, 5, 2), dtypes=("float64",))
    again = compare_backends(backends=("triton",), shape=(1, 5, 2), dtypes=("float64",))
    assert len(calls) == 1 and again == first  # the re-run started no process
    monkeypatch.setattr(biwkv_explain, "_INTERPRETED", {})  # a new kernel: the file answers
    from_disk = compare_backends(backends=("triton",), shape=(1, 5, 2), dtypes=("float64",))
    assert len(calls) == 1 and from_disk[0]["device"].endswith(", cached")
    assert from_disk[0]["max_abs"] == first[0]["max_abs"]
