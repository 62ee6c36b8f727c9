"""Interactive views for the notebooks: ERF explorer, latent-correlation view, SCCTX stepper.

Each view is an ``ipywidgets.VBox``: its controls first (attributes, so that a notebook or a
test drives a view by setting ``control.value``), then a status line and an ``Output``
(``out``) in which every change redraws a matplotlib figure with IPython's inline backend
(``display(fig)``; no ipympl needed). The computing lives in :mod:`lalic_core.explore`; a view
only caches, draws and counts:

- ``redraws``: figures drawn so far; ``figure``: the last one; ``error``: the last error
  message (shown in the output instead of a figure) or None.

    from lalic_core import widgets
    view = widgets.erf_explorer()            # depth slider first, then block, input, weights
    view.depth.value = 3                     # redraws
    display(view)

The first control of :class:`ERFExplorer` and :class:`SCCTXStepper` is an ``IntSlider``
starting below its maximum (the browser test, ``tests/test_browser.py``, presses ArrowRight
on the notebook's first slider and expects the figure after it to change).
"""
from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt  # noqa: F401  (in a kernel: enables the inline figure display)
from IPython.display import display

from lalic_core import explore
from lalic_core.baseline_layers import BLOCK_KINDS

__all__ = [
    "CorrelationView",
    "ERFExplorer",
    "SCCTXStepper",
    "correlation_view",
    "erf_explorer",
    "figure_png",
    "scctx_stepper",
]


