"""Parameter and FLOP counting (lalic_core.complexity) against hand counts of the formulas."""
from __future__ import annotations

import pytest
import torch

from lalic_core.complexity import complexity_table, count_flops, count_params, time_modules
from lalic_core.layers import OmniShift
from lalic_core.models import LALIC
from lalic_core.ops.biwkv import FLOPS_PER_ELEMENT


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return LALIC.from_preset("tiny")


def _block_flops(C, T, r):
    """FLOPs of one Bi-RWKV block on T tokens: the linear maps (4 C^2 in Spatial Mix,
    (2r + 1) C^2 in Channel Mix), two collapsed 5x5 depthwise Omni-Shifts and BiWKV."""
    macs = T * (4 * C * C + (2 * r + 1) * C * C) + 2 * T * C * 25
    return 2 * macs + FLOPS_PER_ELEMENT["forward"] * T * C


def test_count_params_splits_omni_shift(tiny):
    p = count_params(tiny)
    shifts = [m for m in tiny.modules() if isinstance(m, OmniShift)]
    branches = sum(4 + m.dim * (1 + 9 + 25) for m in shifts)
    collapsed = sum(m.dim * 25 for m in shifts)
    assert p.total == sum(t.numel() for t in tiny.parameters())
    assert p.inference == p.total - branches
    assert p.training == p.total - collapsed
    assert p.training == sum(t.numel() for t in tiny.parameters() if t.requires_grad)


def test_paper_model_params_match_official_measurement():
    """The reference measured the official model at 65.4M inference parameters (66.1M with
    the Omni-Shift training branches)."""
    p = count_params(LALIC())
    assert round(p.inference / 1e6, 1) == 65.4
    assert round(p.total / 1e6, 1) == 66.1


def test_count_flops_g_a_by_hand(tiny):
    H, W = 64, 128
    f = count_flops(tiny, (H, W))
    c = tiny.config
    dims, depths, r = c.dims, c.depths, c.hidden_rate
    expected = 0
    in_ch, k = 3, 5
    for i in range(4):
        h, w = H >> (i + 1), W >> (i + 1)
        expected += 2 * h * w * dims[i] * in_ch * k * k  # stride-2 conv (bias not counted)
        if i < 3:
            expected += depths[i] * _block_flops(dims[i], h * w, r)
        in_ch, k = dims[i], 3
    assert f.by_part["g_a"] == expected
    assert sum(f.by_part.values()) == f.flops


def test_biwkv_flops_counted_from_the_operator(tiny):
    H, W = 64, 64
    f = count_flops(tiny, (H, W))
    c = tiny.config
    elements = 0
    for i in range(3):  # g_a and g_s stages
        elements += 2 * c.depths[i] * (H >> (i + 1)) * (W >> (i + 1)) * c.dims[i]
    elements += 2 * c.depths[3] * (H // 32) * (W // 32) * c.dims[4]  # h_a and h_s
    elements += (len(c.groups) - 1) * c.ctx_depth * (H // 16) * (W // 16) * c.ctx_dim
    assert f.biwkv_flops == FLOPS_PER_ELEMENT["forward"] * elements
    assert f.gmacs_without_biwkv == pytest.approx((f.flops - f.biwkv_flops) / 2e9)


def test_transposed_convs_counted_both_ways(tiny):
    f = count_flops(tiny, (64, 64))
    c = tiny.config
    # g_s: deconv3 M->N3 (4x4 in), N3->N2 (8x8), N2->N1 (16x16), deconv5 N1->3 (32x32)
    chans = [(c.dims[3], c.dims[2], 9, 16), (c.dims[2], c.dims[1], 9, 64),
             (c.dims[1], c.dims[0], 9, 256), (c.dims[0], 3, 25, 1024),
             # h_s: deconv5 N6->N5 (1x1 in), N5->N4 (2x2 in)
             (c.dims[5], c.dims[4], 25, 1), (c.dims[4], c.dims[3], 25, 4)]
    assert f.deconv_flops == sum(2 * cin * cout * k * px for cin, cout, k, px in chans)
    assert f.deconv_flops_by_output == 4 * f.deconv_flops
    assert f.gmacs_thop_style == pytest.approx(
        (f.flops - f.biwkv_flops + 3 * f.deconv_flops) / 2e9)


def test_flops_are_linear_in_pixels(tiny):
    a = count_flops(tiny, (64, 64))
    b = count_flops(tiny, (128, 128))
    assert b.flops == 4 * a.flops
    assert b.by_part == {k: 4 * v for k, v in a.by_part.items()}


def test_count_flops_leaves_mode_and_rejects_bad_size(tiny):
    tiny.train()
    count_flops(tiny, (64, 64))
    assert tiny.training
    with pytest.raises(ValueError, match="size"):
        count_flops(tiny, (64,))
    with pytest.raises(ValueError, match="path"):
        count_flops(tiny, (64, 64), path="backward")


def test_time_modules(tiny):
    times = time_modules(tiny, (64, 64), depth=1)
    assert {"g_a", "g_s", "latent_codec", "total"} <= set(times)
    assert all(t >= 0 for t in times.values())
    assert times["g_a"] + times["g_s"] <= times["total"]
    by_type = time_modules(tiny, (64, 64), types=(OmniShift, torch.nn.Linear))
    assert set(by_type) == {"OmniShift", "Linear", "total"}


def test_complexity_table_tiny():
    table = complexity_table(["tiny"], size=(64, 64))
    assert table.splitlines()[2].startswith("| tiny | - | - |")


@pytest.mark.slow
def test_paper_model_flops_match_official_measurement():
    """The reference measured 259.9 GMACs at 768x512 without BiWKV (OmniShift collapsed)."""
    torch.manual_seed(0)
    f = count_flops(LALIC(), (512, 768))
    assert round(f.gmacs_without_biwkv, 1) == 259.9


def test_compress_and_decompress_paths(tiny):
    tiny.eval()
    tiny.update(force=True)
    fwd = count_flops(tiny, (64, 128))
    enc = count_flops(tiny, (64, 128), path="compress")
    dec = count_flops(tiny, (64, 128), path="decompress")
    assert "g_a" in enc.by_part and "g_s" not in enc.by_part
    assert "g_s" in dec.by_part and "g_a" not in dec.by_part
    assert enc.by_part["g_a"] == fwd.by_part["g_a"] and dec.by_part["g_s"] == fwd.by_part["g_s"]
    # the forward runs the parameter aggregation on all positions in both checkerboard
    # passes, the coder on each half once; the anchor pass has no spatial context to compute
    assert 2 * enc.by_part["param aggregation"] == fwd.by_part["param aggregation"]
    assert 2 * enc.by_part["spatial context"] == fwd.by_part["spatial context"]
    assert enc.by_part["channel context"] == fwd.by_part["channel context"]
