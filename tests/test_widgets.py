"""The interactive views of :mod:`lalic_core.widgets`, driven as a notebook drives them.

Every control of every view is set programmatically; each change must redraw (``redraws`` goes
up by one) and show a different figure (``figure_png`` differs), and the measurement behind it
must follow the control. Bad constructor arguments raise ValueErrors that say what is wrong, and
a draw that fails shows its error (``view.error``, the status line) instead of raising.

Small settings throughout (8-channel block stacks on 16-24 pixel inputs, random tiny models on
64-128 pixel crops, one torch thread), so the module runs in well under a minute on 2 CPU
cores.
"""
from __future__ import annotations

import weakref

import ipywidgets
import pytest
import torch

from lalic_core import explore, widgets
from lalic_core.analysis.correlation import latent_correlation
from lalic_core.models.lalic import LALIC

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread is as fast, and does not stall on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: Each figure's PNG, rendered once: with constrained layout a second render of the same figure
#: can differ by a few pixels, so only first renders are compared (as the notebook shows them).
_PNGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _png(view) -> bytes:
    assert view.figure is not None, f"no figure drawn (error: {view.error})"
    if view.figure not in _PNGS:
        _PNGS[view.figure] = widgets.figure_png(view.figure)
    return _PNGS[view.figure]


def _set(view, control, value) -> None:
    """Set ``control`` to ``value``; the view must redraw once, without error, and differently."""
    assert control.value != value, "test bug: the control already has this value"
    before, count = _png(view), view.redraws
    control.value = value
    assert view.error is None, f"{control.description} = {value!r}: {view.error}"
    assert view.redraws == count + 1, f"{control.description} = {value!r} did not redraw once"
    assert _png(view) != before, f"{control.description} = {value!r} drew the same figure"


def _first_int_slider(widget):
    """The first IntSlider in the widget tree, depth first (what the browser test finds)."""
    if isinstance(widget, ipywidgets.IntSlider):
        return widget
    for child in getattr(widget, "children", ()):
        found = _first_int_slider(child)
        if found is not None:
            return found
    return None


def _boom(*_args, **_kwargs):
    raise RuntimeError("boom: the computation failed")


def test_figure_png_is_png():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    fig.subplots().plot([0, 1], [1, 0])
    data = widgets.figure_png(fig)
    assert data.startswith(PNG_SIGNATURE) and len(data) > 200


# --------------------------------------------------------------------------------------------
# The one way to draw: coalescing, stale results, captions, asking before long settings
# --------------------------------------------------------------------------------------------
class _ManualLoop:
    """A scheduler for views that runs the scheduled callbacks only when told (as a kernel's
    event loop would, once the current message is handled)."""

    def __init__(self):
        self.pending = []

    def __call__(self, delay, callback):
        assert delay >= 0
        self.pending.append(callback)

    def run(self):
        while self.pending:
            self.pending.pop(0)()


def _line(value: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1.5))
    fig.subplots().plot([0, 1], [0, value])
    return fig


def _slider_view(**options):
    slider = ipywidgets.IntSlider(value=1, min=0, max=9, description="n")
    drawn = []

    def draw(n):
        drawn.append(n)
        return _line(n)

    view = widgets.FunctionView(draw, {"n": slider}, **options)
    return view, slider, drawn


def test_view_coalesces_a_burst_of_changes_into_one_draw():
    loop = _ManualLoop()
    view, slider, drawn = _slider_view(schedule=loop)
    assert drawn == [1] and view.redraws == 1  # the first figure is drawn at once
    for n in (2, 3, 4, 5):
        slider.value = n
    assert len(loop.pending) == 1  # one draw scheduled for the whole burst
    assert "computing ..." in view.status.value  # said before any work
    assert view.progress_bar.layout.visibility == "visible"
    loop.run()
    assert drawn == [1, 5] and view.redraws == 2
    assert view.shown == {"n": "5"} and view.status.value == ""
    assert view.out.outputs[1]["text"] == "shown: n = 5\n"
    assert view.progress_bar.layout.visibility == "hidden"


