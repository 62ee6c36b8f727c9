"""Interactive views for the notebooks: one way to draw, used by every control.

A view is an ``ipywidgets.VBox``: its controls (attributes, so that a notebook or a test
drives a view by setting ``control.value``), a status line with a progress bar, and an
``Output`` (``out``) that holds the current figure. Every change of a control goes through
the same steps (:class:`FigureView`):

1. ``request()``: the request counter ``generation`` goes up and the status line says
   "computing ..." at once (before any work, so the user sees it within a fraction of a
   second);
2. the draw runs once for the *current* control values: inside a Jupyter kernel it is
   scheduled on the kernel's event loop after a short pause (``coalesce_s``), so a burst of
   changes (a slider dragged, keys held) costs one draw; elsewhere (scripts, tests) it runs
   immediately;
3. the result is shown only if no newer request came in meanwhile (else it is dropped and the
   newest request is drawn): what is shown always matches the controls once the kernel is
   idle, with no lost and no out-of-order figures;
4. the figure is shown by *replacing* the Output's content with a PNG of it and a caption
   line "shown: <control> = <value> | ..." naming the control values it was drawn for (the
   browser test checks the caption against the controls). This does not depend on
   matplotlib's backend, pyplot, or on which cell is running.

Settings whose ``estimate_s`` exceeds ``confirm_above_s`` (about 10 s on a CPU) are not run on
a change: the status line says how long they would take and a "run" button starts them.

Counters for tests and benchmarks: ``redraws`` (figures shown), ``dropped`` (stale results
thrown away), ``figure`` (the last figure shown), ``shown`` (the control values it shows),
``error`` (the last error message, shown instead of a figure, or None).

    from lalic_core import widgets
    view = widgets.erf_explorer()            # depth slider first, then block, input, weights
    view.depth.value = 3                     # redraws
    display(view)
"""
from __future__ import annotations

import base64
import html
import io
import statistics
import time
import weakref
from collections.abc import Callable, Mapping, Sequence

import ipywidgets as widgets

__all__ = [
    "CorrelationView",
    "ERFExplorer",
    "FigureView",
    "FunctionView",
    "SCCTXStepper",
    "control_label",
    "correlation_view",
    "erf_explorer",
    "figure_output",
    "figure_png",
    "function_view",
    "live_views",
    "measure_controls",
    "scctx_stepper",
]

#: Settings estimated to take longer than this (seconds) wait for the "run" button.
CONFIRM_ABOVE_S = 10.0
#: Pause before drawing inside a kernel, so that a burst of changes is drawn once (seconds).
COALESCE_S = 0.05
#: Resolution of the figures shown in views.
VIEW_DPI = 72
#: Every view built in this process (for :func:`measure_controls`).
_VIEWS: weakref.WeakSet = weakref.WeakSet()


def figure_png(fig, dpi: int = 50) -> bytes:
    """The figure rendered as PNG bytes (for comparing what two redraws showed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def figure_output(fig, dpi: int = VIEW_DPI) -> dict:
    """A display_data output (nbformat dict) holding the figure as a PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": data, "text/plain": f"<Figure {fig.get_figwidth():g}x"
                                                      f"{fig.get_figheight():g} in>"}}


def _text_output(text: str, name: str = "stdout") -> dict:
    return {"output_type": "stream", "name": name, "text": text + "\n"}


def control_label(control: widgets.Widget) -> str:
    """The value of a control as its front-end shows it: the slider readout, the label of the
    selected option, ``true``/``false`` for a checkbox (the captions use it)."""
    if isinstance(control, (widgets.Dropdown, widgets.ToggleButtons, widgets.RadioButtons)):
        return str(control.label)
    if isinstance(control, widgets.FloatSlider):
        return format(control.value, control.readout_format)
    if isinstance(control, widgets.Checkbox):
        return "true" if control.value else "false"
    return str(control.value)


