"""lalic_core.analysis.erf: RepLKNet-style effective receptive fields."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from lalic_core.analysis.erf import (
    area_ratios,
    compute_erf,
    erf_contributions,
    plot_erf,
    plot_erf_grid,
    scale_erf,
)
from lalic_core.baseline_layers import make_stack


def _inputs(n=4, c=8, size=32, seed=0):
    return torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def _support(result):
    nz = (result.contributions > 0).nonzero()
    return nz.min(0).values.tolist(), nz.max(0).values.tolist(), len(nz)


def test_pointwise_stack_has_a_one_pixel_erf():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 8, 1), nn.GELU(), nn.Conv2d(8, 8, 1))
    result = compute_erf(model, _inputs())
    assert _support(result) == ([16, 16], [16, 16], 1)
    assert result.num_images == 4
    assert all(side == 1 for side, _ in result.area_ratios.values())


def test_single_3x3_conv_erf_is_its_kernel():
    torch.manual_seed(0)
    result = compute_erf(nn.Conv2d(8, 8, 3, padding=1), _inputs())
    assert _support(result) == ([15, 15], [17, 17], 9)
    assert result.area_ratios[0.99] == (3, 9 / 32**2)


def test_window_attention_stack_stays_in_its_windows_and_global_sees_everything():
    torch.manual_seed(0)
    x = _inputs(n=2, c=16)
    cnn = compute_erf(make_stack("cnn", 16, 2), x)
    tcm = compute_erf(make_stack("tcm", 16, 2), x)
    glob = compute_erf(make_stack("global", 16, 1), x)
    assert _support(cnn) == ([14, 14], [18, 18], 25)  # two 3x3 convs
    # W then SW (window 8, shift 4): the centre's shifted window [12, 20) reads windows [8, 24)
    assert _support(tcm)[:2] == ([8, 8], [23, 23])
    assert (glob.contributions > 0).all()
    assert cnn.ratio(0.99) < tcm.ratio(0.99) < glob.ratio(0.99)


def test_area_ratios_grow_with_threshold():
    torch.manual_seed(0)
    result = compute_erf(make_stack("global", 16, 1), _inputs(n=2, c=16))
    ratios = [result.ratio(t) for t in (0.2, 0.3, 0.5, 0.99)]
    assert ratios == sorted(ratios) and ratios[0] < ratios[-1]


def test_area_ratio_on_a_known_map():
    flat = torch.ones(9, 9)  # a share > t needs: 0.2 -> 5x5 (25/81), 0.5 -> 7x7, 0.99 -> 9x9
    ratios = area_ratios(flat, (0.2, 0.5, 0.99))
    assert ratios == {0.2: (5, 25 / 81), 0.5: (7, 49 / 81), 0.99: (9, 1.0)}
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        area_ratios(flat, (1.0,))
    with pytest.raises(ValueError, match="all zeros"):
        area_ratios(torch.zeros(5, 5))


def test_scale_erf():
    scaled = scale_erf(torch.tensor([[0.0, 9.0], [99.0, 999.0]]))
    torch.testing.assert_close(
        scaled, torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]], dtype=torch.float64)
    )
    assert scale_erf(torch.zeros(2, 2)).sum() == 0
    linear = scale_erf(torch.tensor([[0.0, 9.0], [99.0, 999.0]]), log=False)
    torch.testing.assert_close(
        linear, torch.tensor([[0.0, 9.0], [99.0, 999.0]], dtype=torch.float64) / 999
    )


def test_downsampling_transform_and_iterable_inputs():
    torch.manual_seed(0)
    g_a = nn.Sequential(nn.Conv2d(3, 8, 5, 2, 2), nn.GELU(), nn.Conv2d(8, 8, 3, 2, 1))
    images = [torch.rand(3, 32, 32) for _ in range(3)]
    contributions, used = erf_contributions(g_a, images)
    assert contributions.shape == (32, 32) and used == 3
    batched, _ = erf_contributions(g_a, torch.stack(images), batch_size=2)
    torch.testing.assert_close(contributions, batched)
    # output centre (4, 4) at stride 4 sits over input (16, 16); 5x5 then 3x3 at stride 2
    nz = (contributions > 0).nonzero()
    assert nz.min(0).values.tolist() == [12, 12] and nz.max(0).values.tolist() == [20, 20]


def test_model_mode_restored_and_nan_images_skipped():
    class NanForNegativeCorner(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(x) * torch.sqrt(x[:, :1, :1, :1])  # NaN where the corner is < 0

    model = NanForNegativeCorner().train()
    x = torch.rand(4, 2, 8, 8)
    x[1, 0, 0, 0] = -1.0
    _, used = erf_contributions(model, x)
    assert used == 3 and model.training


def test_errors():
    with pytest.raises(ValueError, match="returned"):
        erf_contributions(nn.Flatten(), torch.rand(1, 2, 4, 4))
    with pytest.raises(ValueError, match="same H, W"):
        erf_contributions(nn.Conv2d(2, 2, 1), [torch.rand(2, 4, 4), torch.rand(2, 5, 5)])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        erf_contributions(nn.Conv2d(2, 2, 1), torch.rand(4, 4))


def test_plots():
    torch.manual_seed(0)
    result = compute_erf(nn.Conv2d(4, 4, 5, padding=2), torch.rand(2, 4, 16, 16))
    fig = plot_erf(result.scaled, title="conv5")
    assert len(fig.axes) == 2  # heat map + colour bar
    plt.close(fig)
    fig = plot_erf_grid(
        {"a": result.scaled, "b": result.scaled, "c": result.scaled},
        ncols=2,
        ratios={"a": result.area_ratios},
    )
    assert "50%" in fig.axes[0].get_xlabel()
    plt.close(fig)


def test_birwkv_block_has_a_full_image_erf():
    pytest.importorskip("lalic_core.layers", reason="lalic_core.layers is not available")
    torch.manual_seed(0)
    result = compute_erf(make_stack("birwkv", 16, 1), _inputs(n=2, c=16, size=16))
    assert (result.contributions > 0).all()


# ------------------------------------------------------------------ studies over images (issue 15)
def test_area_ratios_from_profile_match_area_ratios():
    from lalic_core.analysis.erf import area_ratios_from_profile, chebyshev_profile

    g = torch.Generator().manual_seed(3)
    for shape in ((9, 13), (16, 24), (7, 7)):
        m = torch.rand(shape, generator=g, dtype=torch.float64) ** 4
        m[shape[0] // 2, shape[1] // 2] = 5.0
        assert area_ratios_from_profile(chebyshev_profile(m), shape) == area_ratios(m)
        # linear in the map: profile of a sum = sum of profiles
        m2 = torch.rand(shape, generator=g, dtype=torch.float64)
        assert torch.allclose(chebyshev_profile(m + m2),
                              chebyshev_profile(m) + chebyshev_profile(m2))


def test_area_ratios_at_thresholds_on_known_map():
    from lalic_core.analysis.erf import area_ratios_from_profile, chebyshev_profile

    m = torch.zeros(11, 11, dtype=torch.float64)
    m[4:7, 4:7] = 0.5 / 8  # ring 1 holds a half
    m[5, 5] = 0.25  # a quarter in the centre pixel
    m[0, 0] = 0.25  # the corner holds the last quarter
    r = area_ratios_from_profile(chebyshev_profile(m), (11, 11))
    assert r[0.2] == (1, 1 / 121)
    assert r[0.3] == (3, 9 / 121) and r[0.5] == (3, 9 / 121)
    assert r[0.99] == (11, 1.0)


def test_erf_study_ci_and_floor():
    from lalic_core.analysis.erf import erf_study

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 5, padding=2), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    images = [torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(i))
              for i in range(5)]
    st = erf_study(model, images, resamples=200, seed=0)
    assert st.image_size == (24, 32) and len(st.names) == 5
    for t in (0.2, 0.3, 0.5, 0.99):
        lo, hi = st.area_ratio_ci[t]
        assert lo <= st.area_ratio[t] + 1e-12 and st.area_ratio[t] <= hi + 1e-12
        assert len(st.per_image_ratio[t]) == 5
    # a 7x7 total support: nothing beyond it, so the far field is exactly zero
    assert st.floor == 0.0 and st.far_share == 0.0
    assert st.area_ratio[0.99] <= 49 / (24 * 32) + 1e-12
    again = erf_study(model, images, resamples=200, seed=0)
    assert again.area_ratio_ci == st.area_ratio_ci  # fixed seed


def test_biwkv_floor_prediction_matches_synthetic_biwkv():
    """With zero keys, the predicted mixing weights are exactly the derivative of a synthetic
    BiWKV's centre output by its values (the reference backend, autograd)."""
    from lalic_core.analysis.erf import biwkv_centre_weights, predict_biwkv_floor
    from lalic_core.ops.biwkv import biwkv_reference

    g = torch.Generator().manual_seed(0)
    hw, C = (12, 16), 3
    T = hw[0] * hw[1]
    decay = torch.randn(C, generator=g, dtype=torch.float64) * 3
    boost = torch.randn(C, generator=g, dtype=torch.float64)
    t = (hw[0] // 2) * hw[1] + hw[1] // 2
    v = torch.zeros(1, T, C, dtype=torch.float64, requires_grad=True)
    y = biwkv_reference(decay / T, boost / T, torch.zeros(1, T, C, dtype=torch.float64), v)
    weights = []
    for c in range(C):
        (grad,) = torch.autograd.grad(y[0, t, c], v, retain_graph=True)
        weights.append(grad[0, :, c])
    assert torch.allclose(torch.stack(weights), biwkv_centre_weights(decay, boost, hw),
                          atol=1e-12)
    p = predict_biwkv_floor(decay, boost, hw)
    # every token keeps a weight of order exp(-|decay|)/T: T * weight within e^{+-|decay|}
    assert 0 < p["floor"] <= 1
    assert p["t_times_min"] >= float(torch.exp(-decay.abs().max())) * 0.5
    # a large decay gives a low floor, zero decay a flat one
    flat = predict_biwkv_floor(torch.zeros(C), torch.zeros(C), hw)
    assert flat["floor"] == pytest.approx(1.0) and flat["t_times_far_median"] == pytest.approx(1.0)
    steep = predict_biwkv_floor(torch.full((C,), 20.0), torch.zeros(C), hw)
    assert steep["floor"] < 0.01


def test_measure_biwkv_floors_on_birwkv_stack():
    from lalic_core.analysis.erf import measure_biwkv_floors

    torch.manual_seed(0)
    stack = make_stack("birwkv", 8, 2).eval()
    rows = measure_biwkv_floors(stack, torch.randn(1, 8, 12, 12))
    assert len(rows) == 2
    for row in rows:
        assert row["T"] == 144 and 0 < row["measured"]["floor"] <= 1
        assert 0 < row["predicted"]["floor"] <= 1
