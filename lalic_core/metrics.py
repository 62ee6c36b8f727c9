"""Image-quality metrics and Bjontegaard deltas.

- :func:`psnr` and :func:`ms_ssim` (with :func:`ms_ssim_db`, the ``-10 log10(1 - MS-SSIM)``
  form the paper plots) compare two images of the same shape.
- :func:`bd_rate` and :func:`bd_psnr` compare two rate-distortion curves (Bjontegaard,
  VCEG-M33).

Which BD-rate variant reproduces the paper
------------------------------------------
Two interpolations of log-rate as a function of PSNR are in common use:

- ``"cubic"``: the original Bjontegaard method, a least-squares cubic polynomial fit;
- ``"pchip"``: a piecewise-cubic Hermite interpolant through the points (the shape-preserving
  interpolant of Fritsch and Carlson, the one ``scipy.interpolate.PchipInterpolator`` builds),
  integrated exactly; the piecewise-cubic variant adopted for the JVET common test
  conditions.

On the published points in ``../shared/data/rd`` against VTM-9.1, ``"pchip"`` gives
-15.2643% (LALIC, Kodak), -15.4121% (CLIC), -17.6299% (Tecnick) and -7.0242% (ELIC, Kodak),
i.e. the paper's -15.26 / -15.41 / -17.63 / -7.02 to 0.01%; ``"cubic"`` gives -15.51 / -15.47 /
-17.72 / -7.17 and an Akima interpolant -15.30 / -15.42 / -17.61 / -7.06, neither of which
matches. ``"pchip"`` is therefore the default (``scipy.interpolate.PchipInterpolator``,
integrated exactly); ``"cubic"`` is a numpy polynomial fit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.interpolate import PchipInterpolator

__all__ = ["BD_METHODS", "bd_psnr", "bd_rate", "ms_ssim", "ms_ssim_db", "psnr"]

BD_METHODS = ("pchip", "cubic")


# --------------------------------------------------------------------------------------------
# Image metrics
# --------------------------------------------------------------------------------------------
def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    return x.detach().to(torch.float64)


def _check_pair(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _as_tensor(a, "a"), _as_tensor(b, "b")
    if a.shape != b.shape:
        raise ValueError(
            f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.numel() == 0:
        raise ValueError("a and b are empty")
    return a, b


def psnr(a, b, max_val: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all elements of ``a`` and ``b``.

    ``a``, ``b``: tensors (or arrays) of the same shape, values in ``[0, max_val]``
    (``max_val`` = 1 for the [0, 1] RGB the paper evaluates on, 255 for 8-bit). Returns ``inf``
    for identical inputs.
    """
    if max_val <= 0:
        raise ValueError(f"max_val must be positive, got {max_val}")
    a, b = _check_pair(a, b)
    mse = torch.mean((a - b) ** 2).item()
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(max_val**2 / mse))


def ms_ssim(a, b, max_val: float = 1.0) -> float:
    """Multi-scale SSIM (Wang et al. 2003) of two image batches, via ``pytorch_msssim``.

    ``a``, ``b``: (B, C, H, W) (or (C, H, W)) with values in ``[0, max_val]``; the default five
    scales with an 11x11 Gaussian window need H and W > 160. Returns the batch mean in [0, 1].
    """
    from pytorch_msssim import ms_ssim as _ms_ssim

    a, b = _check_pair(a, b)
    if a.dim() == 3:
        a, b = a[None], b[None]
    if a.dim() != 4:
        raise ValueError(f"a and b must be (B, C, H, W) or (C, H, W), got shape {tuple(a.shape)}")
    if min(a.shape[-2:]) <= 160:
        raise ValueError(
            "MS-SSIM with 5 scales and an 11x11 window needs H and W > 160, "
            f"got {tuple(a.shape[-2:])}"
        )
    return float(_ms_ssim(a.float(), b.float(), data_range=max_val, size_average=True).item())


def ms_ssim_db(a, b, max_val: float = 1.0) -> float:
    """MS-SSIM in dB, ``-10 log10(1 - MS-SSIM)``, as reported by the paper and CompressAI."""
    value = ms_ssim(a, b, max_val)
    return float("inf") if value >= 1.0 else float(-10.0 * np.log10(1.0 - value))