def _running_loop():
    """The asyncio loop of the Jupyter kernel this code runs in, or None (scripts, tests)."""
    import asyncio

    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return None
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class FigureView(widgets.VBox):
    """Controls, a status line with a progress bar, and an Output holding the current figure.

    Subclasses give their controls to ``__init__`` (``controls``: description -> widget, in
    display order) and implement :meth:`_draw` (returns ``(figure, note)``; may call
    ``self.progress(fraction, text)``) and optionally :meth:`estimate_s`.

    ``schedule``: "auto" (deferred on the kernel's event loop when there is one, else
    immediate), "now" (always immediate) or a callable ``schedule(delay_s, callback)`` (tests).
    ``connect=False`` builds a view whose controls are *not* connected (a negative control for
    the browser test: its figure never follows the controls).
    """

    def __init__(self, rows: Sequence[widgets.Widget], controls: Mapping[str, widgets.Widget],
                 *, schedule="auto", confirm_above_s: float = CONFIRM_ABOVE_S,
                 coalesce_s: float = COALESCE_S, connect: bool = True, **kwargs):
        self.controls = dict(controls)
        self.out = widgets.Output()
        self.status = widgets.HTML()
        self.progress_bar = widgets.FloatProgress(value=0.0, min=0.0, max=1.0,
                                                  layout=widgets.Layout(width="160px",
                                                                        visibility="hidden"))
        self.run_button = widgets.Button(description="run", button_style="warning",
                                         layout=widgets.Layout(display="none"))
        self.run_button.on_click(lambda _button: self.request(confirmed=True))
        self.redraws = 0
        self.dropped = 0
        self.generation = 0
        self.figure = None
        self.shown: dict[str, str] | None = None
        self.error: str | None = None
        self.seconds: float | None = None  # how long the last draw took
        self.confirm_above_s = float(confirm_above_s)
        self.coalesce_s = float(coalesce_s)
        self._schedule = schedule
        self._scheduled = False
        self._running = False
        self._confirmed_generation = -1
        for control in self.controls.values():
            control.add_class("lalic-control")
        super().__init__([*rows, widgets.HBox([self.status, self.progress_bar,
                                               self.run_button]), self.out], **kwargs)
        self.add_class("lalic-view")
        _VIEWS.add(self)
        if connect:
            for control in self.controls.values():
                control.observe(self._changed, names="value")

    # -- what a subclass provides -------------------------------------------------------------
    def _draw(self):
        """(figure, note) for the current control values."""
        raise NotImplementedError

    def estimate_s(self) -> float:
        """Seconds the current setting is expected to take (0: cached or cheap)."""
        return 0.0

    def forget(self) -> None:
        """Drop what is cached for the current setting (benchmarks time a first visit)."""

    # -- the one way to draw ------------------------------------------------------------------
    def values(self) -> dict[str, str]:
        """The control values as their front-end shows them (:func:`control_label`)."""
        return {name: control_label(c) for name, c in self.controls.items()}

    def caption(self, values: Mapping[str, str] | None = None) -> str:
        """The caption line under a figure drawn for ``values`` (default: the current)."""
        values = self.values() if values is None else values
        return "shown: " + " | ".join(f"{k} = {v}" for k, v in values.items())

    def _changed(self, _change=None) -> None:
        self.request()

    def request(self, confirmed: bool = False) -> None:
        """Ask for a figure of the current control values (see the module docstring)."""
        self.generation += 1
        if confirmed:
            self._confirmed_generation = self.generation
        self.run_button.layout.display = "none"
        self._set_status("<i>computing ...</i>")
        self._show_progress(0.02)
        if self._scheduled or self._running:
            return  # the pending or running draw picks the newest values up
        schedule = self._schedule
        loop = _running_loop() if schedule == "auto" else None
        if callable(schedule):
            self._scheduled = True
            schedule(self.coalesce_s, self._run_pending)
        elif loop is not None:
            self._scheduled = True
            loop.call_later(self.coalesce_s, self._run_pending)
        else:
            self._run_pending()

    def redraw(self):
        """Draw the current control values now (no deferral); returns the figure shown (None
        after an error or when the setting waits for the run button)."""
        self.generation += 1
        self._run_pending()
        return self.figure if self.error is None and self.shown == self.values() else None

    def progress(self, fraction: float, text: str | None = None) -> None:
        """Called by ``_draw`` to report how far it is (0..1), with an optional status text."""
        self._show_progress(fraction)
        if text:
            self._set_status(f"<i>computing ... {html.escape(text)}</i>")

    def _set_status(self, value: str) -> None:
        if self.status.value != value:
            self.status.value = value

    def _show_progress(self, fraction: float | None) -> None:
        if fraction is None:
            self.progress_bar.layout.visibility = "hidden"
            return
        self.progress_bar.value = max(0.0, min(1.0, float(fraction)))
        self.progress_bar.layout.visibility = "visible"

    def _run_pending(self) -> None:
        self._scheduled = False
        if self._running:
            return
        self._running = True
        try:
            while True:
                generation = self.generation
                values = self.values()
                estimate = self.estimate_s()
                if estimate > self.confirm_above_s and generation != self._confirmed_generation:
                    self._ask_to_run(estimate, values)
                    return
                start = time.perf_counter()
                try:
                    fig, note = self._draw()
                    outcome = None
                except Exception as err:  # noqa: BLE001 -- a view shows its errors instead of hiding them in a log
                    outcome = f"{type(err).__name__}: {err}"
                if generation != self.generation:  # a newer request came in: drop this one
                    self.dropped += 1
                    continue
                self.seconds = time.perf_counter() - start
                if outcome is not None:
                    self._show_error(outcome, values)
                else:
                    self._show_figure(fig, note, values)
                return
        finally:
            self._running = False

    def _ask_to_run(self, estimate: float, values: dict[str, str]) -> None:
        self.error = None
        self._show_progress(None)
        self._set_status(f"<span style='color:#b60'>this setting takes about {estimate:.0f} s "
                         f"on a CPU: press <b>run</b> to compute it (or pick a smaller "
                         f"setting)</span>")
        self.run_button.description = f"run (~{estimate:.0f} s)"
        self.run_button.layout.display = ""
        self.out.outputs = (_text_output(f"not computed yet (about {estimate:.0f} s): "
                                         f"{self.caption(values)[len('shown: '):]}"),)
        self.shown = None

    def _show_error(self, message: str, values: dict[str, str]) -> None:
        self.error = message
        self._show_progress(None)
        self._set_status(f"<span style='color:#b00'>{html.escape(message)}</span>")
        self.out.outputs = (_text_output(f"{message}\n(for {self.caption(values)[7:]})",
                                         "stderr"),)
        self.shown = None

    def _show_figure(self, fig, note: str, values: dict[str, str]) -> None:
        self.error = None
        image = figure_output(fig)
        self.out.outputs = (image, _text_output(self.caption(values)))
        self._show_progress(None)
        self._set_status(f"<span style='color:#b00'>{html.escape(note)}</span>" if note else "")
        self.figure, self.shown = fig, values
        self.redraws += 1

    def _repr_mimebundle_(self, **kwargs):
        """The widget, plus the current figure as a PNG for viewers without widgets (a code
        host showing the committed notebook, nbconvert)."""
        bundle = super()._repr_mimebundle_(**kwargs)
        outputs = [o for o in self.out.outputs if o.get("output_type") == "display_data"]
        if outputs and isinstance(bundle, dict):
            bundle = dict(bundle)
            bundle["image/png"] = outputs[0]["data"]["image/png"]
        return bundle