def test_view_drops_a_result_made_stale_during_its_draw():
    """A change that arrives while a draw runs: that draw's figure is dropped, the newest
    values are drawn, and nothing is shown out of order."""
    loop = _ManualLoop()
    slider = ipywidgets.IntSlider(value=1, min=0, max=9, description="n")
    shown_in_order, drawn = [], []

    def draw(n):
        drawn.append(n)
        if n == 2:
            slider.value = 7  # e.g. a message handled while the kernel computed
        return _line(n)

    view = widgets.FunctionView(draw, {"n": slider}, schedule=loop)
    view.out.observe(lambda change: shown_in_order.append(change["new"][1]["text"]),
                     names="outputs")
    slider.value = 2
    loop.run()
    assert drawn == [1, 2, 7] and view.dropped == 1 and view.redraws == 2
    assert view.shown == {"n": "7"} and shown_in_order == ["shown: n = 7\n"]
    assert not loop.pending


def test_view_figure_always_matches_the_controls_after_random_changes():
    import random

    loop = _ManualLoop()
    view, slider, _ = _slider_view(schedule=loop)
    rng = random.Random(0)
    for _ in range(30):
        for _ in range(rng.randint(1, 4)):
            slider.value = rng.randint(0, 9)
        if rng.random() < 0.6:
            loop.run()
            assert view.shown == view.values()
    loop.run()
    assert view.shown == view.values() == {"n": str(slider.value)}


def test_disconnected_view_does_not_follow_its_controls():
    """The negative control of the browser test: a view whose controls are not connected."""
    view, slider, drawn = _slider_view(connect=False)
    slider.value = 4
    assert drawn == [1] and view.shown == {"n": "1"} != view.values()


def test_view_shows_png_and_caption_and_offers_png_to_static_viewers():
    view, _, _ = _slider_view()
    image, caption = view.out.outputs
    assert image["output_type"] == "display_data"
    assert base64_png(image["data"]["image/png"]).startswith(PNG_SIGNATURE)
    assert caption == {"output_type": "stream", "name": "stdout", "text": "shown: n = 1\n"}
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["image/png"] == image["data"]["image/png"]
    assert {"lalic-view"} <= set(view._dom_classes)


def base64_png(data: str) -> bytes:
    import base64

    return base64.b64decode(data)


def test_control_labels_are_what_the_front_end_shows():
    assert widgets.control_label(ipywidgets.FloatSlider(value=0.3, readout_format=".2f")) == "0.30"
    assert widgets.control_label(ipywidgets.IntSlider(value=3)) == "3"
    assert widgets.control_label(ipywidgets.Dropdown(options=[("a b", 1), ("c", 2)],
                                                     value=2)) == "c"
    assert widgets.control_label(ipywidgets.ToggleButtons(options=["x", "y"])) == "x"
    assert widgets.control_label(ipywidgets.Checkbox(value=False)) == "false"


def test_function_view_needs_controls():
    with pytest.raises(ValueError, match="at least one control"):
        widgets.FunctionView(_line, {})


def test_long_setting_waits_for_the_run_button():
    view = _erf_view(confirm_above_s=0.0)  # every uncached setting counts as long
    assert view.redraws == 0 and view.figure is None
    assert "press <b>run</b>" in view.status.value
    assert view.run_button.layout.display == ""
    assert view.out.outputs[0]["text"].startswith("not computed yet")
    view.run_button.click()
    assert view.redraws == 1 and view.error is None and view.shown == view.values()
    assert view.run_button.layout.display == "none"
    view.scale.value = "linear"  # cached measurement: no question asked
    assert view.redraws == 2
    view.depth.value = 2  # a new measurement: asks again
    assert view.redraws == 2 and view.shown is None


def test_erf_estimates_grow_with_the_work_and_vanish_when_cached():
    lab = explore.ERFLab(dim=32, n_images=4)
    small = lab.estimate_s("birwkv", 1, 64)
    assert 0 < small < lab.estimate_s("birwkv", 2, 64) < lab.estimate_s("birwkv", 2, 128)
    assert lab.estimate_s("global", 3, 128) > widgets.CONFIRM_ABOVE_S  # asks before running
    assert lab.estimate_s("global", 1, 64) < widgets.CONFIRM_ABOVE_S  # the defaults. neighbours do not
    small_lab = explore.ERFLab(dim=8, n_images=1)
    small_lab.erf("cnn", 1, 16)
    assert small_lab.estimate_s("cnn", 1, 16) == 0.0


def test_measure_controls_times_a_first_visit_of_every_control():
    view = _erf_view()
    rows = widgets.measure_controls([view], repeats=2)
    assert [r["control"] for r in rows] == ["depth", "block", "input", "weights", "colours"]
    assert rows[0]["change"] == "1 -> 2" and rows[2]["change"] == "16 x 16 -> 24 x 24"
    assert all(len(r["seconds"]) == 2 and r["median"] > 0 for r in rows)
    assert view.values() == view.shown == {"depth": "1", "block": "CNN", "input": "16 x 16",
                                           "weights": "random blocks", "colours": "log"}
    assert view._schedule == "auto" and view in widgets.live_views()


