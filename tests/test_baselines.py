"""lalic_core.baseline_layers (and the complexity sweep that runs them)."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
import torch

from lalic_core.analysis.complexity_sweep import format_sweep, plot_sweep, sweep
from lalic_core.baseline_layers import (
    BLOCK_KINDS,
    FMFFN,
    RelPosWindowAttention,
    WindowMSA,
    make_block,
    make_stack,
)

TORCH_KINDS = ["tcm", "fat", "cnn", "global"]


def _kinds():
    """All kinds; "birwkv" only when lalic_core.layers (the model part) is importable."""
    try:
        from lalic_core.layers import BiRWKVBlock  # noqa: F401
    except ImportError:
        return TORCH_KINDS
    return ["birwkv", *TORCH_KINDS]


@pytest.mark.parametrize("kind", _kinds())
@pytest.mark.parametrize("size", [(16, 16), (13, 10), (3, 5)])
def test_block_shapes_and_gradients(kind, size):
    torch.manual_seed(0)
    block = make_stack(kind, 16, depth=2)
    x = torch.randn(2, 16, *size, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_make_block_and_stack_options():
    stack = make_stack("tcm", 16, depth=3)
    shifts = [block.trans_branch.attn.attn.shift for block in stack]
    assert shifts == [(0, 0), (4, 4), (0, 0)]  # W, SW, W with window 8
    fat = make_block("fat", 16, shifted=True)
    assert [b.window for b in fat.attn.branches] == [(16, 16), (4, 4), (4, 16), (16, 4)]
    assert [b.shift for b in fat.attn.branches] == [(8, 8), (2, 2), (2, 8), (8, 2)]
    with pytest.raises(ValueError, match="kind must be one of"):
        make_block("swin", 16)
    with pytest.raises(ValueError, match="dim must be"):
        make_block("cnn", 0)
    with pytest.raises(ValueError, match="depth"):
        make_stack("cnn", 16, 0)
    with pytest.raises(ValueError, match="even dim"):
        make_block("tcm", 15)
    with pytest.raises(ValueError, match="num_heads divisible by 4"):
        make_block("fat", 16, num_heads=6)
    with pytest.raises(ValueError, match=r"\(B, 16, H, W\)"):
        make_block("cnn", 16)(torch.randn(1, 8, 4, 4))
    assert set(BLOCK_KINDS) == {"birwkv", "tcm", "fat", "cnn", "global"}


def _reference_window_attention(attn, q, k, v):
    """Brute force: every query attends to the keys in its (shifted, border-truncated) window,
    with the bias of their relative offset; no padding, rolling or masking tricks."""
    b, h, w, c = q.shape
    heads, hd = attn.num_heads, c // attn.num_heads
    (wh, ww), (sh, sw) = attn.window, attn.shift
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    win_r = (rows + (wh - sh if sh else 0)) // wh
    win_c = (cols + (ww - sw if sw else 0)) // ww
    same = (win_r[:, None] == win_r[None]) & (win_c[:, None] == win_c[None])
    dr = rows[:, None] - rows[None]
    dc = cols[:, None] - cols[None]
    index = ((dr + wh - 1) * (2 * ww - 1) + (dc + ww - 1)).clamp(0, attn.bias_table.shape[0] - 1)
    bias = attn.bias_table[index].permute(2, 0, 1)  # (heads, T, T)
    qt, kt, vt = (t.reshape(b, h * w, heads, hd).transpose(1, 2) for t in (q, k, v))
    scores = qt @ kt.transpose(-1, -2) / math.sqrt(hd) + bias
    scores = scores.masked_fill(~same, float("-inf"))
    out = scores.softmax(-1) @ vt
    return out.transpose(1, 2).reshape(b, h, w, c)


@pytest.mark.parametrize(
    "window,shift", [((4, 4), (0, 0)), ((4, 4), (2, 2)), ((2, 8), (1, 4)), ((8, 8), (0, 0))]
)
@pytest.mark.parametrize("size", [(8, 8), (10, 7), (3, 5)])
def test_window_attention_matches_brute_force(window, shift, size):
    torch.manual_seed(0)
    attn = RelPosWindowAttention(num_heads=2, window_size=window, shift=shift)
    with torch.no_grad():
        attn.bias_table.normal_()  # make the bias matter
    q, k, v = (torch.randn(2, *size, 8, dtype=torch.float64) for _ in range(3))
    attn = attn.double()
    expected = _reference_window_attention(attn, q, k, v)
    torch.testing.assert_close(attn(q, k, v), expected)


def test_window_attention_is_local():
    torch.manual_seed(0)
    msa = WindowMSA(8, num_heads=2, window_size=4, shifted=False)
    x = torch.randn(1, 8, 8, 8)
    x2 = x.clone()
    x2[:, 4:, 4:] += 1.0  # change only the bottom-right window
    y, y2 = msa(x), msa(x2)
    torch.testing.assert_close(y[:, :4], y2[:, :4])
    torch.testing.assert_close(y[:, :, :4], y2[:, :, :4])
    assert not torch.allclose(y[:, 4:, 4:], y2[:, 4:, 4:])


def test_fmffn_is_plain_mlp_at_initialisation():
    torch.manual_seed(0)
    ffn = FMFFN(8, patch=4)
    x = torch.randn(2, 6, 9, 8)  # not a multiple of the patch: padded and cropped
    torch.testing.assert_close(ffn(x), ffn.mlp(ffn.norm(x)), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        ffn.freq_weight[..., 0] = 0.5  # halving every frequency halves the output
    torch.testing.assert_close(ffn(x), 0.5 * ffn.mlp(ffn.norm(x)), atol=1e-5, rtol=1e-5)


def test_complexity_sweep_tiny():
    rows = sweep(kinds=("cnn", "global"), dim=8, resolutions=(8, 16), repeats=1)
    assert [(r["kind"], r["resolution"]) for r in rows] == [
        ("cnn", 8),
        ("cnn", 16),
        ("global", 8),
        ("global", 16),
    ]
    cnn, glob = rows[:2], rows[2:]
    assert cnn[1]["gflops"] / cnn[0]["gflops"] == pytest.approx(4.0)  # convolutions: linear in T
    # global attention: the T^2 attention term makes 4x the tokens cost more than 4x the FLOPs
    assert glob[1]["gflops"] / glob[0]["gflops"] > 6.0
    assert all(r["ms"] > 0 and r["skipped"] is None and r["peak_mib"] is None for r in rows)
    assert "| global | 16 |" in format_sweep(rows)
    fig = plot_sweep(rows)
    assert len(fig.axes) == 2
    plt.close(fig)
    fig = plot_sweep(rows, quantities=("gflops",))  # make figures: nothing timed
    assert [ax.get_ylabel() for ax in fig.axes] == ["GFLOPs"]
    plt.close(fig)
    with pytest.raises(ValueError, match="quantities"):
        plot_sweep(rows, quantities=("seconds",))
    with pytest.raises(ValueError, match="kinds"):
        sweep(kinds=("swin",))


def test_complexity_sweep_skips_after_time_budget():
    rows = sweep(
        kinds=("cnn",), dim=4, resolutions=(4, 8, 16), repeats=1, time_budget_s=0.0, flops=False
    )
    assert (
        rows[0]["skipped"] is None and "time_budget_s" in rows[1]["skipped"] and rows[2]["skipped"]
    )
    assert "skipped" in format_sweep(rows)


def test_birwkv_kind_is_lalics_block():
    from lalic_core import layers

    block = make_block("birwkv", 16)
    assert isinstance(block, layers.BiRWKVBlock)
    assert all(isinstance(b, layers.BiRWKVBlock) for b in make_stack("birwkv", 16, 2))
