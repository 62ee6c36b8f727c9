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
    "ERFStudy",
    "area_ratios",
    "area_ratios_from_profile",
    "biwkv_centre_weights",
    "centred_square_shares",
    "chebyshev_profile",
    "compute_erf",
    "erf_contributions",
    "erf_study",
    "measure_biwkv_floors",
    "plot_erf",
    "plot_erf_grid",
    "pool_map",
    "predict_biwkv_floor",
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



# --------------------------------------------------------------------------------------------
# ERF studies over many images: per-image maps, one scaling, bootstrap intervals
# --------------------------------------------------------------------------------------------
#: The one scaling of the studies' maps and numbers: contribution / peak (linear). The area
#: ratios are computed on it (shares of the total gradient mass, independent of the
#: gradient's absolute size and of the number of images, and additive over images, so the
#: bootstrap over images is exact); the heat maps show the same quantity on a log colour
#: scale because the far field lies orders of magnitude below the peak.
STUDY_SCALING = ("contribution / peak (linear) for the area ratios and the floor; the maps "
                 "show the same quantity on a log10 colour scale")


def chebyshev_profile(contributions: torch.Tensor) -> torch.Tensor:
    """Sums of an (H, W) map over the rings of Chebyshev distance i = 0, 1, ... from the
    centre (H//2, W//2): the centred square of half-side i (clipped at the border) holds
    ``profile[:i + 1].sum()``. float64, length max(H//2, H-1-H//2, W//2, W-1-W//2) + 1."""
    if contributions.dim() != 2:
        raise ValueError(f"expected an (H, W) map, got shape {tuple(contributions.shape)}")
    h, w = contributions.shape
    ch, cw = h // 2, w // 2
    dy = (torch.arange(h) - ch).abs()[:, None]
    dx = (torch.arange(w) - cw).abs()[None, :]
    dist = torch.maximum(dy, dx).flatten()
    length = max(ch, h - 1 - ch, cw, w - 1 - cw) + 1
    return torch.bincount(dist, weights=contributions.to(torch.float64).flatten().cpu(),
                          minlength=length)


def area_ratios_from_profile(profile, shape: tuple[int, int],
                             thresholds: Sequence[float] = AREA_THRESHOLDS
                             ) -> dict[float, tuple[int, float]]:
    """:func:`area_ratios` of a map from its :func:`chebyshev_profile` (same definition:
    the smallest clipped centred square whose share of the total exceeds t); ``shape`` is
    the map's (H, W). Linear in the map, so the profile of a sum of maps is the sum of their
    profiles."""
    import numpy as np

    prof = np.asarray(profile, dtype=np.float64)
    total = prof.sum()
    if total <= 0:
        raise ValueError("the map is all zeros: the output does not depend on the input")
    h, w = shape
    ch, cw = h // 2, w // 2
    shares = np.cumsum(prof) / total
    result = {}
    for t in thresholds:
        if not 0.0 < t < 1.0:
            raise ValueError(f"thresholds must lie in (0, 1), got {t}")
        above = np.nonzero(shares > t)[0]
        i = int(above[0]) if above.size else len(shares) - 1
        sh = min(ch + i, h - 1) - max(ch - i, 0) + 1
        sw = min(cw + i, w - 1) - max(cw - i, 0) + 1
        result[t] = (2 * i + 1, sh * sw / (h * w))
    return result


