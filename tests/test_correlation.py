"""lalic_core.analysis.correlation: spatial correlation of (y - mu) / sigma."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F

from lalic_core.analysis.correlation import (
    latent_correlation,
    latent_statistics,
    model_latent_correlation,
    normalised_residual,
    plot_correlation,
    plot_correlation_groups,
    spatial_correlation,
)


def _noise(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _box_smoothed(noise):
    c = noise.shape[1]
    kernel = torch.ones(c, 1, 3, 3, dtype=noise.dtype) / 9
    return F.conv2d(noise, kernel, padding=1, groups=c)


def test_iid_noise_has_no_off_centre_correlation():
    result = latent_correlation(_noise(2, 16, 32, 32), k=2)
    k = result.k
    assert result.overall.shape == (5, 5) and result.per_channel.shape == (16, 5, 5)
    assert result.overall[k, k] == pytest.approx(1.0)
    off = result.overall.clone()
    off[k, k] = 0
    assert off.abs().max() < 0.03
    assert result.mean_abs_offcentre() < 0.02


def test_smoothed_field_has_large_neighbour_correlation():
    result = latent_correlation(_box_smoothed(_noise(2, 8, 48, 48)), k=3)
    k = result.k
    # a 3x3 box filter shares 6 of 9 inputs between horizontal neighbours: rho = 2/3
    assert result.overall[k, k + 1] == pytest.approx(2 / 3, abs=0.05)
    assert result.overall[k + 1, k + 1] == pytest.approx(4 / 9, abs=0.05)  # diagonal: 4 of 9
    assert abs(result.overall[k, k + 3]) < 0.05  # beyond the filter's reach


def test_known_shift_correlation():
    e = _noise(2, 8, 40, 42)
    field = e[..., :, :40] + e[..., :, 2:]  # x[i, j] = e[i, j] + e[i, j + 2]
    corr = spatial_correlation(field, k=2)  # (N, C, 5, 5)
    mean = corr.mean(dim=(0, 1))
    assert mean[2, 4] == pytest.approx(0.5, abs=0.05) and mean[2, 0] == pytest.approx(0.5, abs=0.05)
    assert abs(mean[2, 3]) < 0.05 and abs(mean[0, 2]) < 0.05
    # symmetric by construction: the pairs at (dy, dx) and (-dy, -dx) are the same
    torch.testing.assert_close(corr, corr.flip(-1).flip(-2))


def test_normalisation_and_groups():
    smooth, white = _box_smoothed(_noise(1, 4, 32, 32)), _noise(1, 4, 32, 32, seed=1)
    residual = torch.cat([smooth, white], dim=1)
    mu = _noise(1, 8, 32, 32, seed=2) * 5
    sigma = _noise(1, 8, 32, 32, seed=3).abs() + 0.5
    y = mu + sigma * residual
    torch.testing.assert_close(normalised_residual(y, mu, sigma), residual)
    result = latent_correlation(y, mu, sigma, k=1, groups=[4, 4])
    assert len(result.per_group) == 2
    assert result.mean_abs_offcentre(result.per_group[0]) > 0.3
    assert result.mean_abs_offcentre(result.per_group[1]) < 0.05
    # without mu, sigma the heteroscedastic mean pattern dominates and the result differs
    assert not torch.allclose(latent_correlation(y, k=1).overall, result.overall)


def test_constant_channel_is_ignored():
    y = _noise(1, 3, 16, 16)
    y[:, 1] = 0.5
    result = latent_correlation(y, k=1)
    assert torch.isnan(result.per_channel[1]).all() and torch.isfinite(result.overall).all()


def test_errors():
    y = _noise(1, 4, 8, 8)
    with pytest.raises(ValueError, match="mu must have the shape"):
        latent_correlation(y, mu=torch.zeros(1, 4, 8, 7))
    with pytest.raises(ValueError, match="groups"):
        latent_correlation(y, groups=[2, 1])
    with pytest.raises(ValueError, match="k"):
        spatial_correlation(y, k=8)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        spatial_correlation(y[0], k=1)


def test_latent_statistics_from_compressai_models():
    from compressai.models import Elic2022Official, MeanScaleHyperprior

    torch.manual_seed(0)
    images = torch.rand(1, 3, 64, 64)
    hyperprior = MeanScaleHyperprior(N=8, M=12)
    stats = latent_statistics(hyperprior, images)
    assert stats.groups == [12] and stats.y.shape == (1, 12, 4, 4)
    torch.testing.assert_close(stats.y, hyperprior.g_a(images))
    assert (stats.sigma >= 0.11 - 1e-6).all()  # the entropy model's scale lower bound

    elic = Elic2022Official(N=16, M=24, groups=[4, 4, 16])
    result = model_latent_correlation(elic, images, k=1)
    assert result.groups == [4, 4, 16] and result.overall[1, 1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no GaussianConditional"):
        latent_statistics(torch.nn.Conv2d(3, 3, 1), images)


def test_plots():
    result = latent_correlation(_box_smoothed(_noise(1, 4, 16, 16)), k=2, groups=[2, 2])
    fig = plot_correlation(result.overall, title="smooth")
    assert fig.axes[0].get_title() == "smooth"
    plt.close(fig)
    fig = plot_correlation_groups(result, title="t")
    assert len([ax for ax in fig.axes if ax.get_title()]) == 3
    plt.close(fig)


# ------------------------------------------------------------------ per image, intervals (issue 15)
def test_anisotropy_sign_and_transpose():
    from lalic_core.analysis.correlation import anisotropy

    m = torch.eye(5, dtype=torch.float64)
    m[1, 2] = m[3, 2] = 0.4  # vertical neighbours
    m[2, 1] = m[2, 3] = 0.1
    assert anisotropy(m) == pytest.approx(0.3)
    assert anisotropy(m.t()) == pytest.approx(-0.3)


def test_summarise_correlations_transpose_split():
    """Content anisotropy flips with the transpose, model-fixed anisotropy does not."""
    from lalic_core.analysis.correlation import summarise_correlations

    def cmap(v, h):
        m = torch.zeros(5, 5, dtype=torch.float64)
        m[2, 2] = 1
        m[1, 2] = m[3, 2] = v
        m[2, 1] = m[2, 3] = h
        return m

    per_image = []
    for content in (0.1, 0.2, 0.3):
        fixed = 0.05
        # A = content + fixed in the original, A_T = -content + fixed when transposed
        per_image.append({"residual": cmap(content + fixed, 0.0), "y": cmap(0.0, 0.0),
                          "transposed": {"residual": cmap(fixed - content, 0.0),
                                         "y": cmap(0.0, 0.0)}})
    s = summarise_correlations(per_image, "residual", resamples=200)
    assert s["anisotropy_content"] == pytest.approx(0.2)
    assert s["anisotropy_model_fixed"] == pytest.approx(0.05)
    lo, hi = s["anisotropy_content_ci"]
    assert lo <= 0.2 <= hi
    assert s["mean_map"].shape == (5, 5) and s["per_image_map"].shape == (3, 5, 5)


def test_image_correlations_on_tiny_model():
    from lalic_core.analysis.correlation import image_correlations
    from lalic_core.models.factory import build_model

    model = build_model("tiny", seed=0).eval()
    x = torch.rand(1, 3, 128, 192, generator=torch.Generator().manual_seed(0))
    r = image_correlations(model, x, k=1)
    assert r["y"].shape == (3, 3) and r["residual"].shape == (3, 3)
    assert r["latent_size"] == [8, 12] and r["transposed"]["latent_size"] == [12, 8]
