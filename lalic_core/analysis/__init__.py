"""Analysis tools: why LALIC works (the notebooks' and figures' measurements).

- :mod:`~lalic_core.analysis.biwkv_explain`: the attention matrix BiWKV implies, and its backends
  against the float64 reference.
- :mod:`~lalic_core.analysis.erf`: effective receptive fields (RepLKNet's method, via captum).
- :mod:`~lalic_core.analysis.correlation`: spatial correlation of the normalised latent.
- :mod:`~lalic_core.analysis.complexity_sweep`: FLOPs / time / memory of one block against
  resolution.
- :mod:`~lalic_core.analysis.scctx`: the SCCTX decoding order, step by step.
- :mod:`~lalic_core.analysis.block_anatomy`: one Bi-RWKV block, stage by stage.

The blocks compared (TCM-, FAT-style, CNN, global attention) are model layers:
:mod:`lalic_core.baseline_layers`.
"""

from .complexity_sweep import plot_sweep, sweep
from .correlation import (
    latent_correlation,
    latent_statistics,
    plot_correlation,
    spatial_correlation,
)
from .erf import compute_erf, plot_erf, plot_erf_grid

__all__ = [
    "compute_erf",
    "latent_correlation",
    "latent_statistics",
    "plot_correlation",
    "plot_erf",
    "plot_erf_grid",
    "plot_sweep",
    "spatial_correlation",
    "sweep",
]
