"""Analysis tools: why LALIC works.

- :mod:`~lalic_core.analysis.baselines`: TCM-, FAT-, ELIC-style and global-attention blocks with
  LALIC's block interface; :func:`make_block`, :func:`make_stack`.
- :mod:`~lalic_core.analysis.erf`: effective receptive fields (RepLKNet's method, via captum).
- :mod:`~lalic_core.analysis.correlation`: spatial correlation of the normalised latent.
- :mod:`~lalic_core.analysis.complexity_sweep`: time / FLOPs / memory of one block against
  resolution.
- :mod:`~lalic_core.analysis.scctx`: the SCCTX decoding order, step by step.
"""

from .baselines import BLOCK_KINDS, make_block, make_stack
from .complexity_sweep import plot_sweep, sweep
from .correlation import (
    latent_correlation,
    latent_statistics,
    plot_correlation,
    spatial_correlation,
)
from .erf import compute_erf, plot_erf, plot_erf_grid

__all__ = [
    "BLOCK_KINDS",
    "compute_erf",
    "latent_correlation",
    "latent_statistics",
    "make_block",
    "make_stack",
    "plot_correlation",
    "plot_erf",
    "plot_erf_grid",
    "plot_sweep",
    "spatial_correlation",
    "sweep",
]