def pool_map(data: torch.Tensor, factor: int) -> torch.Tensor:
    """Block means of an (H, W) map over ``factor`` x ``factor`` blocks (edges dropped)."""
    if factor <= 1:
        return data.to(torch.float64)
    h, w = (s // factor * factor for s in data.shape)
    return torch.nn.functional.avg_pool2d(data[None, None, :h, :w].to(torch.float64),
                                          factor)[0, 0]


@dataclass
class ERFStudy:
    """An ERF measured image by image (see :func:`erf_study`)."""

    image_size: tuple[int, int]
    names: list[str]
    profiles: torch.Tensor  # (N, L) per-image Chebyshev ring sums of the raw maps
    total: torch.Tensor  # (H, W) the raw maps summed over the images
    thresholds: tuple[float, ...]
    area_ratio: dict[float, float]
    area_ratio_ci: dict[float, tuple[float, float]]
    per_image_ratio: dict[float, list[float]]
    side: dict[float, int]
    floor: float  # median of map / peak beyond the central half (see erf_study)
    floor_ci: tuple[float, float]
    far_share: float  # share of the total gradient mass beyond the central half
    far_share_ci: tuple[float, float]

    @property
    def normalised(self) -> torch.Tensor:
        """The summed map / its peak: the scaling of every number of the study."""
        peak = self.total.max()
        return self.total / peak if peak > 0 else self.total


def _far_mask(shape: tuple[int, int]) -> torch.Tensor:
    """Pixels whose Chebyshev distance from the centre exceeds a quarter of the shorter side
    (outside the central half): the 'far field' of an ERF."""
    h, w = shape
    dy = (torch.arange(h) - h // 2).abs()[:, None]
    dx = (torch.arange(w) - w // 2).abs()[None, :]
    return torch.maximum(dy, dx) > min(h, w) // 4


def erf_study(model: nn.Module, images, names: Sequence[str] | None = None,
              thresholds: Sequence[float] = AREA_THRESHOLDS, resamples: int = 2000,
              seed: int = 0, level: float = 0.95, progress=None) -> ERFStudy:
    """RepLKNet's ERF of ``model`` measured image by image, with bootstrap intervals.

    ``images``: an iterable of (1, C, H, W) tensors of one size (e.g. the 24 Kodak images
    with the portrait ones rotated). Each image's raw contribution map (positive input
    gradient of the centre output, summed over channels) is computed separately; the study's
    map is their sum (as RepLKNet's). Numbers use one scaling, map / peak (linear,
    :data:`STUDY_SCALING`): the area ratio at t is the area of the smallest centred square
    holding more than t of the summed map's gradient mass; its interval resamples the images
    (percentile bootstrap, ``resamples`` draws, ``seed``). ``floor``: the median of map /
    peak over the far field (Chebyshev distance from the centre > a quarter of the shorter
    side); ``far_share``: the share of the gradient mass there. ``progress``: optional
    callable(i, name) called before each image.
    """
    import numpy as np

    from lalic_core.analysis.bootstrap import bootstrap_indices

    thresholds = tuple(thresholds)
    profiles, maps, total, size, far, used = [], [], None, None, None, []
    for i, image in enumerate(images):
        name = names[i] if names is not None else f"image{i}"
        if progress is not None:
            progress(i, name)
        image = image if image.dim() == 4 else image[None]
        contributions, n = erf_contributions(model, image)
        if n == 0:
            continue
        if size is None:
            size, far = tuple(contributions.shape), _far_mask(tuple(contributions.shape))
        elif tuple(contributions.shape) != size:
            raise ValueError(f"all images must have one size; got {size} and "
                             f"{tuple(contributions.shape)}")
        profiles.append(chebyshev_profile(contributions))
        maps.append(contributions.to(torch.float32).flatten())
        total = contributions.clone() if total is None else total + contributions
        used.append(name)
    if total is None:
        raise ValueError("erf_study: no usable image")
    prof = torch.stack(profiles).numpy()
    stacked = torch.stack(maps)  # (N, H*W) float32
    del maps
    point = area_ratios_from_profile(prof.sum(0), size, thresholds)
    per_image = {t: [] for t in thresholds}
    for row in prof:
        for t, (_, r) in area_ratios_from_profile(row, size, thresholds).items():
            per_image[t].append(r)
    idx = bootstrap_indices(len(prof), resamples, seed)
    boot = np.empty((resamples, len(thresholds)))
    for b, sel in enumerate(idx):
        ratios = area_ratios_from_profile(prof[sel].sum(0), size, thresholds)
        boot[b] = [ratios[t][1] for t in thresholds]
    # floor and far share of every resample's summed map (counts @ maps, in chunks)
    counts = torch.from_numpy(np.stack([np.bincount(sel, minlength=len(prof)) for sel in idx]))
    far_flat = far.flatten()
    boot_floor, boot_far = np.empty(resamples), np.empty(resamples)
    for a in range(0, resamples, 50):
        summed = counts[a:a + 50].to(torch.float32) @ stacked  # (chunk, H*W)
        peak = summed.max(dim=1).values
        far_part = summed[:, far_flat]
        boot_floor[a:a + 50] = (far_part.median(dim=1).values / peak).double().numpy()
        boot_far[a:a + 50] = (far_part.sum(dim=1) / summed.sum(dim=1)).double().numpy()
    del stacked
    alpha = (1 - level) / 2

    def ci(samples):
        lo_, hi_ = np.quantile(samples, [alpha, 1 - alpha])
        return float(lo_), float(hi_)

    lo, hi = np.quantile(boot, [alpha, 1 - alpha], axis=0)
    normalised = total / total.max()
    return ERFStudy(
        image_size=size, names=used, profiles=torch.from_numpy(prof), total=total,
        thresholds=thresholds,
        area_ratio={t: point[t][1] for t in thresholds},
        area_ratio_ci={t: (float(lo[j]), float(hi[j])) for j, t in enumerate(thresholds)},
        per_image_ratio=per_image, side={t: point[t][0] for t in thresholds},
        floor=float(normalised[far].median()), floor_ci=ci(boot_floor),
        far_share=float(total[far].sum() / total.sum()), far_share_ci=ci(boot_far))


# --------------------------------------------------------------------------------------------
# The Bi-RWKV floor: every token keeps a weight of order exp(-|decay|)/T
# --------------------------------------------------------------------------------------------
def biwkv_centre_weights(decay: torch.Tensor, boost: torch.Tensor, hw: tuple[int, int],
                         k: torch.Tensor | None = None, query: int | None = None
                         ) -> torch.Tensor:
    """BiWKV's mixing weights of one query token over all T = H*W tokens, per channel:
    (C, T) float64, each row summing to 1. ``decay``, ``boost``: the block's (C,) parameters
    (the model passes w = decay / T, u = boost / T); ``k``: (T, C) keys (None: all zero, the
    prediction from the decays alone); ``query``: the token (default the centre,
    (H//2) * W + W//2, tokens in row-major order). Weight of token i: softmax over i of
    k[i] - (|t - i| - 1) w, and u + k[t] for i = t: the derivative of y[t] by v[i]."""
    h, w_ = hw
    T = h * w_
    t = (h // 2) * w_ + w_ // 2 if query is None else int(query)
    w = decay.detach().to(torch.float64) / T
    u = boost.detach().to(torch.float64) / T
    dist = (torch.arange(T, dtype=torch.float64) - t).abs()
    logits = -(dist[None, :] - 1) * w[:, None]  # (C, T)
    logits[:, t] = u
    if k is not None:
        logits = logits + k.detach().to(torch.float64).t()
    return torch.softmax(logits, dim=1)


def _floor_numbers(weights: torch.Tensor, hw: tuple[int, int]) -> dict:
    """Channel-mean mixing weights of the query over the tokens -> floor numbers."""
    mix = weights.mean(dim=0).reshape(hw)
    far = _far_mask(hw)
    T = hw[0] * hw[1]
    return {"floor": float(mix[far].median() / mix.max()),
            "t_times_far_median": float(mix[far].median() * T),
            "t_times_min": float(mix.min() * T)}


def predict_biwkv_floor(decay: torch.Tensor, boost: torch.Tensor, hw: tuple[int, int]) -> dict:
    """The Bi-RWKV floor predicted from a block's decays alone (keys set to zero): with
    w = decay / T a token at sequence distance d from the query gets exp(-(d - 1) decay / T)
    / Z, i.e. between 1 and exp(-|decay| / 2) (d <= T/2 for the centre query) times the
    nearest token's weight: every token keeps a weight of order exp(-|decay|)/T.

    Returns ``floor`` (median far-field weight / peak weight of the channel-mean mixing map,
    the far field as in :func:`erf_study`), ``t_times_far_median`` (that median times T: of
    order 1 when every token keeps ~1/T), ``t_times_min`` and ``bound`` = mean over channels
    of exp(-|decay|/2) (the analytic far/near weight ratio for the centre query)."""
    out = _floor_numbers(biwkv_centre_weights(decay, boost, hw), hw)
    d = decay.detach().to(torch.float64).abs()
    out["bound"] = float(torch.exp(-d / 2).mean())
    return out


def measure_biwkv_floors(model: nn.Module, image: torch.Tensor) -> list[dict]:
    """For each Bi-RWKV Spatial Mix in ``model`` (e.g. a trained g_a) on ``image``
    (1, 3, H, W): the measured floor of its centre token's mixing weights with the keys the
    image produces, beside the prediction from the decays alone (:func:`predict_biwkv_floor`).
    One dict per block: ``block``, ``hw``, ``T``, ``decay_abs_mean``, ``measured`` and
    ``predicted`` (floor numbers)."""
    from lalic_core.layers import SpatialMix

    mixes = [(name, m) for name, m in model.named_modules() if isinstance(m, SpatialMix)]
    captured: dict[str, dict] = {}
    handles = []
    for name, mix in mixes:
        def pre(module, args, _name=name):
            captured.setdefault(_name, {})["hw"] = tuple(args[1])

        def key_hook(module, args, output, _name=name):
            captured.setdefault(_name, {})["k"] = output.detach()

        handles.append(mix.register_forward_pre_hook(pre))
        handles.append(mix.key.register_forward_hook(key_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():  # the autograd path runs SpatialMix.forward (hooks fire)
            model(image.detach().clone().requires_grad_(True))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    rows = []
    for name, mix in mixes:
        if name not in captured or "k" not in captured[name]:
            continue
        hw = captured[name]["hw"]
        k = captured[name]["k"][0]
        measured = _floor_numbers(biwkv_centre_weights(mix.decay, mix.boost, hw, k), hw)
        rows.append({"block": name, "hw": list(hw), "T": hw[0] * hw[1],
                     "decay_abs_mean": float(mix.decay.detach().abs().mean()),
                     "measured": measured,
                     "predicted": predict_biwkv_floor(mix.decay, mix.boost, hw)})
    return rows