# --------------------------------------------------------------------------------------------
# A figure of a function of the controls (notebook 01's decay/boost explorer, the smoke test)
# --------------------------------------------------------------------------------------------
class FunctionView(FigureView):
    """``draw(**values)`` -> Figure, redrawn for the values of ``controls`` (keyword -> widget;
    each widget's ``description`` names it in the caption)."""

    def __init__(self, draw: Callable, controls: Mapping[str, widgets.Widget], **options):
        if not controls:
            raise ValueError("FunctionView: give at least one control")
        self._function = draw
        self._keywords = dict(controls)
        super().__init__([widgets.HBox(list(self._keywords.values()))],
                         {c.description or k: c for k, c in self._keywords.items()}, **options)
        self.redraw()

    def _draw(self):
        return self._function(**{k: c.value for k, c in self._keywords.items()}), ""


def function_view(draw: Callable, **controls) -> FunctionView:
    """A :class:`FunctionView` of ``draw`` (keyword arguments: the controls by keyword)."""
    return FunctionView(draw, controls)


# --------------------------------------------------------------------------------------------
# ERF explorer
# --------------------------------------------------------------------------------------------
class ERFExplorer(FigureView):
    """The effective receptive field of one block kind, depth, input size and set of weights.

    Controls: ``depth`` (IntSlider: blocks in the random stack, or g_a stages 1..4 for the
    g_a weights), ``kind`` (block), ``size`` (input side), ``weights``
    (:data:`lalic_core.explore.WEIGHTS`), ``scale`` (heat-map colours, "log" or "linear").
    Measurements are cached by ``lab`` (:class:`lalic_core.explore.ERFLab`); ``view`` is the
    last one shown. Settings estimated above ``confirm_above_s`` wait for the run button.
    """

    def __init__(self, kind: str = "birwkv", depth: int = 1, size: int = 64,
                 weights: str = "random blocks", scale: str = "log", *, max_depth: int = 4,
                 sizes: Sequence[int] = (32, 48, 64, 96, 128),
                 lab=None, schedule="auto", confirm_above_s: float = CONFIRM_ABOVE_S,
                 **lab_options):
        from lalic_core import explore
        from lalic_core.baseline_layers import BLOCK_KINDS

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
        self._explore = explore
        self.lab = lab if lab is not None else explore.ERFLab(**lab_options)
        self.view = None
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
                          widgets.HBox([self.weights, self.scale])],
                         {"depth": self.depth, "block": self.kind, "input": self.size,
                          "weights": self.weights, "colours": self.scale},
                         schedule=schedule, confirm_above_s=confirm_above_s)
        self.redraw()

    def estimate_s(self) -> float:
        return self.lab.estimate_s(self.kind.value, self.depth.value, self.size.value,
                                   self.weights.value)

    def forget(self) -> None:
        self.lab.forget(self.kind.value, self.depth.value, self.size.value, self.weights.value)

    def _draw(self):
        view = self.lab.erf(self.kind.value, self.depth.value, self.size.value,
                            self.weights.value, progress=self.progress)
        self.view = view
        self.progress(0.9, "drawing")
        return self._explore.plot_erf_view(view, scale=self.scale.value), view.note


