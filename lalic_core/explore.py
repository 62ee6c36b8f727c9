"""What the exploration notebooks (04-07) and their figures compute: small, seeded, headless.

The notebooks call these functions and plot their results; :mod:`lalic_core.widgets` wraps
them in interactive views, :mod:`lalic_core.figures` saves them as the workbench's figures.
What is not about models by zoo name, inputs or ERFs lives in the module named in its bullet
and is re-exported here, so that ``explore.<name>`` keeps working.

- Models: :func:`zoo_or_random` returns a trained zoo model when the zoo has it, else a
  randomly initialised model of the same preset, with a note saying which.
- Effective receptive fields (:mod:`lalic_core.analysis.erf`): :class:`ERFLab` builds and
  caches the modules whose ERF is measured -- a stack of random blocks of each kind
  (:mod:`lalic_core.baseline_layers`) on noise features, or the first stages of a tiny
  model's analysis transform g_a (random or trained) on crops of the packaged photographs --
  and :func:`plot_erf_view` / :func:`plot_erf_comparison` draw them (the paper's ERF figure).
- Latent correlation (:mod:`lalic_core.analysis.correlation`): :func:`compare_correlations`,
  :func:`plot_correlation_comparison`.
- SCCTX decoding steps (:mod:`lalic_core.analysis.scctx`): :func:`scctx_decode`,
  :func:`plot_decode_grid`.
- Complexity (:mod:`lalic_core.complexity`): :func:`complexity_rows` measures the ablation
  presets (and CompressAI's ELIC) at a chosen size and scales to the paper's 768x512.
- Rate-distortion (:mod:`lalic_core.rd`): :func:`plot_rd_kodak` draws the published Kodak
  points with our zoo's curves (the ``rd_kodak`` figure); :func:`zoo_bd_rows` gives the zoo's
  BD-rates against published anchors, or why there is none.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from lalic_core.baseline_layers import BLOCK_KINDS, make_stack

if TYPE_CHECKING:  # imported on first use, see _LAZY
    from lalic_core.analysis.correlation import (
        common_groups,
        plot_correlation_comparison,
        plot_correlation_models,
    )
    from lalic_core.analysis.scctx import plot_decode_grid, scctx_decode
    from lalic_core.complexity import PAPER_SIZE, complexity_rows, format_complexity
    from lalic_core.rd import PUBLISHED_KODAK, plot_rd_kodak, zoo_bd_rows

#: Names re-exported from other modules, imported on first use: the set-up cells of the
#: notebooks that need only the ERF tools do not pay for CompressAI's import (seconds).
_LAZY = {
    "common_groups": "lalic_core.analysis.correlation",
    "plot_correlation_comparison": "lalic_core.analysis.correlation",
    "plot_correlation_models": "lalic_core.analysis.correlation",
    "plot_decode_grid": "lalic_core.analysis.scctx",
    "scctx_decode": "lalic_core.analysis.scctx",
    "PAPER_SIZE": "lalic_core.complexity",
    "complexity_rows": "lalic_core.complexity",
    "format_complexity": "lalic_core.complexity",
    "PUBLISHED_KODAK": "lalic_core.rd",
    "plot_rd_kodak": "lalic_core.rd",
    "zoo_bd_rows": "lalic_core.rd",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lalic_core.explore' has no attribute {name!r}")


def build_model(*args, **kwargs):
    """:func:`lalic_core.models.factory.build_model` (imported on first use)."""
    from lalic_core.models.factory import build_model as build

    return build(*args, **kwargs)

__all__ = [
    "BLOCK_LABELS",
    "COMPARISON_ZOO",
    "DECADES",
    "KIND_ZOO",
    "PAPER_SIZE",
    "PUBLISHED_KODAK",
    "SCALES",
    "WEIGHTS",
    "ZOO_PRESETS",
    "ERFLab",
    "ERFView",
    "ModelChoice",
    "centred_shares",
    "common_groups",
    "compare_correlations",
    "complexity_rows",
    "demo_images",
    "display_map",
    "format_complexity",
    "g_a_stages",
    "image_crops",
    "plot_correlation_comparison",
    "plot_correlation_models",
    "plot_decode_grid",
    "plot_erf_comparison",
    "plot_erf_view",
    "plot_rd_kodak",
    "scctx_decode",
    "zoo_bd_rows",
    "zoo_or_random",
]

#: Display names of the block kinds of :mod:`lalic_core.baseline_layers`.
BLOCK_LABELS = {
    "birwkv": "Bi-RWKV",
    "tcm": "TCM-style",
    "fat": "FAT-style",
    "cnn": "CNN",
    "global": "global attention",
}

#: The zoo model whose transforms are made of each block kind (FAT-style and global attention
#: have no trained transform): the controlled comparison, three presets of about 2.5M
#: parameters trained from scratch with the same data and steps at quality 3.
KIND_ZOO = {"birwkv": "lalic-tiny-scratch", "tcm": "tcm-tiny", "cnn": "cnn-tiny"}
#: The same three zoo names in the order the comparisons show them.
COMPARISON_ZOO = tuple(KIND_ZOO.values())

#: What an ERF is measured on: a stack of ``depth`` randomly initialised blocks (noise
#: features in), or the first ``depth`` stages of a tiny model's g_a, random or trained
#: (crops of the packaged photographs in).
WEIGHTS = ("random blocks", "random g_a", "trained g_a")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _check_int(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        bound = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"`{name}` must be an int {bound}, got {value!r}")
    return value


def _check_kind(kind: str) -> str:
    if kind not in BLOCK_KINDS:
        raise ValueError(f"`kind` must be one of {BLOCK_KINDS}, got {kind!r}")
    return kind


# --------------------------------------------------------------------------------------------
# Models by zoo name: the zoo (zoo.load), or random weights of a preset (models.factory)
# with a note; nothing else in this module resolves names.
# --------------------------------------------------------------------------------------------
#: Zoo entries and the preset each is built from (the fallback when it is missing).
ZOO_PRESETS = {"lalic-tiny": "tiny", "lalic-tiny-scratch": "tiny", "tcm-tiny": "tiny-tcm",
               "cnn-tiny": "tiny-cnn"}


@dataclass
class ModelChoice:
    """A model for a notebook: ``trained`` says whether it came from the zoo; ``note`` says
    what it is in one line (print it)."""

    model: nn.Module
    name: str
    quality: int
    preset: str
    trained: bool
    note: str


def zoo_or_random(name: str, quality: int = 3, *, preset: str | None = None, seed: int = 0,
                  weights_dir=None) -> ModelChoice:
    """The zoo model ``name:quality`` (eval mode, coder tables built) when the zoo has it and
    it loads; else a randomly initialised model of ``preset`` (default: the zoo entry's own
    preset, :data:`ZOO_PRESETS`), seeded, in eval mode with its coder tables built."""
    from lalic_core import zoo

    preset = preset or ZOO_PRESETS.get(name)
    if (name, quality) in zoo.available(weights_dir):
        try:
            model = zoo.load(name, quality, weights_dir=weights_dir)
        except (ValueError, OSError, RuntimeError) as err:
            reason = f"could not be loaded ({err})"
        else:
            preset = str(zoo.info(name, quality, weights_dir=weights_dir).get("model", preset))
            return ModelChoice(model, name, quality, preset, True,
                               f"{name}:{quality}: trained weights from the zoo")
    else:
        reason = "is not in the zoo yet"
    if preset is None:
        raise ValueError(f"zoo_or_random: {name}:{quality} {reason} and no preset is known "
                         f"for {name!r}; pass preset= (one of the LALIC presets)")
    model = build_model(preset, seed=seed).eval()
    model.update(force=True)
    return ModelChoice(model, name, quality, preset, False,
                       f"{name}:{quality} {reason}: using a randomly initialised {preset!r} "
                       f"model (seed {seed}) instead; its results say nothing about training")


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
def demo_images() -> torch.Tensor:
    """The two packaged photographs (half-resolution Kodak 23 and 15), (2, 3, 256, 384): the
    same pixels on every machine."""
    from lalic_core.data import DEMO_IMAGES, demo_image_path, load_image

    return torch.cat([load_image(demo_image_path(name)) for name in DEMO_IMAGES])


def image_crops(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``n`` random ``size`` x ``size`` crops of the packaged photographs, (n, 3, size, size),
    deterministic for a seed."""
    _check_int("n", n, 1)
    images = demo_images()
    _, _, h, w = images.shape
    _check_int("size", size, 8, min(h, w))
    g = _generator(seed)
    crops = []
    for i in range(n):
        top = int(torch.randint(0, h - size + 1, (1,), generator=g))
        left = int(torch.randint(0, w - size + 1, (1,), generator=g))
        crops.append(images[i % len(images), :, top:top + size, left:left + size])
    return torch.stack(crops)