def figure_png(fig, dpi: int = 50) -> bytes:
    """The figure rendered as PNG bytes (for comparing what two redraws showed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class _FigureView(widgets.VBox):
    """Controls, a status line and an Output holding the current figure."""

    def __init__(self, rows: Sequence[widgets.Widget], **kwargs):
        self.out = widgets.Output()
        self.status = widgets.HTML()
        self.redraws = 0
        self.figure = None
        self.error: str | None = None
        super().__init__([*rows, self.status, self.out], **kwargs)

    def _watch(self, *controls: widgets.Widget) -> None:
        for control in controls:
            control.observe(self._changed, names="value")

    def _changed(self, _change=None) -> None:
        self.redraw()

    def _draw(self):
        """(figure, note) for the current control values."""
        raise NotImplementedError

    def redraw(self):
        """Draw the figure for the current control values into ``out``; returns it (None
        after an error, whose message is shown instead and kept in ``error``)."""
        self.status.value = "<i>computing...</i>"
        try:
            fig, note = self._draw()
        except Exception as err:  # noqa: BLE001 -- a view shows its errors instead of hiding them in a log
            self.error = f"{type(err).__name__}: {err}"
            self.status.value = f"<span style='color:#b00'>{html.escape(self.error)}</span>"
            with self.out:
                self.out.clear_output(wait=True)
                print(self.error)
            return None
        self.error = None
        self.status.value = f"<span style='color:#b00'>{html.escape(note)}</span>" if note else ""
        with self.out:
            self.out.clear_output(wait=True)
            display(fig)
        self.figure = fig
        self.redraws += 1
        return fig


# --------------------------------------------------------------------------------------------
# ERF explorer
# --------------------------------------------------------------------------------------------
class ERFExplorer(_FigureView):
    """The effective receptive field of one block kind, depth, input size and set of weights.

    Controls: ``depth`` (IntSlider: blocks in the random stack, or g_a stages 1..4 for the
    g_a weights), ``kind`` (block), ``size`` (input side), ``weights``
    (:data:`lalic_core.explore.WEIGHTS`), ``scale`` (heat-map colours, "log" or "linear").
    Measurements are cached by ``lab`` (:class:`lalic_core.explore.ERFLab`); ``view`` is the
    last one shown.
    """

    def __init__(self, kind: str = "birwkv", depth: int = 1, size: int = 64,
                 weights: str = "random blocks", scale: str = "log", *, max_depth: int = 4,
                 sizes: Sequence[int] = (32, 48, 64, 96, 128),
                 lab: explore.ERFLab | None = None, **lab_options):
        if kind not in BLOCK_KINDS:
            raise ValueError(f"`kind` must be one of {BLOCK_KINDS}, got {kind!r}")
        if weights not in explore.WEIGHTS:
            raise ValueError(f"`weights` must be one of {explore.WEIGHTS}, got {weights!r}")
        if scale not in explore.SCALES:
            raise ValueError(f"`scale` must be one of {explore.SCALES}, got {scale!r}")
        sizes = [int(s) for s in sizes]
        if size not in sizes or any(not 8 <= s <= 256 for s in sizes):
            raise ValueError(f"`size` must be one of `sizes` {sizes} (each in 8..256), "
                             f"got {size!r}")
        if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 2:
            raise ValueError(f"`max_depth` must be an int >= 2, got {max_depth!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= max_depth:
            raise ValueError(f"`depth` must be an int in 1..{max_depth}, got {depth!r}")
        self.lab = lab if lab is not None else explore.ERFLab(**lab_options)
        self.view: explore.ERFView | None = None
        self.depth = widgets.IntSlider(value=depth, min=1, max=max_depth, description="depth",
                                       continuous_update=False)
        self.kind = widgets.Dropdown(
            options=[(explore.BLOCK_LABELS[k], k) for k in BLOCK_KINDS], value=kind,
            description="block")
        self.size = widgets.Dropdown(options=[(f"{s} x {s}", s) for s in sizes], value=size,
                                     description="input")
        self.weights = widgets.ToggleButtons(options=explore.WEIGHTS, value=weights,
                                             description="weights")
        self.scale = widgets.ToggleButtons(options=explore.SCALES, value=scale,
                                           description="colours")
        super().__init__([widgets.HBox([self.depth, self.kind, self.size]),
                          widgets.HBox([self.weights, self.scale])])
        self._watch(self.depth, self.kind, self.size, self.weights, self.scale)
        self.redraw()

    def _draw(self):
        view = self.lab.erf(self.kind.value, self.depth.value, self.size.value,
                            self.weights.value)
        self.view = view
        return explore.plot_erf_view(view, scale=self.scale.value), view.note


def erf_explorer(**options) -> ERFExplorer:
    """An :class:`ERFExplorer` (keyword arguments: its constructor's)."""
    return ERFExplorer(**options)


# --------------------------------------------------------------------------------------------
# Latent correlation
# --------------------------------------------------------------------------------------------
class CorrelationView(_FigureView):
    """Correlation maps of the normalised latent residual of several models, side by side.

    ``results``: name -> :class:`~lalic_core.analysis.correlation.LatentCorrelation`.
    Controls: ``group`` (Dropdown: -1 = all channels, else a channel group shared by all
    models), ``vmax`` (FloatSlider: the colour range), ``annotate`` (Checkbox: numbers).
    """

    def __init__(self, results: Mapping, group: int = -1, vmax: float = 0.3,
                 annotate: bool = True):
        if not results:
            raise ValueError("CorrelationView: no results")
        self.results = dict(results)
        shared = explore.common_groups(self.results)
        options, start = [("all channels", -1)], 0
        for i, size in enumerate(shared):
            options.append((f"group {i} (ch {start}-{start + size - 1})", i))
            start += size
        if group not in [v for _, v in options]:
            raise ValueError(f"`group` must be -1 (all channels) or a shared channel group "
                             f"0..{len(shared) - 1}, got {group!r}")
        if not 0.05 <= vmax <= 1.0:
            raise ValueError(f"`vmax` must lie in [0.05, 1], got {vmax!r}")
        self.group = widgets.Dropdown(options=options, value=group, description="channels")
        self.vmax = widgets.FloatSlider(value=vmax, min=0.05, max=1.0, step=0.05,
                                        description="colour max", continuous_update=False)
        self.annotate = widgets.Checkbox(value=annotate, description="numbers")
        super().__init__([widgets.HBox([self.group, self.vmax, self.annotate])])
        self._watch(self.group, self.vmax, self.annotate)
        self.redraw()

    def _draw(self):
        group = None if self.group.value < 0 else self.group.value
        fig = explore.plot_correlation_models(self.results, group, vmax=self.vmax.value,
                                              annotate=self.annotate.value)
        return fig, ""


def correlation_view(models_or_results: Mapping, images=None, k: int = 2,
                     **options) -> CorrelationView:
    """A :class:`CorrelationView` of models (name -> model: measured on ``images``, default
    the packaged photographs, with offsets up to ``k``) or of ready results."""
    from torch import nn

    if models_or_results and all(isinstance(v, nn.Module) for v in models_or_results.values()):
        results = explore.compare_correlations(models_or_results, images, k=k)
    else:
        results = models_or_results
    return CorrelationView(results, **options)


# --------------------------------------------------------------------------------------------
# SCCTX decoding steps
# --------------------------------------------------------------------------------------------
class SCCTXStepper(_FigureView):
    """The decoder's state after each SCCTX pass (2 per channel group).

    ``steps``: :func:`lalic_core.analysis.scctx.decode_steps` output (list). Control: ``step``
    (IntSlider, 0 = the first group's anchors). The figure is
    :func:`lalic_core.analysis.scctx.plot_decode_step`: progress, decoded positions, scales
    used, bits per step (cumulative bar) and the progressive reconstruction.
    """

    def __init__(self, steps: Sequence, step: int = 0, image: int = 0):
        self.steps = list(steps)
        if len(self.steps) < 2:
            raise ValueError(f"SCCTXStepper needs the decoding steps (at least 2), got "
                             f"{len(self.steps)}")
        n = len(self.steps)
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < n:
            raise ValueError(f"`step` must be an int in 0..{n - 1}, got {step!r}")
        batch = self.steps[0].x_hat.shape[0]
        if isinstance(image, bool) or not isinstance(image, int) or not 0 <= image < batch:
            raise ValueError(f"`image` must be an int in 0..{batch - 1}, got {image!r}")
        self.image = image
        self.step = widgets.IntSlider(value=step, min=0, max=n - 1, description="step",
                                      continuous_update=False)
        super().__init__([self.step])
        self._watch(self.step)
        self.redraw()

    def _draw(self):
        from matplotlib.figure import Figure

        from lalic_core.analysis.scctx import plot_decode_step

        fig = Figure(figsize=(14, 3.6))
        plot_decode_step(self.steps, self.step.value, image=self.image, fig=fig)
        return fig, ""


def scctx_stepper(model, image, step: int = 0) -> SCCTXStepper:
    """Compress ``image`` ((1, 3, H, W) in [0, 1], padded to multiples of 64) with ``model``
    (a LALIC model after ``update()``), decode it pass by pass, and step through the passes."""
    steps, _ = explore.scctx_decode(model, image)
    return SCCTXStepper(steps, step=step)