def erf_explorer(**options) -> ERFExplorer:
    """An :class:`ERFExplorer` (keyword arguments: its constructor's)."""
    return ERFExplorer(**options)


# --------------------------------------------------------------------------------------------
# Latent correlation
# --------------------------------------------------------------------------------------------
class CorrelationView(FigureView):
    """Correlation maps of the normalised latent residual of several models, side by side.

    ``results``: name -> :class:`~lalic_core.analysis.correlation.LatentCorrelation`.
    Controls: ``group`` (Dropdown: -1 = all channels, else a channel group shared by all
    models), ``vmax`` (FloatSlider: the colour range), ``annotate`` (Checkbox: numbers).
    """

    def __init__(self, results: Mapping, group: int = -1, vmax: float = 0.3,
                 annotate: bool = True, *, schedule="auto"):
        from lalic_core import explore

        if not results:
            raise ValueError("CorrelationView: no results")
        self._explore = explore
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
        super().__init__([widgets.HBox([self.group, self.vmax, self.annotate])],
                         {"channels": self.group, "colour max": self.vmax,
                          "numbers": self.annotate}, schedule=schedule)
        self.redraw()

    def _draw(self):
        group = None if self.group.value < 0 else self.group.value
        fig = self._explore.plot_correlation_models(self.results, group, vmax=self.vmax.value,
                                                    annotate=self.annotate.value)
        return fig, ""


def correlation_view(models_or_results: Mapping, images=None, k: int = 2,
                     **options) -> CorrelationView:
    """A :class:`CorrelationView` of models (name -> model: measured on ``images``, default
    the packaged photographs, with offsets up to ``k``) or of ready results."""
    from torch import nn

    from lalic_core import explore

    if models_or_results and all(isinstance(v, nn.Module) for v in models_or_results.values()):
        results = explore.compare_correlations(models_or_results, images, k=k)
    else:
        results = models_or_results
    return CorrelationView(results, **options)


