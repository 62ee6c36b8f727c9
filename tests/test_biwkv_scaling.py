"""benchmarks/biwkv_scaling.py: the attentions it times compute what they claim, and the
sweep and plot run (tiny sizes; timings are not checked)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from biwkv_scaling import (
    full_attention,
    grid_shape,
    plot_scaling,
    scaling_sweep,
    window_attention,
)


def test_grid_shape_is_near_square():
    assert grid_shape(1024) == (32, 32)
    assert grid_shape(2048) == (32, 64)
    assert grid_shape(131072) == (256, 512)


def test_window_attention_attends_within_8x8_windows_only():
    B, H, W, C = 1, 16, 24, 64
    x = torch.randn(B, H * W, C)
    out = window_attention(x, H, W).view(B, H, W, C)
    grid = x.view(B, H, W, C)
    for wy, wx in [(0, 0), (1, 2), (0, 1)]:
        patch = grid[:, 8 * wy:8 * wy + 8, 8 * wx:8 * wx + 8].reshape(B, 64, C)
        expected = full_attention(patch).view(B, 8, 8, C)
        torch.testing.assert_close(out[:, 8 * wy:8 * wy + 8, 8 * wx:8 * wx + 8], expected)


def test_full_attention_is_multi_head_softmax_attention():
    x = torch.randn(2, 10, 64)
    heads = x.view(2, 10, 2, 32).transpose(1, 2)
    weights = torch.softmax(heads @ heads.transpose(-1, -2) / 32**0.5, dim=-1)
    expected = (weights @ heads).transpose(1, 2).reshape(2, 10, 64)
    torch.testing.assert_close(full_attention(x), expected)
    torch.testing.assert_close(full_attention(x), F.scaled_dot_product_attention(
        heads, heads, heads).transpose(1, 2).reshape(2, 10, 64))


def test_sweep_and_plot_run():
    rows = scaling_sweep((256, 1024), channels=32, full_attention_max_tokens=256, repeats=1,
                         log=None)
    assert [r["tokens"] for r in rows] == [256, 1024]
    assert all(r["biwkv"] > 0 and r["window_attention"] > 0 for r in rows)
    assert rows[0]["full_attention"] > 0 and rows[1]["full_attention"] is None
    fig = plot_scaling(rows, channels=32)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "tokens" in ax.get_xlabel() and "ms" in ax.get_ylabel()
