"""Effective receptive field (ERF) by the method of RepLKNet (Ding et al., CVPR 2022).

For each input image: take the model's output at its central position (H'//2, W'//2), ReLU its
channel values and sum them; the gradient of that scalar with respect to the input (computed
with captum's :class:`~captum.attr.Saliency`), positive part, summed over input channels, is the
image's contribution map. Maps are summed over a set of images (images whose map is not finite
are skipped). For display and comparison the map is log10(map + 1)-scaled and divided by its
maximum; the "high-contribution area ratio" at threshold t is the area of the smallest centred
square holding more than a fraction t of that scaled map's total, over the image area.

Works on any module mapping (B, C, H, W) to (B, C', H', W'): a single block, a stack, or a
downsampling transform such as an analysis transform g_a; random-initialised or trained.

Typical use::

    result = compute_erf(model, images)           # images: (N, C, H, W) or an iterable of them
    result.area_ratios[0.5], result.scaled        # ratio at t = 0.5, the [0, 1] map
    fig = plot_erf(result.scaled, title="Bi-RWKV")
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "AREA_THRESHOLDS",
    "ERFResult",
    "area_ratios",
    "centred_square_shares",
    "compute_erf",
    "erf_contributions",
    "plot_erf",
    "plot_erf_grid",
    "scale_erf",
]

#: Thresholds of RepLKNet's high-contribution area ratio.
AREA_THRESHOLDS = (0.2, 0.3, 0.5, 0.99)


class _CentreScore(nn.Module):
    """Wraps a model so that its output is one score per image: ReLU(out[:, :, H'//2, W'//2])
    summed over channels, shape (B,), the scalar whose input gradient defines the ERF."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, Mapping) and "x_hat" in out:  # a whole codec: use the reconstruction
            out = out["x_hat"]
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"model must map (B, C, H, W) to (B, C', H', W'), it returned {shape}")
        h, w = out.shape[-2:]
        return torch.relu(out[:, :, h // 2, w // 2]).sum(dim=1)


def _batches(inputs, batch_size: int | None) -> Iterable[torch.Tensor]:
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() == 3:
            inputs = inputs[None]
        if inputs.dim() != 4:
            raise ValueError(
                f"inputs must be (N, C, H, W) or (C, H, W), got shape {tuple(inputs.shape)}"
            )
        step = batch_size or inputs.shape[0]
        yield from inputs.split(step)
        return
    for item in inputs:  # an iterable of (C, H, W) or (B, C, H, W) tensors
        yield from _batches(item, batch_size)


def erf_contributions(
    model: nn.Module, inputs, batch_size: int | None = None
) -> tuple[torch.Tensor, int]:
    """The aggregated contribution map: (H, W) float64, summed over the usable images.

    ``inputs``: a (N, C, H, W) tensor or an iterable of (C, H, W) / (B, C, H, W) tensors, all
    with the same H, W. The model is put in eval mode for the computation (and restored).
    Returns the map and the number of images that contributed.
    """
    from captum.attr import Saliency

    saliency = Saliency(_CentreScore(model))
    was_training = model.training
    model.eval()
    total, used, size = None, 0, None
    try:
        for batch in _batches(inputs, batch_size):
            if size is None:
                size = tuple(batch.shape[-2:])
            elif tuple(batch.shape[-2:]) != size:
                raise ValueError(
                    f"all inputs must have the same H, W; got {size} and {tuple(batch.shape[-2:])}"
                )
            param = next(model.parameters(), None)
            if param is not None:
                batch = batch.to(device=param.device, dtype=param.dtype)
            grad = saliency.attribute(batch.detach().clone().requires_grad_(True), abs=False)
            maps = torch.relu(grad).sum(dim=1).to(torch.float64)  # (B, H, W)
            finite = torch.isfinite(maps).flatten(1).all(dim=1)
            if finite.any():
                part = maps[finite].sum(dim=0)
                total = part if total is None else total + part
                used += int(finite.sum())
    finally:
        model.train(was_training)
    if total is None:
        raise ValueError(
            "no usable input: inputs were empty or every contribution map was non-finite"
        )
    return total.cpu(), used


def scale_erf(contributions: torch.Tensor, log: bool = True) -> torch.Tensor:
    """log10(map + 1) (or the map itself with ``log=False``) divided by its maximum: a map in
    [0, 1] (all zeros stays zeros). The log form is RepLKNet's, used for the area ratios."""
    scaled = contributions.to(torch.float64).clamp_min(0)
    if log:
        scaled = torch.log10(scaled + 1)
    peak = scaled.max()
    return scaled / peak if peak > 0 else scaled


def centred_square_shares(scaled: torch.Tensor) -> tuple[list[tuple[int, int]], list[float]]:
    """The share of an (H, W) map's total held by the centred square of half-side i, for
    i = 0, 1, ... until the square (clipped at the border) covers the map: ``(shapes, shares)``,
    the clipped squares' (h, w) and their shares (the curve behind the area ratios)."""
    data = scaled.to(torch.float64)
    h, w = data.shape
    total = data.sum().item()
    if total <= 0:
        raise ValueError("the map is all zeros: the output does not depend on the input")
    ch, cw = h // 2, w // 2
    shapes, shares = [], []
    for i in range(max(ch, h - 1 - ch, cw, w - 1 - cw) + 1):
        window = data[max(ch - i, 0) : ch + i + 1, max(cw - i, 0) : cw + i + 1]
        shares.append(window.sum().item() / total)
        shapes.append(tuple(window.shape))
    return shapes, shares


def area_ratios(
    scaled: torch.Tensor, thresholds: Sequence[float] = AREA_THRESHOLDS
) -> dict[float, tuple[int, float]]:
    """High-contribution area ratios: for each threshold t, ``(side, ratio)`` of the smallest
    centred square (side 2i+1, i = 0, 1, ...; clipped at the image border) whose share of the
    map's total exceeds t, ``ratio`` being the square's area over the image area.

    Unlike RepLKNet's script (which starts at side 3 and gives up before the border), the
    square starts at one pixel and grows until it covers the whole image, so every t < 1 gets
    an answer.
    """
    if scaled.dim() != 2:
        raise ValueError(f"scaled must be an (H, W) map, got shape {tuple(scaled.shape)}")
    for t in thresholds:
        if not 0.0 < t < 1.0:
            raise ValueError(f"thresholds must lie in (0, 1), got {t}")
    h, w = scaled.shape
    sides, shares = centred_square_shares(scaled)
    result = {}
    for t in thresholds:
        i = next(i for i, share in enumerate(shares) if share > t or i == len(shares) - 1)
        sh, sw = sides[i]
        result[t] = (2 * i + 1, sh * sw / (h * w))
    return result


@dataclass
class ERFResult:
    """An ERF measurement: the raw summed map, its [0, 1] scaled form, the area ratios."""

    contributions: torch.Tensor  # (H, W) float64, summed over images
    scaled: torch.Tensor  # (H, W) in [0, 1]
    area_ratios: dict[float, tuple[int, float]] = field(default_factory=dict)
    num_images: int = 0

    def ratio(self, threshold: float) -> float:
        return self.area_ratios[threshold][1]


def compute_erf(
    model: nn.Module,
    inputs,
    thresholds: Sequence[float] = AREA_THRESHOLDS,
    batch_size: int | None = None,
) -> ERFResult:
    """ERF of ``model`` over ``inputs`` (see the module docstring): map, scaled map, ratios."""
    contributions, used = erf_contributions(model, inputs, batch_size)
    scaled = scale_erf(contributions)
    ratios = (
        area_ratios(scaled, thresholds)
        if scaled.max() > 0
        else {t: (0, math.nan) for t in thresholds}
    )
    return ERFResult(contributions, scaled, ratios, used)


def plot_erf(scaled: torch.Tensor, ax=None, title: str | None = None, cbar: bool = True):
    """Heat map of a scaled ERF (RdYlGn, no ticks, colour bar on top, as in RepLKNet and the
    LALIC paper); returns the matplotlib Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = scaled.detach().cpu().numpy() if isinstance(scaled, torch.Tensor) else scaled
    if ax is None:
        fig, ax = plt.subplots(figsize=(4, 4.6), layout="constrained")
    else:
        fig = ax.figure
    sns.heatmap(
        data,
        ax=ax,
        cmap="RdYlGn",
        vmin=0.0,
        vmax=1.0,
        xticklabels=False,
        yticklabels=False,
        square=True,
        cbar=cbar,
        cbar_kws={"location": "top", "shrink": 0.8, "pad": 0.02},
    )
    if title:
        ax.set_xlabel(title)
    return fig


def plot_erf_grid(
    maps: Mapping[str, torch.Tensor], ncols: int | None = None, ratios: Mapping | None = None
):
    """Side-by-side ERF heat maps, one per name; ``ratios`` (name -> area-ratio dict) adds the
    t = 0.2 / 0.5 / 0.99 ratios under each map. Returns the Figure."""
    import matplotlib.pyplot as plt

    if not maps:
        raise ValueError("maps is empty")
    n = len(maps)
    ncols = ncols or n
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.2 * ncols, 4.0 * nrows), squeeze=False, layout="constrained"
    )
    for ax, (name, scaled) in zip(axes.flat, maps.items()):
        label = name
        if ratios and name in ratios:
            r = ratios[name]
            label += "\n" + "  ".join(
                f"{int(t * 100)}%: {r[t][1]:.3g}" for t in (0.2, 0.5, 0.99) if t in r
            )
        plot_erf(scaled, ax=ax, title=label)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig
