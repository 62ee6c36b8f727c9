"""lalic_core.metrics: PSNR, MS-SSIM and the Bjontegaard deltas (paper table reproduced)."""

import json
import math

import numpy as np
import pytest
import torch

from lalic_core.metrics import bd_psnr, bd_rate, ms_ssim, ms_ssim_db, psnr

# ---------------------------------------------------------------- PSNR / MS-SSIM


def test_psnr_known_value_and_scale():
    a = torch.zeros(1, 3, 8, 8)
    assert psnr(a, a + 0.1) == pytest.approx(20.0)  # MSE 0.01 on [0, 1]
    assert psnr(a * 255, a * 255 + 25.5, max_val=255.0) == pytest.approx(20.0)
    assert psnr(a, a) == math.inf
    assert psnr(np.zeros((4, 4)), np.full((4, 4), 0.01)) == pytest.approx(40.0)


def test_psnr_rejects_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match="max_val"):
        psnr(torch.zeros(2), torch.zeros(2), max_val=0)


def test_ms_ssim_and_db_form():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 176, 176, generator=g)
    assert ms_ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    noisy = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    value = ms_ssim(x, noisy)
    assert 0.5 < value < 1.0
    assert ms_ssim_db(x, noisy) == pytest.approx(-10 * math.log10(1 - value), rel=1e-6)
    assert ms_ssim(x * 255, noisy * 255, max_val=255.0) == pytest.approx(value, abs=1e-5)
    with pytest.raises(ValueError, match="160"):
        ms_ssim(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))


# ---------------------------------------------------------------- BD-rate, synthetic curves

BPP = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
PSNR = np.array([28.0, 30.5, 33.0, 35.2, 37.0])


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_rate_identical_curves_is_zero(method):
    assert bd_rate(BPP, PSNR, BPP, PSNR, method=method) == pytest.approx(0.0, abs=1e-9)
    assert bd_psnr(BPP, PSNR, BPP, PSNR, method=method) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_rate_scaled_rate(method):
    assert bd_rate(BPP, PSNR, 0.9 * BPP, PSNR, method=method) == pytest.approx(-10.0, abs=1e-9)
    assert bd_rate(BPP, PSNR, 1.25 * BPP, PSNR, method=method) == pytest.approx(25.0, abs=1e-9)


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_psnr_shifted_quality(method):
    assert bd_psnr(BPP, PSNR, BPP, PSNR + 0.5, method=method) == pytest.approx(0.5, abs=1e-9)


def test_bd_rate_ignores_point_order():
    order = [3, 0, 4, 1, 2]
    assert bd_rate(BPP, PSNR, 0.8 * BPP[order], PSNR[order]) == pytest.approx(-20.0, abs=1e-9)
    assert bd_rate(BPP[order], PSNR[order], BPP, PSNR + 0.3) == pytest.approx(
        bd_rate(BPP, PSNR, BPP, PSNR + 0.3), abs=1e-12
    )


def test_bd_rate_swapping_anchor_and_test_inverts_ratio():
    forward = bd_rate(BPP, PSNR, BPP * 0.7, PSNR + 0.2)
    backward = bd_rate(BPP * 0.7, PSNR + 0.2, BPP, PSNR)
    assert (1 + forward / 100) * (1 + backward / 100) == pytest.approx(1.0, abs=1e-12)


def test_bd_rate_sign_follows_better_codec():
    better = bd_rate(BPP, PSNR, BPP, PSNR + 1.0)
    worse = bd_rate(BPP, PSNR, BPP, PSNR - 1.0)
    assert better < 0 < worse


def test_bd_rate_errors():
    with pytest.raises(ValueError, match="at least 4 points"):
        bd_rate(BPP[:3], PSNR[:3], BPP, PSNR)
    with pytest.raises(ValueError, match="same length"):
        bd_rate(BPP, PSNR, BPP, PSNR[:4])
    with pytest.raises(ValueError, match="do not overlap"):
        bd_rate(BPP, PSNR, BPP, PSNR + 20.0)
    with pytest.raises(ValueError, match="positive"):
        bd_rate(BPP, PSNR, BPP - 0.1, PSNR)
    with pytest.raises(ValueError, match="method"):
        bd_rate(BPP, PSNR, BPP, PSNR, method="akima")
    with pytest.raises(ValueError, match="repeated"):
        bd_rate(BPP, [28.0, 28.0, 33.0, 35.2, 37.0], BPP, PSNR)


def test_pchip_bd_rate_exact_on_log_linear_curves():
    """log(rate) linear in PSNR on both curves (different PSNR grids): a piecewise-cubic
    Hermite interpolant reproduces a line exactly, so BD-rate = exp(offset) - 1 exactly."""
    slope, offset = 0.23, np.log(0.8)
    anchor_q = np.array([27.0, 29.5, 32.0, 34.0, 37.0])
    test_q = np.array([26.0, 28.0, 31.0, 33.5, 36.0, 38.0])
    anchor_bpp = np.exp(slope * anchor_q - 7.0)
    test_bpp = np.exp(slope * test_q - 7.0 + offset)
    assert bd_rate(anchor_bpp, anchor_q, test_bpp, test_q) == pytest.approx(-20.0, rel=1e-9)


# ---------------------------------------------------------------- the paper's table

PAPER_BD_RATES = [  # (anchor file, test file, paper BD-rate % against VTM-9.1)
    ("kodak-vtm91-compressai.json", "kodak-lalic.json", -15.26),
    ("clicproval-vtm91.json", "clicproval-lalic.json", -15.41),
    ("tecnick-vtm91.json", "tecnick-lalic.json", -17.63),
    ("kodak-vtm91-compressai.json", "kodak-elic2022-paper.json", -7.02),
]


def _points(path):
    results = json.loads(path.read_text())["results"]
    return results["bpp"], results["psnr"]


@pytest.mark.parametrize("anchor,test,paper", PAPER_BD_RATES)
def test_bd_rate_reproduces_paper(rd_dir, anchor, test, paper):
    value = bd_rate(*_points(rd_dir / anchor), *_points(rd_dir / test))
    assert round(value, 2) == paper, f"{test}: {value:.4f}% vs paper {paper}%"
