"""Spatial correlation of the normalised latent residual (y - mu) / sigma.

An entropy model with Gaussian conditionals codes each latent element as N(mu, sigma^2) given
its context; whatever spatial correlation is left in the normalised residual is redundancy the
model did not capture. LALIC's claim (Feng et al., CVPR 2025) is that its Bi-RWKV transforms
leave less local correlation than window-attention and CNN transforms.

For each offset (dy, dx) in a (2k+1) x (2k+1) window, :func:`spatial_correlation` computes the
Pearson correlation between the residual and its copy shifted by (dy, dx), over the overlapping
positions, separately for every image and channel; :func:`latent_correlation` averages over
images and channels, overall and per channel group. The centre (0, 0) is 1 by construction.

:func:`latent_statistics` gets y, mu and sigma from any CompressAI-style model (LALIC, ELIC,
mbt2018-mean, ...) by recording the inputs, means and scales of its ``GaussianConditional``
entropy models during an eval-mode forward pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "CORRELATION_FIELDS",
    "LatentCorrelation",
    "LatentStatistics",
    "anisotropy",
    "common_groups",
    "image_correlations",
    "latent_correlation",
    "latent_statistics",
    "model_latent_correlation",
    "normalised_residual",
    "plot_correlation",
    "plot_correlation_comparison",
    "plot_correlation_groups",
    "plot_correlation_models",
    "spatial_correlation",
    "summarise_correlations",
]


def normalised_residual(
    y: torch.Tensor, mu: torch.Tensor | None, sigma: torch.Tensor | None, min_sigma: float = 1e-6
) -> torch.Tensor:
    """(y - mu) / sigma, with mu = 0 and sigma = 1 when not given; sigma clamped at min_sigma."""
    for name, t in (("mu", mu), ("sigma", sigma)):
        if t is not None and t.shape != y.shape:
            raise ValueError(
                f"{name} must have the shape of y {tuple(y.shape)}, got {tuple(t.shape)}"
            )
    r = y.to(torch.float64)
    if mu is not None:
        r = r - mu.to(torch.float64)
    if sigma is not None:
        r = r / sigma.to(torch.float64).clamp_min(min_sigma)
    return r


def spatial_correlation(field_: torch.Tensor, k: int = 2) -> torch.Tensor:
    """Pearson correlation of ``field_`` with its shifted copy at every offset in [-k, k]^2.

    ``field_``: (N, C, H, W). Returns (N, C, 2k+1, 2k+1) float64, entry [n, c, k+dy, k+dx] being
    corr(field_[n, c, i, j], field_[n, c, i+dy, j+dx]) over the positions where both exist.
    Channels that are constant over the overlap give NaN.
    """
    if field_.dim() != 4:
        raise ValueError(f"field must be (N, C, H, W), got shape {tuple(field_.shape)}")
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    n, c, h, w = field_.shape
    if k >= h or k >= w:
        raise ValueError(f"k ({k}) must be smaller than H and W ({h}, {w})")
    x = field_.to(torch.float64)
    out = x.new_empty(n, c, 2 * k + 1, 2 * k + 1)
    for dy in range(-k, k + 1):
        for dx in range(-k, k + 1):
            rows, cols = slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx))
            rows_s = slice(rows.start + dy, rows.stop + dy)
            cols_s = slice(cols.start + dx, cols.stop + dx)
            a = x[:, :, rows, cols].flatten(2)
            b = x[:, :, rows_s, cols_s].flatten(2)
            a = a - a.mean(dim=2, keepdim=True)
            b = b - b.mean(dim=2, keepdim=True)
            cov = (a * b).sum(dim=2)
            norm = torch.sqrt((a * a).sum(dim=2) * (b * b).sum(dim=2))
            out[:, :, k + dy, k + dx] = torch.where(
                norm > 0, cov / norm, torch.full_like(cov, float("nan"))
            )
    return out


@dataclass
class LatentCorrelation:
    """Correlation maps, (2k+1, 2k+1) each, centre at [k, k]."""

    per_channel: torch.Tensor  # (C, 2k+1, 2k+1), mean over images
    overall: torch.Tensor  # (2k+1, 2k+1), mean over channels and images
    groups: list[int] = field(default_factory=list)  # channel-group sizes
    per_group: list[torch.Tensor] = field(default_factory=list)  # one (2k+1, 2k+1) per group

    @property
    def k(self) -> int:
        return self.overall.shape[-1] // 2

    def mean_abs_offcentre(
        self, which: torch.Tensor | None = None, radius: int | None = None
    ) -> float:
        """Mean |correlation| over the off-centre offsets (within ``radius``, default all)."""
        m = self.overall if which is None else which
        k = m.shape[-1] // 2
        r = k if radius is None else radius
        window = m[k - r : k + r + 1, k - r : k + r + 1].abs().clone()
        window[r, r] = float("nan")
        return float(torch.nanmean(window))


def latent_correlation(
    y: torch.Tensor,
    mu: torch.Tensor | None = None,
    sigma: torch.Tensor | None = None,
    k: int = 2,
    groups: Sequence[int] | None = None,
) -> LatentCorrelation:
    """Correlation of (y - mu) / sigma at every offset in a (2k+1) x (2k+1) window.

    ``y``, ``mu``, ``sigma``: (N, C, H, W) (mu, sigma optional). ``groups``: channel-group
    sizes summing to C (e.g. LALIC's [16, 16, 32, 64, 192]) for per-group maps. Per-channel maps
    are averaged over images, then over channels (NaNs from constant channels are ignored).
    """
    residual = normalised_residual(y, mu, sigma)
    corr = spatial_correlation(residual, k)  # (N, C, K, K)
    per_channel = torch.nanmean(corr, dim=0)
    overall = torch.nanmean(per_channel, dim=0)
    groups = list(groups) if groups is not None else []
    per_group = []
    if groups:
        if sum(groups) != y.shape[1] or any(g <= 0 for g in groups):
            raise ValueError(
                f"groups must be positive sizes summing to C={y.shape[1]}, got {groups}"
            )
        for chunk in per_channel.split(groups, dim=0):
            per_group.append(torch.nanmean(chunk, dim=0))
    return LatentCorrelation(per_channel, overall, groups, per_group)


# --------------------------------------------------------------------------------------------
# Getting y, mu, sigma out of a model
# --------------------------------------------------------------------------------------------
@dataclass
class LatentStatistics:
    """y (the continuous latent), its predicted means and scales, and the channel groups in
    which the entropy model coded it; all (N, C, H, W)."""

    y: torch.Tensor
    mu: torch.Tensor
    sigma: torch.Tensor
    groups: list[int]


@torch.no_grad()
def latent_statistics(model: nn.Module, images: torch.Tensor) -> LatentStatistics:
    """Run ``model(images)`` in eval mode and record y, mu, sigma from its Gaussian conditionals.

    Works for CompressAI-style models whose latent is coded by
    ``compressai.entropy_models.GaussianConditional`` (one call per channel group: LALIC's
    SCCTX, ELIC, mbt2018-mean, ...). Scales are lower-bounded as the entropy model does before
    computing likelihoods. If the model has ``g_a``, the recorded y is checked against
    ``g_a(images)``. ``images``: (N, 3, H, W), sized as the model needs (multiples of 64 for
    LALIC, padding is the caller's job).
    """
    from compressai.entropy_models import GaussianConditional

    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    conditionals = [m for m in model.modules() if isinstance(m, GaussianConditional)]
    if not conditionals:
        raise ValueError(
            "model has no GaussianConditional entropy model to read means and scales from"
        )
    calls = []

    def record(module, args, kwargs, _output):
        names = ("inputs", "scales", "means")
        values = dict(zip(names, args))
        values.update({key: kwargs[key] for key in names if key in kwargs})
        scales = module.lower_bound_scale(values["scales"])
        means = values.get("means")
        calls.append(
            (values["inputs"], torch.zeros_like(scales) if means is None else means, scales)
        )

    handles = [m.register_forward_hook(record, with_kwargs=True) for m in conditionals]
    was_training = model.training
    model.eval()
    try:
        model(images)
        y_ref = model.g_a(images) if hasattr(model, "g_a") else None
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    if not calls:
        raise ValueError("the model's forward pass did not call its GaussianConditional")
    size = tuple(y_ref.shape[-2:]) if y_ref is not None else tuple(calls[0][0].shape[-2:])
    calls = [c for c in calls if tuple(c[0].shape[-2:]) == size]
    y, mu, sigma = (torch.cat(parts, dim=1) for parts in zip(*calls))
    groups = [c[0].shape[1] for c in calls]
    if y_ref is not None and (
        y.shape != y_ref.shape or not torch.allclose(y, y_ref, atol=1e-4, rtol=1e-4)
    ):
        raise ValueError(
            f"the latents recorded from the entropy model (shape {tuple(y.shape)}) do not "
            f"match g_a's output (shape {tuple(y_ref.shape)}); this model codes y in a way "
            "latent_statistics does not understand; pass y, mu, sigma to latent_correlation"
        )
    return LatentStatistics(y, mu, sigma, groups)


def model_latent_correlation(
    model: nn.Module, images: torch.Tensor, k: int = 2, groups: Sequence[int] | None = None
) -> LatentCorrelation:
    """:func:`latent_correlation` of a model's latent on ``images`` (groups default to the
    entropy model's own channel groups)."""
    stats = latent_statistics(model, images)
    return latent_correlation(
        stats.y, stats.mu, stats.sigma, k, groups if groups is not None else stats.groups
    )


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------
def plot_correlation(
    matrix: torch.Tensor,
    ax=None,
    title: str | None = None,
    annotate: bool = True,
    vmax: float = 1.0,
    cbar: bool = True,
):
    """Heat map of a (2k+1, 2k+1) correlation map, offsets on the axes; returns the Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    m = matrix.detach().cpu().numpy()
    k = m.shape[-1] // 2
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 3.6))
    else:
        fig = ax.figure
    offsets = list(range(-k, k + 1))
    sns.heatmap(
        m,
        ax=ax,
        cmap="coolwarm",
        vmin=-vmax,
        vmax=vmax,
        center=0.0,
        square=True,
        annot=annotate,
        fmt=".2f",
        annot_kws={"fontsize": 7},
        xticklabels=offsets,
        yticklabels=offsets,
        cbar=cbar,
    )
    ax.set_xlabel("dx")
    ax.set_ylabel("dy")
    if title:
        ax.set_title(title)
    return fig


def plot_correlation_groups(result: LatentCorrelation, title: str | None = None, vmax: float = 0.5):
    """The overall map and one map per channel group, side by side; returns the Figure.

    The centre (always 1) saturates the colour scale; ``vmax`` keeps the off-centre structure
    visible."""
    import matplotlib.pyplot as plt

    panels = [("all channels", result.overall)]
    start = 0
    for i, (size, m) in enumerate(zip(result.groups, result.per_group)):
        panels.append((f"group {i} (ch {start}-{start + size - 1})", m))
        start += size
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for j, (ax, (name, m)) in enumerate(zip(axes[0], panels)):
        plot_correlation(
            m, ax=ax, title=name, vmax=vmax, cbar=j == len(panels) - 1, annotate=m.shape[-1] <= 7
        )
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Several models side by side
# --------------------------------------------------------------------------------------------
def _group_panels(result, group: int | None):
    """(title, map) of the overall map (group None) or one channel group."""
    if group is None:
        return "all channels", result.overall
    start = sum(result.groups[:group])
    size = result.groups[group]
    return f"group {group} (ch {start}-{start + size - 1})", result.per_group[group]


def common_groups(results: Mapping) -> list[int]:
    """The channel groups shared by all results ([] when they differ)."""
    groups = [list(r.groups) for r in results.values()]
    return groups[0] if groups and all(g == groups[0] for g in groups) else []


def plot_correlation_comparison(results: Mapping, groups: Sequence[int | None] | None = None,
                                vmax: float = 0.3, annotate: bool = True):
    """Correlation maps of (y - mu) / sigma: one row per model, one column per channel group
    (``groups``: indices, None = all channels; default all channels then every group the
    models share), and a bar chart of the mean |off-centre correlation| per group and model
    (lower = less redundancy left). Returns the Figure."""
    import numpy as np
    from matplotlib.figure import Figure

    if not results:
        raise ValueError("plot_correlation_comparison: no results")
    shared = common_groups(results)
    if groups is None:
        groups = [None, *range(len(shared))]
    for g in groups:
        if g is not None and not 0 <= g < len(shared):
            raise ValueError(f"group {g} is not a channel group shared by all models "
                             f"(shared groups: {shared})")
    n_rows, n_cols = len(results), len(groups)
    fig = Figure((2.9 * n_cols + 4.2, 2.7 * n_rows + 0.5), layout="constrained")
    grid = fig.add_gridspec(n_rows, n_cols + 1, width_ratios=[1] * n_cols + [1.6])
    for r, (name, result) in enumerate(results.items()):
        for c, g in enumerate(groups):
            ax = fig.add_subplot(grid[r, c])
            title, m = _group_panels(result, g)
            plot_correlation(m, ax=ax, title=title if r == 0 else None, vmax=vmax, cbar=False,
                             annotate=annotate and m.shape[-1] <= 7)
            ax.tick_params(labelsize=7)
            if c == 0:
                ax.set_ylabel(f"{name}\ndy")
            if r < n_rows - 1:
                ax.set_xlabel("")
    ax = fig.add_subplot(grid[:, -1])
    x = np.arange(len(groups))
    width = 0.8 / len(results)
    for j, (name, result) in enumerate(results.items()):
        values = [result.mean_abs_offcentre(_group_panels(result, g)[1]) for g in groups]
        ax.bar(x + (j - (len(results) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, ["all" if g is None else f"g{g}" for g in groups])
    ax.set_ylabel("mean |off-centre correlation|")
    ax.set_title("redundancy left (lower is better)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    mappable = next(a.collections[0] for a in fig.axes if a.collections)
    fig.colorbar(mappable, ax=fig.axes[:-1], location="bottom", shrink=0.4, aspect=40,
                 label=f"correlation (colour clipped at ±{vmax}; centre = 1)")
    return fig


def plot_correlation_models(results: Mapping, group: int | None = None, vmax: float = 0.3,
                            annotate: bool = True):
    """One channel group (None: all channels) side by side for every model, and a bar chart
    of their mean |off-centre correlation| (lower = less redundancy left). Returns the
    Figure."""
    from matplotlib.figure import Figure

    if not results:
        raise ValueError("plot_correlation_models: no results")
    shared = common_groups(results)
    if group is not None and not 0 <= group < len(shared):
        raise ValueError(f"group {group} is not a channel group shared by all models "
                         f"(shared groups: {shared})")
    n = len(results)
    fig = Figure((3.3 * n + 3.4, 3.4), layout="constrained")
    axes = fig.subplots(1, n + 1, width_ratios=[1] * n + [1.1])
    means = []
    for j, (ax, (name, result)) in enumerate(zip(axes, results.items())):
        title, m = _group_panels(result, group)
        plot_correlation(m, ax=ax, title=f"{name}\n{title}", vmax=vmax, cbar=j == n - 1,
                         annotate=annotate and m.shape[-1] <= 7)
        ax.title.set_fontsize(9)
        means.append(result.mean_abs_offcentre(m))
    ax = axes[-1]
    ax.bar(range(n), means, color=[f"C{j}" for j in range(n)])
    ax.set_xticks(range(n), list(results), rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("mean |off-centre correlation|", fontsize=8)
    ax.set_title("redundancy left\n(lower is better)", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    return fig



# --------------------------------------------------------------------------------------------
# Image by image, with intervals: what the latent_correlation figure reports
# --------------------------------------------------------------------------------------------
#: The two fields whose correlation is measured: the raw latent y and the normalised
#: residual (y - mu) / sigma.
CORRELATION_FIELDS = ("y", "residual")


def anisotropy(matrix) -> float:
    """Vertical minus horizontal lag-1 correlation of a (2k+1, 2k+1) map: the mean of the
    (dy, dx) = (+-1, 0) entries minus the mean of the (0, +-1) entries (> 0: stronger
    correlation between vertical neighbours)."""
    m = torch.as_tensor(matrix, dtype=torch.float64)
    k = m.shape[-1] // 2
    if k < 1:
        raise ValueError("anisotropy needs k >= 1")
    vertical = (m[k - 1, k] + m[k + 1, k]) / 2
    horizontal = (m[k, k - 1] + m[k, k + 1]) / 2
    return float(vertical - horizontal)


def image_correlations(model: nn.Module, image: torch.Tensor, k: int = 2,
                       transposed: bool = True) -> dict:
    """Channel-mean correlation maps of one image's latent: {"y": (K, K), "residual":
    (K, K)} (K = 2k+1), and with ``transposed`` the same for the transposed image under
    "transposed" (maps in the model's frame: dy along the model's rows). The transpose test
    separates anisotropy that follows the image content (it flips sign when the image is
    transposed) from anisotropy fixed to the model's axes (scan order, stride phases,
    padding: it does not)."""
    out = {}
    for key, x in (("original", image), ("transposed", image.transpose(-1, -2))):
        if key == "transposed" and not transposed:
            break
        stats = latent_statistics(model, x.contiguous())
        fields = {"y": normalised_residual(stats.y, None, None),
                  "residual": normalised_residual(stats.y, stats.mu, stats.sigma)}
        out[key] = {name: torch.nanmean(spatial_correlation(f, k)[0], dim=0)
                    for name, f in fields.items()}
        out[key]["latent_size"] = list(stats.y.shape[-2:])
    result = dict(out["original"])
    if transposed:
        result["transposed"] = out["transposed"]
    return result


def _mean_abs_offcentre(m: torch.Tensor) -> float:
    k = m.shape[-1] // 2
    w = m.abs().clone()
    w[k, k] = float("nan")
    return float(torch.nanmean(w))


def summarise_correlations(per_image: Sequence[dict], field_name: str = "residual",
                           resamples: int = 2000, seed: int = 0) -> dict:
    """Mean map, 95% bootstrap intervals over images (per offset), the mean |off-centre|
    correlation per image with its interval, and the anisotropy split by the transpose test
    (``per_image``: :func:`image_correlations` results). Content part: (A - A_T) / 2 (in the
    image's frame), model-fixed part: (A + A_T) / 2, A and A_T the anisotropy of the image
    and of its transpose in the model's frame."""
    import numpy as np

    from lalic_core.analysis.bootstrap import bootstrap_ci

    maps = np.stack([r[field_name].numpy() for r in per_image])  # (N, K, K)
    lo, hi = bootstrap_ci(maps, resamples=resamples, seed=seed)
    offc = np.array([_mean_abs_offcentre(torch.from_numpy(m)) for m in maps])
    a = np.array([anisotropy(m) for m in maps])
    out = {
        "mean_map": maps.mean(0), "ci_low": lo, "ci_high": hi,
        "per_image_map": maps,
        "mean_abs_offcentre": float(offc.mean()),
        "mean_abs_offcentre_ci": [float(v) for v in bootstrap_ci(offc, resamples=resamples,
                                                                  seed=seed)],
        "per_image_mean_abs_offcentre": offc,
        "anisotropy": float(a.mean()),
        "anisotropy_ci": [float(v) for v in bootstrap_ci(a, resamples=resamples, seed=seed)],
        "per_image_anisotropy": a,
    }
    if all("transposed" in r for r in per_image):
        at = np.array([anisotropy(r["transposed"][field_name].numpy()) for r in per_image])
        content, fixed = (a - at) / 2, (a + at) / 2
        out.update({
            "per_image_anisotropy_transposed": at,
            "anisotropy_content": float(content.mean()),
            "anisotropy_content_ci": [float(v) for v in bootstrap_ci(content,
                                                                     resamples=resamples,
                                                                     seed=seed)],
            "anisotropy_model_fixed": float(fixed.mean()),
            "anisotropy_model_fixed_ci": [float(v) for v in bootstrap_ci(fixed,
                                                                         resamples=resamples,
                                                                         seed=seed)],
        })
    return out