# --------------------------------------------------------------------------------------------
# Effective receptive fields
# --------------------------------------------------------------------------------------------
def g_a_stages(g_a: nn.Sequential, stages: int) -> nn.Sequential:
    """The first ``stages`` stages of an analysis transform built as one flat Sequential of
    strided convolutions and blocks: stage s ends before the (s+1)-th convolution; the last
    stage is the whole transform (its output is y)."""
    if not isinstance(g_a, nn.Sequential):
        raise TypeError(f"g_a_stages: `g_a` must be an nn.Sequential, got {type(g_a).__name__}")
    convs = [i for i, m in enumerate(g_a) if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("g_a_stages: `g_a` (the transform) has no Conv2d stages")
    _check_int("stages", stages, 1, len(convs))
    end = convs[stages] if stages < len(convs) else len(g_a)
    return g_a[:end]


@dataclass
class ERFView:
    """One ERF measurement and what it was measured on."""

    kind: str
    depth: int
    size: int
    weights: str  # what was asked for
    source: str  # what was measured, in words
    note: str  # why the source differs from the request ("" when it does not)
    result: object  # lalic_core.analysis.erf.ERFResult

    @property
    def label(self) -> str:
        return BLOCK_LABELS[self.kind]

    def display(self, scale: str = "log", decades: int | None = None) -> torch.Tensor:
        """The map for display, in [0, 1]: see :func:`display_map`."""
        return display_map(self.result.contributions, scale, decades)


#: Colour scales of the ERF heat maps; "log" spans :data:`DECADES` decades below the peak.
SCALES = ("log", "linear")
DECADES = 5


def display_map(contributions: torch.Tensor, scale: str = "log",
                decades: int | None = None) -> torch.Tensor:
    """An ERF map for display, in [0, 1]: "linear" is map / max; "log" is log10(map / max)
    over ``decades`` (default :data:`DECADES`) decades mapped to [0, 1] (0: 10^-decades of
    the peak or less), which shows
    how far a small contribution reaches. (RepLKNet's log10(map + 1) scaling, which the area
    ratios use, depends on the map's absolute size and shows little more than the peak for a
    random-init block.)"""
    if scale not in SCALES:
        raise ValueError(f"`scale` must be one of {SCALES}, got {scale!r}")
    decades = _check_int("decades", DECADES if decades is None else decades, 1, 12)
    m = contributions.to(torch.float64).clamp_min(0)
    peak = m.max()
    if peak <= 0:
        return m
    m = m / peak
    if scale == "linear":
        return m
    return ((torch.log10(m.clamp_min(10.0 ** -decades)) + decades) / decades).clamp(0, 1)


def _erf_colorbar(fig, mappable, axes, scale: str, decades: int | None = None, **kwargs):
    bar = fig.colorbar(mappable, ax=axes, **kwargs)
    if scale == "log":
        d = DECADES if decades is None else decades
        bar.set_ticks([i / d for i in range(d + 1)],
                      labels=[f"1e-{d - i}" if i < d else "1" for i in range(d + 1)])
        bar.set_label("contribution / peak (log scale)")
    else:
        bar.set_label("contribution / peak")
    return bar


#: Seconds per (image x block x pixel) of an ERF measurement of random blocks at 32 channels
#: on a busy 2-core machine, per block kind (global attention: per image x block x pixel²);
#: g_a stages count as Bi-RWKV blocks. Used by :meth:`ERFLab.estimate_s`.
ERF_SECONDS_PER_UNIT = {"birwkv": 1.5e-5, "tcm": 1.0e-5, "cnn": 0.3e-5, "fat": 4.0e-5,
                        "global": 2.0e-8}


class ERFLab:
    """Builds, caches and measures the modules whose ERFs the notebook shows.

    ``dim``: channels of the random block stacks; ``n_images``: inputs per measurement (noise
    features for blocks, photograph crops for g_a); ``quality``: zoo quality of the trained
    transforms. Everything is seeded by ``seed``; a measurement is cached by (kind, depth,
    size, weights), so going back to a setting is instant.
    """

    def __init__(self, dim: int = 32, n_images: int = 2, seed: int = 0, quality: int = 3,
                 weights_dir=None):
        self.dim = _check_int("dim", dim, 1)
        self.n_images = _check_int("n_images", n_images, 1)
        self.seed, self.quality, self.weights_dir = int(seed), int(quality), weights_dir
        self._stacks: dict = {}
        self._transforms: dict = {}
        self._views: dict = {}

    def _stack(self, kind: str, depth: int) -> nn.Module:
        key = (kind, depth)
        if key not in self._stacks:
            with torch.random.fork_rng():
                torch.manual_seed(self.seed)  # depth d+1 extends depth d's blocks
                self._stacks[key] = make_stack(kind, self.dim, depth).eval()
        return self._stacks[key]

    def _transform(self, kind: str, trained: bool) -> tuple[nn.Sequential, str, str]:
        """(g_a, description, note) of the tiny model built from ``kind`` blocks."""
        key = (kind, trained)
        if key not in self._transforms:
            name = KIND_ZOO[kind]
            if trained:
                choice = zoo_or_random(name, self.quality, seed=self.seed,
                                       weights_dir=self.weights_dir)
                what = (f"trained g_a of {name}:{self.quality}" if choice.trained
                        else f"random g_a of {choice.preset!r}")
                note = "" if choice.trained else choice.note
                model = choice.model
            else:
                model = build_model(ZOO_PRESETS[name], seed=self.seed).eval()
                what, note = f"random g_a of {ZOO_PRESETS[name]!r}", ""
            self._transforms[key] = (model.g_a.eval(), what, note)
        return self._transforms[key]

    def setup(self, kind: str, depth: int, weights: str = "random blocks"):
        """(module, inputs maker, source, note) for one setting, without measuring."""
        _check_kind(kind)
        _check_int("depth", depth, 1)
        if weights not in WEIGHTS:
            raise ValueError(f"`weights` must be one of {WEIGHTS}, got {weights!r}")
        if weights != "random blocks" and kind not in KIND_ZOO:
            note = (f"no {BLOCK_LABELS[kind]} analysis transform exists (only "
                    f"{', '.join(BLOCK_LABELS[k] for k in KIND_ZOO)}): showing random blocks")
            weights = "random blocks"
        else:
            note = ""
        if weights == "random blocks":
            module = self._stack(kind, depth)
            source = f"{depth} random {BLOCK_LABELS[kind]} block{'s' * (depth > 1)}, {self.dim} ch"

            def inputs(size):
                return torch.randn(self.n_images, self.dim, size, size,
                                   generator=_generator(self.seed))
        else:
            g_a, what, note = self._transform(kind, weights == "trained g_a")
            stages = min(depth, sum(isinstance(m, nn.Conv2d) for m in g_a))
            module = g_a_stages(g_a, stages)
            source = f"{what}, stages 1-{stages}" if stages > 1 else f"{what}, stage 1"

            def inputs(size):
                return image_crops(self.n_images, size, self.seed)
        return module, inputs, source, note

    def erf(self, kind: str, depth: int, size: int = 64, weights: str = "random blocks",
            progress=None) -> ERFView:
        """The ERF of one setting (cached). ``progress(fraction, text)``, when given, is told
        how far the measurement is (the views show it)."""
        from lalic_core.analysis.erf import compute_erf

        _check_int("size", size, 8, 256)
        key = (kind, depth, size, weights)
        if key not in self._views:
            if progress is not None:
                progress(0.1, f"building {BLOCK_LABELS.get(kind, kind)}, depth {depth}")
            module, inputs, source, note = self.setup(kind, depth, weights)
            if progress is not None:
                progress(0.3, f"measuring the ERF on {self.n_images} x {size} x {size} inputs")
            result = compute_erf(module, inputs(size))
            self._views[key] = ERFView(kind, depth, size, weights, source, note, result)
        return self._views[key]

    def cached(self, kind: str, depth: int, size: int = 64,
               weights: str = "random blocks") -> bool:
        """True when :meth:`erf` of this setting is already measured."""
        return (kind, depth, size, weights) in self._views

    def estimate_s(self, kind: str, depth: int, size: int = 64,
                   weights: str = "random blocks") -> float:
        """A rough CPU time (seconds, 2 cores) of :meth:`erf` for one setting; 0 when cached.

        Cost model: per input image, per block (or g_a stage), per pixel; global attention
        grows with the square of the pixel count. Calibrated on the notebook's settings
        (:data:`ERF_SECONDS_PER_UNIT`); used to ask before running settings of > ~10 s.
        """
        if self.cached(kind, depth, size, weights):
            return 0.0
        pixels = size * size
        units = self.n_images * depth * pixels * (self.dim / 32)
        if weights != "random blocks" and kind in KIND_ZOO:
            return ERF_SECONDS_PER_UNIT["birwkv"] * self.n_images * depth * pixels
        if kind == "global":
            units *= pixels
        return ERF_SECONDS_PER_UNIT.get(kind, ERF_SECONDS_PER_UNIT["fat"]) * units

    def forget(self, kind: str, depth: int, size: int = 64,
               weights: str = "random blocks") -> None:
        """Drop the cached measurement of one setting (benchmarks time a first visit)."""
        self._views.pop((kind, depth, size, weights), None)

    def comparison(self, kinds: Sequence[str] = BLOCK_KINDS, depth: int = 2, size: int = 64,
                   weights: str = "random blocks") -> dict[str, ERFView | None]:
        """ERFs of several kinds at one setting; kinds without a g_a (FAT-style, global) map
        to None when ``weights`` asks for a g_a."""
        return {kind: (self.erf(kind, depth, size, weights)
                       if weights == "random blocks" or kind in KIND_ZOO else None)
                for kind in kinds}


def centred_shares(scaled: torch.Tensor) -> tuple[list[int], list[float]]:
    """Side lengths 1, 3, 5, ... of centred squares and the share of the map's total each
    holds (the curve behind RepLKNet's area ratios)."""
    if not isinstance(scaled, torch.Tensor) or scaled.dim() != 2 or not scaled.numel():
        raise ValueError(f"`scaled` must be a non-empty 2-D tensor, got "
                         f"{tuple(scaled.shape) if isinstance(scaled, torch.Tensor) else scaled!r}")
    from lalic_core.analysis.erf import centred_square_shares

    try:
        _, shares = centred_square_shares(scaled)
    except ValueError as err:
        raise ValueError(f"`scaled`: {err}") from None
    return [2 * i + 1 for i in range(len(shares))], shares


def _ratio_text(view: ERFView) -> str:
    r = view.result.area_ratios
    return "  ".join(f"{int(t * 100)}%: {r[t][1]:.3f}" for t in (0.2, 0.5, 0.99) if t in r)


def _new_figure(figsize, **kwargs):
    """A figure outside pyplot's registry: shown only where the caller displays or saves it
    (no stray inline copies, nothing to close)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, **kwargs)


def plot_erf_view(view: ERFView, scale: str = "log", fig=None):
    """One ERF: the heat map (RdYlGn, as in the paper; ``scale``: see :func:`display_map`) and
    the share of RepLKNet's log10(map + 1) map inside centred squares against their side, with
    the high-contribution area ratios (red: where the share passes 0.2, 0.3, 0.5, 0.99).
    Returns the Figure."""
    from lalic_core.analysis.erf import plot_erf

    fig = fig or _new_figure((8.4, 4.2), layout="constrained")
    ax_map, ax_curve = fig.subplots(1, 2, width_ratios=[1, 1.15])
    plot_erf(view.display(scale), ax=ax_map, cbar=False,
             title=f"{view.label}: {view.source}\narea ratios {_ratio_text(view)}")
    ax_map.xaxis.label.set_fontsize(8)
    _erf_colorbar(fig, ax_map.collections[0], ax_map, scale, location="top", shrink=0.8)
    sides, shares = centred_shares(view.result.scaled)
    ax_curve.plot(sides, shares, color="C2", marker=".", markersize=3)
    for t, (side, _) in view.result.area_ratios.items():
        ax_curve.axhline(t, color="0.75", linewidth=0.7, zorder=0)
        ax_curve.plot([side], [t], "o", color="C3", markersize=4)
    ax_curve.set_xlabel(f"side of the centred square (input {view.size}x{view.size})")
    ax_curve.set_ylabel("share of the log10(map + 1) map inside")
    ax_curve.set_ylim(0, 1.02)
    ax_curve.set_xlim(0, sides[-1] + 1)
    ax_curve.grid(True, alpha=0.3)
    ax_curve.set_title("RepLKNet area ratio: square area / image area where\nthe share passes "
                       "t = 0.2, 0.3, 0.5, 0.99 (red)", fontsize=9)
    if view.note:
        fig.suptitle(view.note, fontsize=8, color="C3")
    return fig


def plot_erf_comparison(rows: Mapping[str, Mapping[str, ERFView | None]], scale: str = "log"):
    """The paper's ERF comparison: one row of heat maps per entry of ``rows`` (e.g. "random
    init", "trained"), one column per block kind (``scale``: see :func:`display_map`), and per
    row a bar chart of RepLKNet's high-contribution area ratios (larger = wider ERF). Returns
    the Figure."""
    import numpy as np

    from lalic_core.analysis.erf import plot_erf

    if not rows or not any(rows.values()):
        raise ValueError("plot_erf_comparison: nothing to plot")
    kinds = list(dict.fromkeys(k for row in rows.values() for k in row))
    n_rows, n_cols = len(rows), len(kinds)
    fig = _new_figure((2.5 * n_cols + 3.6, 3.3 * n_rows + 0.4), layout="constrained")
    axes = fig.subplots(n_rows, n_cols + 1, squeeze=False,
                        width_ratios=[1] * n_cols + [1.5])
    thresholds = (0.2, 0.5, 0.99)
    for r, (row_name, row) in enumerate(rows.items()):
        for c, kind in enumerate(kinds):
            ax, view = axes[r, c], row.get(kind)
            if view is None:
                ax.axis("off")
                ax.text(0.5, 0.5, f"{BLOCK_LABELS[kind]}:\nno trained\ntransform", ha="center",
                        va="center", fontsize=9, color="0.4", transform=ax.transAxes)
                continue
            plot_erf(view.display(scale), ax=ax, cbar=False,
                     title=f"{view.label}\n" + "\n".join(
                         f"ratio@{t}: {view.result.area_ratios[t][1]:.3f}" for t in thresholds))
            ax.xaxis.label.set_fontsize(8)
            if c == 0:
                ax.set_ylabel(row_name, fontsize=10)
        ax = axes[r, -1]
        present = [(k, row[k]) for k in kinds if row.get(k) is not None]
        x = np.arange(len(present))
        width = 0.8 / len(thresholds)
        for j, t in enumerate(thresholds):
            ax.bar(x + (j - 1) * width, [v.result.area_ratios[t][1] for _, v in present], width,
                   label=f"t = {t}", color=f"C{j}")
        ax.set_xticks(x, [BLOCK_LABELS[k] for k, _ in present], rotation=30, ha="right",
                      fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("area ratio", fontsize=9)
        ax.set_title(f"{row_name}: area ratios", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(True, axis="y", alpha=0.3)
    mappable = next(a.collections[0] for a in axes[:, :-1].flat if a.collections)
    _erf_colorbar(fig, mappable, axes[:, :-1].ravel().tolist(), scale, location="bottom",
                  shrink=0.4, aspect=40)
    return fig


# --------------------------------------------------------------------------------------------
# Latent correlation
# --------------------------------------------------------------------------------------------
def compare_correlations(models: Mapping[str, nn.Module], images: torch.Tensor | None = None,
                         k: int = 2) -> dict:
    """:func:`~lalic_core.analysis.correlation.model_latent_correlation` of each model on
    ``images`` (default: the packaged photographs), keyed like ``models``."""
    from lalic_core.analysis.correlation import model_latent_correlation

    if not models:
        raise ValueError("compare_correlations: no models (`models` is empty)")
    images = demo_images() if images is None else images
    return {name: model_latent_correlation(model, images, k=k) for name, model in models.items()}