# --------------------------------------------------------------------------------------------
# ERF explorer
# --------------------------------------------------------------------------------------------
def _erf_view(**kwargs):
    options = {"kind": "cnn", "depth": 1, "size": 16, "sizes": (16, 24), "max_depth": 3, "dim": 8,
               "n_images": 1}
    options.update(kwargs)
    return widgets.erf_explorer(**options)


def test_erf_explorer_every_control_redraws():
    view = _erf_view()
    assert view.error is None and view.redraws == 1
    assert _first_int_slider(view) is view.depth
    assert view.depth.value < view.depth.max
    assert (view.view.kind, view.view.depth, view.view.size) == ("cnn", 1, 16)

    _set(view, view.depth, 2)
    assert view.view.depth == 2 and view.view.source.startswith("2 random CNN blocks")
    _set(view, view.kind, "birwkv")
    assert view.view.kind == "birwkv" and "Bi-RWKV" in view.view.source
    _set(view, view.size, 24)
    assert tuple(view.view.result.contributions.shape) == (24, 24)
    _set(view, view.weights, "random g_a")
    assert view.view.source == "random g_a of 'tiny', stages 1-2"
    _set(view, view.scale, "linear")
    assert view.view.weights == "random g_a"  # same measurement, other colours
    _set(view, view.weights, "trained g_a")
    trained = f"trained g_a of {explore.KIND_ZOO['birwkv']}:3"
    assert view.view.source.startswith((trained, "random g_a of 'tiny'")), view.view.source
    # No FAT-style transform exists: random blocks stand in, and the view says so.
    _set(view, view.kind, "fat")
    assert view.view.note and "no FAT-style analysis transform" in view.status.value
    assert view.view.source.startswith("2 random FAT-style blocks")
    # Back to a measured setting: cached, still a redraw.
    count = view.redraws
    view.kind.value, view.weights.value = "birwkv", "random blocks"
    assert view.redraws == count + 2 and view.error is None and view.status.value == ""


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "swin"}, "`kind` must be one of"),
    ({"weights": "pretrained"}, "`weights` must be one of"),
    ({"scale": "sqrt"}, "`scale` must be one of"),
    ({"size": 40}, r"`size` must be one of `sizes` \[16, 24\]"),
    ({"sizes": (4, 16)}, r"each in 8\.\.256"),
    ({"max_depth": 1}, "`max_depth` must be an int >= 2, got 1"),
    ({"depth": 0}, r"`depth` must be an int in 1\.\.3, got 0"),
    ({"depth": 4}, r"`depth` must be an int in 1\.\.3, got 4"),
    ({"depth": True}, r"`depth` must be an int in 1\.\.3, got True"),
    ({"dim": 0}, "`dim` must be an int >= 1, got 0"),
])
def test_erf_explorer_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _erf_view(**kwargs)


def test_erf_explorer_shows_errors_instead_of_raising(monkeypatch):
    view = _erf_view()
    shown, count = view.figure, view.redraws
    monkeypatch.setattr(view.lab, "erf", _boom)
    view.depth.value = 2  # must not raise
    assert view.error == "RuntimeError: boom: the computation failed"
    assert "boom: the computation failed" in view.status.value
    assert view.redraws == count and view.figure is shown
    assert view.redraw() is None
    monkeypatch.undo()
    view.depth.value = 3
    assert view.error is None and view.redraws == count + 1 and view.view.depth == 3


def test_erf_explorer_whose_first_draw_fails_still_builds():
    class FailingLab(explore.ERFLab):
        erf = staticmethod(_boom)

    view = _erf_view(lab=FailingLab(dim=8, n_images=1))
    assert view.error.startswith("RuntimeError") and view.figure is None and view.redraws == 0


# --------------------------------------------------------------------------------------------
# Latent correlation
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def correlation_models():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return {"tiny": LALIC.from_preset("tiny").eval(),
                "tiny-cnn": LALIC.from_preset("tiny-cnn").eval()}


@pytest.fixture(scope="module")
def correlation_results(correlation_models):
    return explore.compare_correlations(correlation_models, explore.image_crops(2, 128), k=2)


def test_correlation_view_measures_models(correlation_models):
    images = explore.image_crops(2, 128)
    view = widgets.correlation_view(correlation_models, images, k=1)
    assert view.error is None and view.redraws == 1
    assert list(view.results) == ["tiny", "tiny-cnn"]
    assert all(tuple(r.overall.shape) == (3, 3) for r in view.results.values())
    assert [v for _, v in view.group.options] == [-1, 0, 1, 2, 3]  # tiny: groups 8, 8, 16, 64


def test_correlation_view_every_control_redraws(correlation_results):
    view = widgets.correlation_view(correlation_results)
    assert view.results == correlation_results  # ready results pass through
    _set(view, view.group, 0)
    _set(view, view.group, 3)
    _set(view, view.vmax, 0.5)
    _set(view, view.annotate, False)
    _set(view, view.group, -1)


def test_correlation_view_rejects_bad_arguments(correlation_results):
    with pytest.raises(ValueError, match="no results"):
        widgets.CorrelationView({})
    with pytest.raises(ValueError, match=r"`group` must be -1 .* 0\.\.3, got 4"):
        widgets.CorrelationView(correlation_results, group=4)
    for vmax in (0.01, 1.5):
        with pytest.raises(ValueError, match=r"`vmax` must lie in \[0\.05, 1\]"):
            widgets.CorrelationView(correlation_results, vmax=vmax)
    # Models with different channel groups share only "all channels".
    other = latent_correlation(torch.randn(1, 96, 8, 8), k=2, groups=[48, 48])
    mixed = {"tiny": correlation_results["tiny"], "other": other}
    assert [v for _, v in widgets.CorrelationView(mixed).group.options] == [-1]
    with pytest.raises(ValueError, match=r"shared channel group 0\.\.-1, got 0"):
        widgets.CorrelationView(mixed, group=0)


def test_correlation_view_shows_errors_instead_of_raising(correlation_results, monkeypatch):
    view = widgets.correlation_view(correlation_results)
    count = view.redraws
    monkeypatch.setattr(explore, "plot_correlation_models", _boom)
    view.vmax.value = 0.6
    assert view.error == "RuntimeError: boom: the computation failed"
    assert "boom" in view.status.value and view.redraws == count
    monkeypatch.undo()
    view.vmax.value = 0.7
    assert view.error is None and view.redraws == count + 1


# --------------------------------------------------------------------------------------------
# SCCTX stepper
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scctx_model():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LALIC.from_preset("tiny").eval()
    model.update(force=True)
    return model


@pytest.fixture(scope="module")
def stepper(scctx_model):
    return widgets.scctx_stepper(scctx_model, explore.image_crops(1, 64), step=0)


def test_scctx_stepper_every_step_redraws(stepper, scctx_model):
    view = stepper
    n = 2 * len(scctx_model.groups)
    assert len(view.steps) == n and view.step.max == n - 1
    assert _first_int_slider(view) is view.step and view.step.value == 0
    assert view.error is None
    for step in range(1, n):
        _set(view, view.step, step)
    _set(view, view.step, 0)


def test_scctx_stepper_rejects_bad_arguments(stepper, scctx_model):
    steps = stepper.steps
    n = len(steps)
    with pytest.raises(ValueError, match=r"at least 2\), got 0"):
        widgets.SCCTXStepper([])
    with pytest.raises(ValueError, match=r"at least 2\), got 1"):
        widgets.SCCTXStepper(steps[:1])
    for step in (-1, n, True, 1.0):
        with pytest.raises(ValueError, match=rf"`step` must be an int in 0\.\.{n - 1}"):
            widgets.SCCTXStepper(steps, step=step)
    with pytest.raises(ValueError, match=r"`image` must be an int in 0\.\.0, got 1"):
        widgets.SCCTXStepper(steps, image=1)
    with pytest.raises(ValueError, match=r"`image` must be \(1, 3, H, W\) or \(3, H, W\)"):
        widgets.scctx_stepper(scctx_model, torch.rand(2, 3, 64, 64))


def test_scctx_stepper_shows_errors_instead_of_raising(stepper, monkeypatch):
    from lalic_core.analysis import scctx

    view = widgets.SCCTXStepper(stepper.steps, step=2)
    shown, count = view.figure, view.redraws
    monkeypatch.setattr(scctx, "plot_decode_step", _boom)
    view.step.value = 3
    assert view.error == "RuntimeError: boom: the computation failed"
    assert "boom" in view.status.value and view.figure is shown and view.redraws == count
    monkeypatch.undo()
    view.step.value = 4
    assert view.error is None and view.redraws == count + 1
