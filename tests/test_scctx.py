"""lalic_core.analysis.scctx: the SCCTX decoding order over a real bitstream."""
import pytest
import torch

from lalic_core import LALIC
from lalic_core.analysis.scctx import decode_steps, plot_decode_step


@pytest.fixture(scope="module")
def coded():
    torch.manual_seed(0)
    model = LALIC.from_preset("tiny").eval()
    model.update(force=True)
    x = torch.rand(1, 3, 128, 192)
    out = model.compress(x)
    return model, out, list(decode_steps(model, out["strings"], out["shape"]))


def test_one_step_per_group_and_pass(coded):
    model, _, steps = coded
    assert len(steps) == 2 * len(model.groups)
    assert [(s.group, s.phase) for s in steps[:2]] == [(0, "anchor"), (0, "non-anchor")]
    # masks: anchors are a checkerboard half of the group, then the whole group
    m = sum(model.groups)
    for s in steps:
        g = s.channels.stop - s.channels.start
        assert s.step_mask.sum().item() == g * s.mask.shape[1] * s.mask.shape[2] // 2
        assert not s.step_mask[: s.channels.start].any()
    assert steps[-1].mask.all() and steps[-1].mask.shape[0] == m
    fractions = [s.mask.float().mean().item() for s in steps]
    assert fractions == sorted(fractions)


def test_bits_come_from_the_real_strings(coded):
    _, out, steps = coded
    assert [s.bits for s in steps] == [8 * len(b[0]) for b in out["strings"][:-1]]
    total = 8 * sum(len(b[0]) for b in out["strings"])
    assert steps[-1].cumulative_bits == total


def test_last_step_equals_decompress_exactly(coded):
    model, out, steps = coded
    ref = model.decompress(out["strings"], out["shape"])["x_hat"]
    assert torch.equal(steps[-1].x_hat, ref)
    assert torch.equal(steps[-1].y_hat, out["y_hat"])


def test_partial_latent_keeps_decoded_values(coded):
    _, out, steps = coded
    s = steps[3]
    decoded = s.mask.expand_as(out["y_hat"])
    assert torch.equal(s.y_hat[decoded], out["y_hat"][decoded])
    # undecoded positions hold predicted means (real numbers, not the zeros of an empty y)
    assert torch.isfinite(s.y_hat).all()


def test_bad_strings_are_named(coded):
    model, out, _ = coded
    with pytest.raises(ValueError, match="strings"):
        list(decode_steps(model, out["strings"][:-1], out["shape"]))


def test_plot(coded):
    _, _, steps = coded
    fig = plot_decode_step(steps, 2)
    assert len(fig.axes) >= 5
    with pytest.raises(ValueError, match="index"):
        plot_decode_step(steps, 99)
