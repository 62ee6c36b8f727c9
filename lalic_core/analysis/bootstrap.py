"""Bootstrap confidence intervals over images (percentile method, fixed seed).

Every statistic the figures report with an interval is a function of per-image values (or
of per-image vectors that add up, such as ERF ring profiles): resampling the images with
replacement and recomputing the statistic gives its sampling spread. With 24 Kodak images
the interval says how much the number depends on which photographs were used; it says
nothing about other training runs of the same model (one trained model per row).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["DEFAULT_RESAMPLES", "DEFAULT_SEED", "bootstrap_ci", "bootstrap_indices"]

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0


def bootstrap_indices(n: int, resamples: int = DEFAULT_RESAMPLES,
                      seed: int = DEFAULT_SEED) -> np.ndarray:
    """(resamples, n) indices drawn with replacement from range(n), reproducible by seed."""
    if n < 1:
        raise ValueError(f"bootstrap needs at least one value, got n = {n}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_ci(values, statistic: Callable[[np.ndarray], object] | None = None,
                 level: float = 0.95, resamples: int = DEFAULT_RESAMPLES,
                 seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of ``statistic`` over the first axis of ``values``.

    ``values``: (n, ...) per-image values. ``statistic``: maps a resampled (n, ...) array to a
    number or array (default: the mean over axis 0). Returns ``(low, high)`` with the shape of
    the statistic: its (1 - level) / 2 and (1 + level) / 2 quantiles over ``resamples``
    resamples drawn with ``seed``. NaNs in a statistic are ignored (nanquantile).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    data = np.asarray(values, dtype=np.float64)
    if data.ndim == 0:
        raise ValueError("values must have at least one axis (one entry per image)")
    stat = statistic or (lambda a: a.mean(axis=0))
    idx = bootstrap_indices(data.shape[0], resamples, seed)
    samples = np.stack([np.asarray(stat(data[i]), dtype=np.float64) for i in idx])
    alpha = (1.0 - level) / 2.0
    low, high = np.nanquantile(samples, [alpha, 1.0 - alpha], axis=0)
    return low, high