# --------------------------------------------------------------------------------------------
# Bjontegaard deltas
# --------------------------------------------------------------------------------------------
def _mean_over_overlap(x1, y1, x2, y2, method: str) -> float:
    """Mean of (y2 - y1) over the overlap of the x ranges, each curve y(x) interpolated."""
    lo, hi = max(x1.min(), x2.min()), min(x1.max(), x2.max())
    if not lo < hi:
        raise ValueError(
            f"the two curves do not overlap: [{x1.min():.4g}, {x1.max():.4g}] and "
            f"[{x2.min():.4g}, {x2.max():.4g}]"
        )
    integrals = []
    for x, y in ((x1, y1), (x2, y2)):
        if method == "cubic":
            antiderivative = np.polyint(np.polyfit(x, y, 3))
            integrals.append(np.polyval(antiderivative, hi) - np.polyval(antiderivative, lo))
        else:
            order = np.argsort(x)
            integrals.append(PchipInterpolator(x[order], y[order]).integrate(lo, hi))
    return float((integrals[1] - integrals[0]) / (hi - lo))


def _check_curve(
    rate, quality, rate_name: str, quality_name: str, distinct: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validate one curve; ``distinct`` ("rate" or "quality") is the interpolation axis."""
    rate = np.asarray(rate, dtype=np.float64).ravel()
    quality = np.asarray(quality, dtype=np.float64).ravel()
    if rate.shape != quality.shape:
        raise ValueError(
            f"{rate_name} and {quality_name} must have the same length, "
            f"got {rate.size} and {quality.size}"
        )
    if rate.size < 4:
        raise ValueError(
            f"{rate_name}/{quality_name}: a BD computation needs at least 4 points, got {rate.size}"
        )
    if not (np.all(np.isfinite(rate)) and np.all(np.isfinite(quality))):
        raise ValueError(f"{rate_name}/{quality_name} contain non-finite values")
    if np.any(rate <= 0):
        raise ValueError(
            f"{rate_name} must be positive (rates are compared in log scale), got {rate.tolist()}"
        )
    name, values = (rate_name, rate) if distinct == "rate" else (quality_name, quality)
    if np.unique(values).size != values.size:
        raise ValueError(
            f"{name} has repeated values {values.tolist()}; interpolation needs distinct ones"
        )
    return rate, quality


def _check_method(method: str) -> None:
    if method not in BD_METHODS:
        raise ValueError(f"method must be one of {BD_METHODS}, got {method!r}")


def bd_rate(
    anchor_bpp: Sequence[float],
    anchor_psnr: Sequence[float],
    test_bpp: Sequence[float],
    test_psnr: Sequence[float],
    method: str = "pchip",
) -> float:
    """Bjontegaard delta rate of a test curve against an anchor, in percent.

    The average rate difference at equal quality over the overlapping quality range: negative
    means the test codec needs fewer bits. Log-rate is interpolated as a function of quality
    (``method="pchip"``, the default, reproduces the paper's table; ``"cubic"`` is the original
    polynomial fit; see the module docstring). Any quality in dB works (PSNR, MS-SSIM dB).
    Each curve needs at least 4 points; the order of the points does not matter.
    """
    _check_method(method)
    a_rate, a_q = _check_curve(anchor_bpp, anchor_psnr, "anchor_bpp", "anchor_psnr", "quality")
    t_rate, t_q = _check_curve(test_bpp, test_psnr, "test_bpp", "test_psnr", "quality")
    mean_log_diff = _mean_over_overlap(a_q, np.log(a_rate), t_q, np.log(t_rate), method)
    return float((np.exp(mean_log_diff) - 1.0) * 100.0)


def bd_psnr(
    anchor_bpp: Sequence[float],
    anchor_psnr: Sequence[float],
    test_bpp: Sequence[float],
    test_psnr: Sequence[float],
    method: str = "pchip",
) -> float:
    """Bjontegaard delta PSNR (dB) of a test curve against an anchor: the average quality
    difference at equal rate over the overlapping log-rate range (positive = test is better)."""
    _check_method(method)
    a_rate, a_q = _check_curve(anchor_bpp, anchor_psnr, "anchor_bpp", "anchor_psnr", "rate")
    t_rate, t_q = _check_curve(test_bpp, test_psnr, "test_bpp", "test_psnr", "rate")
    return _mean_over_overlap(np.log(a_rate), a_q, np.log(t_rate), t_q, method)