# --------------------------------------------------------------------------------------------
# SCCTX decoding steps
# --------------------------------------------------------------------------------------------
class SCCTXStepper(FigureView):
    """The decoder's state after each SCCTX pass (2 per channel group).

    ``steps``: :func:`lalic_core.analysis.scctx.decode_steps` output (list). Control: ``step``
    (IntSlider, 0 = the first group's anchors). The figure is
    :func:`lalic_core.analysis.scctx.plot_decode_step`: progress, decoded positions, scales
    used, bits per step (cumulative bar) and the progressive reconstruction.
    """

    def __init__(self, steps: Sequence, step: int = 0, image: int = 0, *, schedule="auto"):
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
        super().__init__([self.step], {"step": self.step}, schedule=schedule)
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
    from lalic_core import explore

    steps, _ = explore.scctx_decode(model, image)
    return SCCTXStepper(steps, step=step)


# --------------------------------------------------------------------------------------------
# Latency of every control (benchmarks/notebooks.py)
# --------------------------------------------------------------------------------------------
def live_views() -> list[FigureView]:
    """The views built in this process that are still alive, oldest first."""
    return sorted(_VIEWS, key=lambda v: v.model_id)


def _next_value(control: widgets.Widget):
    """The value one user step away: the next slider step (back one at the maximum), the next
    option, the other checkbox state."""
    if isinstance(control, (widgets.IntSlider, widgets.FloatSlider)):
        up = control.value + control.step
        return up if up <= control.max else control.value - control.step
    if isinstance(control, (widgets.Dropdown, widgets.ToggleButtons, widgets.RadioButtons)):
        values = [value for _, value in control._options_full]
        return values[(values.index(control.value) + 1) % len(values)]
    if isinstance(control, widgets.Checkbox):
        return not control.value
    raise TypeError(f"no next value for a {type(control).__name__}")


def measure_controls(views: Sequence[FigureView] | None = None, repeats: int = 3
                     ) -> list[dict]:
    """For every control of every view (default: :func:`live_views`): the seconds from a
    change one step away from its current (default) setting until the new figure is shown,
    measured ``repeats`` times as a first visit (the view's cache for that setting dropped
    each time); the draw runs at once (no coalescing pause). Controls are left as found.

    Returns one dict per control: view, control, change ("a -> b"), seconds (list), median.
    """
    rows = []
    for view in (live_views() if views is None else views):
        saved = view._schedule
        view._schedule = "now"
        try:
            for name, control in view.controls.items():
                default = control.value
                target = _next_value(control)
                before = control_label(control)
                control.value = target
                after = control_label(control)
                times = []
                for _ in range(repeats):
                    view.forget()
                    control.value = default
                    start = time.perf_counter()
                    control.value = target
                    times.append(time.perf_counter() - start)
                    if view.error is not None or view.shown != view.values():
                        raise RuntimeError(f"{type(view).__name__} {name} = {after}: not drawn "
                                           f"({view.error or view.status.value})")
                control.value = default
                rows.append({"view": type(view).__name__, "control": name,
                             "change": f"{before} -> {after}", "seconds": times,
                             "median": statistics.median(times)})
        finally:
            view._schedule = saved
    return rows


def weights_explorer(H: int = 16, W: int = 16, w: float = 0.05, u: float = 1.0, **options):
    """Sliders for the decay ``w`` and the boost ``u`` redrawing BiWKV's weight profile (a
    :class:`FunctionView`); ``options``: :class:`FigureView` options (``schedule``, ``connect``)."""
    from lalic_core.analysis.biwkv_explain import plot_weight_profile

    def draw(w: float, u: float):
        from matplotlib.figure import Figure

        return plot_weight_profile(w, u, H, W, fig=Figure(figsize=(9.5, 3.4)))

    controls = {
        "w": widgets.FloatSlider(value=w, min=-0.05, max=0.5, step=0.005, readout_format=".3f",
                                 description="decay w", continuous_update=False),
        "u": widgets.FloatSlider(value=u, min=-4.0, max=6.0, step=0.25, readout_format=".2f",
                                 description="boost u", continuous_update=False),
    }
    return FunctionView(draw, controls, **options)
