"""The official kernels' BiWKV semantics against the formula: coefficient matrices and the
measured difference on a model (notebook 01, section 5).

The official CUDA kernels cut the T tokens into 32 (current) or 64 (older, the pretrained
checkpoints') chunks of L = ceil(T / chunks) tokens; at chunk starts their coefficients are
one decay step off the formula's (../shared/reference/README.md; :mod:`lalic_core.ops.biwkv`).
:func:`coefficient_matrices` gives W[t, i] of each semantics, :func:`plot_coefficient_matrices`
shows them side by side, and :func:`semantics_difference` measures what the choice changes in
a model's latent y, its reconstruction and its estimated rate.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from lalic_core.ops.biwkv import SEMANTICS, coefficient_matrix

__all__ = [
    "coefficient_matrices",
    "format_semantics_difference",
    "plot_coefficient_matrices",
    "semantics_difference",
]


def coefficient_matrices(T: int = 96, w: float = 0.1, u: float = 0.5,
                         semantics: Sequence[str] = SEMANTICS) -> dict[str, np.ndarray]:
    """W[t, i] (float64, (T, T)) of each semantics for one channel with decay ``w`` per
    token and boost ``u`` (the model's w = decay / T, u = boost / T)."""
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    return {s: coefficient_matrix(float(w), float(u), T, s).numpy() for s in semantics}


def plot_coefficient_matrices(T: int = 96, w: float = 0.1, u: float = 0.5,
                              semantics: Sequence[str] = ("formula", "official32")):
    """log10 W[t, i] of each semantics side by side, then log10 of the ratio of the last to
    the first (zero where they agree): the official kernels' chunk structure (chunks of
    ceil(T / 32) tokens for "official32") shows as blocks along the diagonal. Returns the
    matplotlib Figure."""
    import matplotlib.pyplot as plt

    mats = coefficient_matrices(T, w, u, semantics)
    names = list(mats)
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4.2 * (len(names) + 1), 4.0))
    lo = min(np.log10(m).min() for m in mats.values())
    hi = max(np.log10(m).max() for m in mats.values())
    for ax, name in zip(axes, names):
        im = ax.imshow(np.log10(mats[name]), vmin=lo, vmax=hi, cmap="viridis")
        ax.set_title(f"log10 W[t, i]: {name}")
        ax.set_xlabel("key token i")
        ax.set_ylabel("query token t")
        fig.colorbar(im, ax=ax, shrink=0.8)
    ratio = np.log10(mats[names[-1]] / mats[names[0]])
    bound = max(abs(ratio).max(), 1e-12)
    im = axes[-1].imshow(ratio, cmap="RdBu_r", vmin=-bound, vmax=bound)
    axes[-1].set_title(f"log10({names[-1]} / {names[0]})")
    axes[-1].set_xlabel("key token i")
    fig.colorbar(im, ax=axes[-1], shrink=0.8)
    fig.suptitle(f"BiWKV coefficients, T = {T}, w = {w}, u = {u}")
    fig.tight_layout()
    return fig


def _bpp(likelihoods: dict, pixels: int) -> float:
    return float(sum(-torch.log2(v).sum() for v in likelihoods.values()) / pixels)


def semantics_difference(model: nn.Module, x: torch.Tensor,
                         semantics: Sequence[str] = ("official32", "official64"),
                         reference: str = "formula") -> list[dict]:
    """What the BiWKV semantics change in a LALIC ``model`` (eval forward on the image batch
    ``x`` (B, 3, H, W), H and W multiples of 64), against ``reference``.

    Returns one dict per semantics: ``y_rel`` and ``x_hat_rel`` (max |difference| / max
    |reference value| of the latent y = g_a(x) and of the reconstruction), ``x_hat_psnr_db``
    (PSNR of the reconstruction against the reference one, data range 1), ``bpp`` and
    ``bpp_reference`` (estimated from the likelihoods). The model's own semantics is
    restored afterwards."""
    if not callable(getattr(model, "set_biwkv_semantics", None)):
        raise ValueError(  # noqa: TRY004 (project convention: user mistakes -> ValueError)
            f"semantics_difference: needs a LALIC model, got {type(model).__name__}")
    before = model.biwkv_semantics
    pixels = x.shape[0] * x.shape[-2] * x.shape[-1]
    outputs = {}
    try:
        with torch.no_grad():
            for name in (reference, *semantics):
                model.set_biwkv_semantics(name)
                out = model(x)
                outputs[name] = (model.g_a(x), out["x_hat"].clamp(0, 1),
                                 _bpp(out["likelihoods"], pixels))
    finally:
        model.set_biwkv_semantics(before)
    y0, x0, bpp0 = outputs[reference]
    rows = []
    for name in semantics:
        y, x_hat, bpp = outputs[name]
        mse = float((x_hat - x0).double().pow(2).mean())
        rows.append({
            "semantics": name,
            "reference": reference,
            "y_rel": float((y - y0).abs().max() / y0.abs().max()),
            "x_hat_rel": float((x_hat - x0).abs().max() / x0.abs().max()),
            "x_hat_psnr_db": math.inf if mse == 0 else -10 * math.log10(mse),
            "bpp": bpp,
            "bpp_reference": bpp0,
        })
    return rows


def format_semantics_difference(rows: Sequence[dict]) -> str:
    """A small text table of :func:`semantics_difference` rows."""
    lines = [(f"{'semantics':<11} {'vs':<8} {'y rel':>9} {'x_hat rel':>9} "
              f"{'x_hat PSNR':>10} {'bpp':>7} {'bpp ref':>7}")]
    for r in rows:
        lines.append(f"{r['semantics']:<11} {r['reference']:<8} {r['y_rel']:>9.2e} "
                     f"{r['x_hat_rel']:>9.2e} {r['x_hat_psnr_db']:>7.1f} dB "
                     f"{r['bpp']:>7.4f} {r['bpp_reference']:>7.4f}")
    return "\n".join(lines)
