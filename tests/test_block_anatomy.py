"""lalic_core.analysis.block_anatomy: the helpers of notebook 02 (Bi-RWKV block anatomy)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import torch

from lalic_core.analysis.block_anatomy import (
    compare_block_paths,
    example_block,
    format_shape_trace,
    omni_shift_kernels,
    plot_omni_shift_kernels,
    plot_token_order,
    reparameterization_check,
    token_order,
    trace_shapes,
)
from lalic_core.layers import BiRWKVBlock, OmniShift


def _block(dim=8, seed=0):
    torch.manual_seed(seed)
    return BiRWKVBlock(dim)


def test_token_order_is_row_major():
    np.testing.assert_array_equal(token_order(2, 3), [[0, 1, 2], [3, 4, 5]])


def test_branch_kernels_sum_to_the_collapsed_kernel():
    torch.manual_seed(1)
    shift = OmniShift(4)
    for channel in (0, 3):
        k = omni_shift_kernels(shift, channel)
        assert all(v.shape == (5, 5) for v in k.values())
        parts = sum(v for name, v in k.items() if name != "collapsed 5x5")
        np.testing.assert_allclose(parts, k["collapsed 5x5"], atol=1e-7)
        np.testing.assert_allclose(k["collapsed 5x5"],
                                   shift.collapsed_kernel()[channel, 0].detach().numpy(),
                                   atol=1e-7)
        assert k["identity x alpha0"][2, 2] == float(shift.alpha[0].detach())


def test_reparameterization_check_agrees_and_restores_mode():
    torch.manual_seed(2)
    shift = OmniShift(6).train()
    out = reparameterization_check(shift, torch.randn(2, 6, 9, 7))
    assert out["branches_vs_training_forward"] < 1e-5
    assert out["branches_vs_collapsed_kernel"] < 1e-5
    assert shift.training


def test_trace_shapes_lists_every_module_and_biwkv():
    block = _block(8).train()
    rows = trace_shapes(block, torch.randn(1, 8, 4, 5))
    by_name = {r["name"]: r for r in rows}
    assert by_name["(block)"]["input"] == by_name["(block)"]["output"] == "(1, 8, 4, 5)"
    assert by_name["ffn.key"]["output"] == "(1, 20, 32)"  # hidden rate 4
    assert by_name["att.omni_shift"]["input"] == "(1, 8, 4, 5)"  # maps, not tokens
    biwkv_rows = [r for r in rows if r["type"] == "BiWKV"]
    assert len(biwkv_rows) == 1 and biwkv_rows[0]["output"] == "(1, 20, 8)"
    # call order: the BiWKV row comes after receptance and before the output projection
    names = [r["name"] for r in rows]
    assert names.index("att.receptance") < names.index(biwkv_rows[0]["name"]) \
        < names.index("att.output")
    assert "biwkv(w, u, k, v)" in format_shape_trace(rows)
    assert block.training  # mode restored
    assert not block._forward_hooks and not block.att._forward_pre_hooks  # hooks removed


def test_block_paths_agree():
    block = _block(16)
    assert compare_block_paths(block, torch.randn(1, 16, 6, 6)) < 1e-5


def test_example_block_random():
    block, what = example_block(12, trained=False)
    assert isinstance(block, BiRWKVBlock) and block.dim == 12 and "random" in what


def test_plots_draw():
    fig = plot_token_order(3, 4)
    assert fig.axes[0].get_images()[0].get_array().shape == (3, 4)
    torch.manual_seed(3)
    fig = plot_omni_shift_kernels(OmniShift(3), channel=1)
    assert len([a for a in fig.axes if a.get_images()]) == 5
    plt.close("all")
