"""Bi-RWKV layers (lalic_core.layers) against straightforward re-implementations of the
formulas in ../shared/reference/README.md, on small random inputs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lalic_core.layers import (
    BiRWKVBlock,
    ChannelMix,
    ChannelMixNoShift,
    OmniShift,
    SpatialMix,
)
from lalic_core.ops.biwkv import biwkv_reference

torch.manual_seed(0)


def _tokens(x):  # (B, C, H, W) -> (B, H*W, C)
    return x.flatten(2).transpose(1, 2)


def _map(t, hw):  # (B, H*W, C) -> (B, C, H, W)
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], *hw)


def _omni_shift_ref(m: OmniShift, x):
    a = m.alpha
    return (a[0] * x + a[1] * F.conv2d(x, m.conv1x1.weight, groups=m.dim)
            + a[2] * F.conv2d(x, m.conv3x3.weight, padding=1, groups=m.dim)
            + a[3] * F.conv2d(x, m.conv5x5.weight, padding=2, groups=m.dim))


def _spatial_mix_ref(m: SpatialMix, t, hw):
    T = t.shape[1]
    t = _tokens(_omni_shift_ref(m.omni_shift, _map(t, hw)))
    k, v, r = t @ m.key.weight.T, t @ m.value.weight.T, t @ m.receptance.weight.T
    y = biwkv_reference(m.decay / T, m.boost / T, k, v)
    return (torch.sigmoid(r) * y) @ m.output.weight.T


def _channel_mix_ref(m: ChannelMix, t, hw):
    t = _tokens(_omni_shift_ref(m.omni_shift, _map(t, hw)))
    hidden = torch.relu(t @ m.key.weight.T) ** 2
    return torch.sigmoid(t @ m.receptance.weight.T) * (hidden @ m.value.weight.T)


def _block_ref(b: BiRWKVBlock, x):
    hw = x.shape[2:]
    t = _tokens(x)
    t = t + b.gamma1 * _spatial_mix_ref(b.att, F.layer_norm(t, (b.dim,), b.ln1.weight,
                                                             b.ln1.bias), hw)
    t = t + b.gamma2 * _channel_mix_ref(b.ffn, F.layer_norm(t, (b.dim,), b.ln2.weight,
                                                             b.ln2.bias), hw)
    return _map(t, hw)


def _randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.3)


# ------------------------------------------------------------------------------ OmniShift
def test_omni_shift_collapsed_equals_branches():
    m = OmniShift(6)
    x = torch.randn(2, 6, 9, 7)
    ref = _omni_shift_ref(m, x)
    assert torch.allclose(m.forward_branches(x), ref, atol=1e-5)
    m.train()
    assert torch.allclose(m(x), ref, atol=1e-5)  # training form (kernel fused on the fly)
    m.eval()
    assert torch.allclose(m(x), ref, atol=1e-5)  # collapsed conv5x5_reparam
    assert torch.allclose(m.conv5x5_reparam.weight, m.collapsed_kernel(), atol=1e-6)


def test_omni_shift_eval_kernel_follows_weight_changes():
    m = OmniShift(4).eval()
    x = torch.randn(1, 4, 8, 8)
    before = m(x)
    with torch.no_grad():
        m.conv3x3.weight.add_(1.0)  # e.g. an optimizer step
    after = m(x)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, _omni_shift_ref(m, x), atol=1e-5)
    # loading a state dict (which carries a stale conv5x5_reparam) recollapses too
    other = OmniShift(4)
    state = other.state_dict()
    state["conv5x5_reparam.weight"] = torch.zeros_like(state["conv5x5_reparam.weight"])
    m.load_state_dict(state)
    assert torch.allclose(m(x), _omni_shift_ref(other, x), atol=1e-5)


def test_omni_shift_trains_branches_not_collapsed_kernel():
    m = OmniShift(3).train()
    m(torch.randn(2, 3, 6, 6)).square().sum().backward()
    for p in (m.alpha, m.conv1x1.weight, m.conv3x3.weight, m.conv5x5.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert not m.conv5x5_reparam.weight.requires_grad
    assert m.conv5x5_reparam.weight.grad is None


def test_omni_shift_rejects_bad_dim():
    with pytest.raises(ValueError, match="dim"):
        OmniShift(0)


# ------------------------------------------------------------------------------ mixes, block
@pytest.mark.parametrize("train", [True, False])
def test_block_matches_formula(train):
    b = BiRWKVBlock(8, hidden_rate=4)
    _randomise(b)
    b.train(train)
    x = torch.randn(2, 8, 5, 6)
    with torch.no_grad():
        out = b(x)
    ref = _block_ref(b, x)
    assert out.shape == x.shape
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_spatial_mix_uses_decay_and_boost_over_T():
    m = SpatialMix(4)
    _randomise(m)
    t = torch.randn(1, 12, 4)
    with torch.no_grad():
        out = m(t, (3, 4))
        ref = _spatial_mix_ref(m, t, (3, 4))
        # passing decay, boost unscaled would give something else
        m.decay.mul_(12)
        m.boost.mul_(12)
        wrong = m(t, (3, 4))
    assert torch.allclose(out, ref, atol=1e-5)
    assert not torch.allclose(wrong, ref, atol=1e-3)


def test_channel_mix_hidden_width_and_formula():
    m = ChannelMix(6, hidden_rate=8)
    assert m.key.weight.shape == (48, 6) and m.value.weight.shape == (6, 48)
    t = torch.randn(3, 20, 6)
    with torch.no_grad():
        assert torch.allclose(m(t, (4, 5)), _channel_mix_ref(m, t, (4, 5)), atol=1e-5)


def test_block_with_zero_gammas_is_identity():
    b = BiRWKVBlock(4)
    with torch.no_grad():
        b.gamma1.zero_()
        b.gamma2.zero_()
    x = torch.randn(1, 4, 3, 3)
    assert torch.equal(b(x), x)


def test_block_gradients_and_checkpointing_agree():
    torch.manual_seed(1)
    b = BiRWKVBlock(8)
    _randomise(b)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    b(x).square().sum().backward()
    grads = {n: p.grad.clone() for n, p in b.named_parameters() if p.grad is not None}
    gx = x.grad.clone()
    assert "att.decay" in grads and "att.omni_shift.alpha" in grads
    b.zero_grad()
    x.grad = None
    b.grad_checkpointing = True
    b(x).square().sum().backward()
    for n, g in grads.items():
        assert torch.allclose(dict(b.named_parameters())[n].grad, g, atol=1e-5), n
    assert torch.allclose(x.grad, gx, atol=1e-5)


def test_block_accepts_channels_last_and_rejects_wrong_channels():
    b = BiRWKVBlock(4).eval()
    x = torch.randn(1, 4, 5, 3)
    with torch.no_grad():
        a = b(x)
        c = b(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(a, c, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        b(torch.randn(1, 5, 3, 3))


# ------------------------------------------------------------------------------ param aggregation
def test_channel_mix_no_shift_formula_and_pointwise():
    m = ChannelMixNoShift(10, 6)
    _randomise(m)
    x = torch.randn(2, 10, 4, 5)
    with torch.no_grad():
        out = m(x)
        mix = F.conv2d(x, m.mix.weight, m.mix.bias)
        t = _tokens(mix)
        n = F.layer_norm(t, (6,), m.norm.weight, m.norm.bias)
        branch = torch.sigmoid(n @ m.receptance.weight.T) * (
            torch.relu(n @ m.key.weight.T) ** 2 @ m.value.weight.T)
        ref = _map(t + branch, (4, 5))
        assert torch.allclose(out, ref, atol=1e-5)
        # 1x1 receptive field: changing one pixel changes only that pixel's output
        x2 = x.clone()
        x2[:, :, 1, 2] += 1.0
        changed = (m(x2) - out).abs().amax(dim=(0, 1)) > 0
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[1, 2] = True
    assert torch.equal(changed, expected)


def test_inference_path_equals_training_path_and_survives_inference_mode():
    from lalic_core import layers

    b = BiRWKVBlock(8)
    _randomise(b)
    b.eval()
    x = torch.randn(2, 8, 6, 5)
    layers._BUFFERS.store.clear()  # scratch buffers first created under inference_mode
    with torch.inference_mode():
        a = b(x)
    with torch.no_grad():
        c = b(x)  # writes into the same scratch buffers outside inference_mode
    d = b(x)  # autograd path (the formulas as written)
    assert torch.equal(a, c)
    assert torch.allclose(c, d, atol=1e-5)
