"""The notebooks as users meet them: JupyterLab in headless Chromium, driven by Playwright.

For each target notebook the test starts from a fresh JupyterLab workspace and does what a user
does: open the notebook, Run > Run All Cells, wait for the slider and its figure, press
ArrowRight on the slider handle, and check that the figure was redrawn (the ``src`` of its
``<img>`` changed). Screenshots of the widget's output area before and after the move are saved
as ``figures/browser/<name>_before.png`` and ``<name>_after.png`` (``$LALIC_BROWSER_ARTIFACTS``
overrides the folder). Two negative controls check that the harness fails on real breakage
(a slider whose callback is not connected; the ipywidgets front-end missing).

Needs Debian's Chromium (``/usr/bin/chromium`` or ``$LALIC_CHROMIUM``; launched by path, never
``playwright install``) and the ``playwright`` package; skips with the reason otherwise.
``bash scripts/ci_browser_setup.sh`` installs both. Run only these tests: ``make test-browser``.

Contract for a notebook listed in ``TARGETS`` (notebooks/04_erf_explorer.ipynb,
notebooks/06_scctx_stepper.ipynb):

1. Notebook metadata has ``"kernelspec": {"name": "python3", ...}`` (no "Select Kernel" dialog).
2. Run All Cells finishes without an error output within the target's ``run_timeout`` on 2 CPU
   cores (small models, packaged demo images, zoo weights).
3. The primary control is the *first* slider of the notebook (``widgets.IntSlider``; ArrowRight
   adds one ``step``, so its initial value must be below ``max``).
4. Changing it redraws a matplotlib figure with the inline backend (``display(fig)`` or
   ``plt.show()``) inside an ``ipywidgets.Output``, e.g. ``widgets.VBox([slider, out])`` or
   ``widgets.interactive(f, k=slider)``. The figure is the first ``<img>`` inside an Output that
   follows the slider in the page; the slider and that Output are shown in one cell output
   (the screenshot is of that output area). Not ``%matplotlib widget`` (ipympl draws a canvas).
5. The redraw finishes within ``redraw_timeout``; the new figure differs from the old one.
6. The notebook runs from a copy in a temporary folder: no paths relative to notebooks/ (reach
   repository files through ``lalic_core``).
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from browser_harness import (
    CHROMIUM_ARGS,
    BrowserCheckError,
    JupyterLabServer,
    SliderRound,
    chromium_path,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOKE_NOTEBOOK = REPO_ROOT / "tests" / "data" / "browser_smoke.ipynb"
WIDGETS_FRONTEND = "@jupyter-widgets/jupyterlab-manager"


@dataclass(frozen=True)
class Target:
    """A notebook checked in the browser, and how long it may take on 2 CPU cores."""

    name: str  # screenshot stem under figures/browser/
    notebook: Path
    run_timeout: float = 60.0  # Run All Cells, seconds
    redraw_timeout: float = 30.0  # one slider step until the new figure shows, seconds


TARGETS = [
    Target("smoke", SMOKE_NOTEBOOK, run_timeout=30.0, redraw_timeout=15.0),
    Target("erf_explorer", REPO_ROOT / "notebooks" / "04_erf_explorer.ipynb"),
    Target("scctx_stepper", REPO_ROOT / "notebooks" / "06_scctx_stepper.ipynb"),
]


def _target_param(target: Target):
    missing = not target.notebook.exists()
    reason = f"notebook not written yet: {target.notebook.relative_to(REPO_ROOT)}"
    return pytest.param(target, id=target.name,
                        marks=pytest.mark.skipif(missing, reason=reason))


def _write_without_outputs(notebook: dict, path: Path) -> None:
    """Save ``notebook`` with outputs and execution counts cleared, so that a cell counts as run
    in the browser only once this session has run it."""
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    path.write_text(json.dumps(notebook))


def _artifacts_dir() -> Path:
    path = Path(os.environ.get("LALIC_BROWSER_ARTIFACTS", REPO_ROOT / "figures" / "browser"))
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- checks that need no browser ---------------------------------------------------------------

@pytest.mark.parametrize("target", [_target_param(t) for t in TARGETS])
def test_target_notebook_declares_python3_kernelspec(target):
    metadata = json.loads(target.notebook.read_text())["metadata"]
    assert metadata.get("kernelspec", {}).get("name") == "python3", (
        f"{target.notebook.name}: metadata.kernelspec.name must be 'python3' (else JupyterLab "
        f"asks the user to select a kernel); found {metadata.get('kernelspec')!r}"
    )


def test_lab_environment_has_widgets_frontend():
    """`make lab` runs this environment's JupyterLab: its ipywidgets front-end must be there."""
    from jupyter_core.paths import jupyter_path

    searched = jupyter_path("labextensions")
    found = [d for d in searched if (Path(d) / WIDGETS_FRONTEND / "package.json").is_file()]
    assert found, (
        f"{WIDGETS_FRONTEND} not found in the JupyterLab extension folders {searched}: install "
        f"jupyterlab_widgets (it comes with ipywidgets>=8) into this environment"
    )


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    if executable is None:
        where = os.environ.get("LALIC_CHROMIUM") or "/usr/bin/chromium"
        pytest.skip(f"Chromium not found at {where}; run `bash scripts/ci_browser_setup.sh` "
                    f"(Debian's chromium package) or set LALIC_CHROMIUM")
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="playwright is not installed; run `bash scripts/ci_browser_setup.sh`",
    )
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True,
                                              args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def lab(browser, tmp_path_factory):
    """One JupyterLab server for the module, serving copies of the target notebooks."""
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed")
    base = tmp_path_factory.mktemp("browser")
    root = base / "root"
    root.mkdir()
    for target in TARGETS:
        if target.notebook.exists():
            _write_without_outputs(json.loads(target.notebook.read_text()),
                                   root / target.notebook.name)
    server = JupyterLabServer(root, base / "state")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def page(browser, lab):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        context.close()
        lab.shutdown_kernels()


def _smoke_variant(lab: JupyterLabServer, name: str, replace: str, by: str) -> str:
    """Write a copy of the smoke notebook with one source fragment replaced; return its name."""
    notebook = json.loads(SMOKE_NOTEBOOK.read_text())
    sources = ["".join(cell["source"]) for cell in notebook["cells"]]
    assert sum(replace in src for src in sources) == 1, f"{replace!r} not found once in smoke"
    for cell, src in zip(notebook["cells"], sources):
        cell["source"] = src.replace(replace, by)
    _write_without_outputs(notebook, lab.root_dir / name)
    return name


# -- browser tests -------------------------------------------------------------------------------

@pytest.mark.browser
@pytest.mark.parametrize("target", [_target_param(t) for t in TARGETS])
def test_slider_redraws_figure_in_browser(target, lab, page, tmp_path):
    artifacts = _artifacts_dir()
    start = time.monotonic()
    result = SliderRound(page, lab, target.notebook.name, run_timeout=target.run_timeout,
                         redraw_timeout=target.redraw_timeout,
                         failure_png=tmp_path / "page_at_failure.png").run(
        before_png=artifacts / f"{target.name}_before.png",
        after_png=artifacts / f"{target.name}_after.png",
    )
    print(f"{target.name}: run all {result.seconds_run_all:.1f} s, redraw "
          f"{result.seconds_redraw:.1f} s, slider {result.readout_before} -> "
          f"{result.readout_after}, round {time.monotonic() - start:.1f} s")
    assert Path(result.kernel_prefix) == Path(sys.prefix), "the kernel runs another Python"
    assert result.figure_before.startswith("data:image/")
    assert result.figure_after.startswith("data:image/")
    assert result.figure_after != result.figure_before
    for stage in ("before", "after"):
        png = artifacts / f"{target.name}_{stage}.png"
        assert png.stat().st_size > 1000, f"{png} looks empty"


@pytest.mark.browser
def test_harness_fails_when_slider_callback_is_not_connected(lab, page):
    name = _smoke_variant(lab, "smoke_unconnected.ipynb",
                          'frequency.observe(redraw, names="value")', "pass")
    with pytest.raises(BrowserCheckError, match="the figure was not redrawn"):
        SliderRound(page, lab, name, run_timeout=30.0, redraw_timeout=4.0).run()


@pytest.mark.browser
def test_harness_fails_when_widgets_frontend_is_missing(lab, page):
    with (lab.disabled_lab_extensions(WIDGETS_FRONTEND),
          pytest.raises(BrowserCheckError, match="no ipywidgets slider is rendered")):
        SliderRound(page, lab, SMOKE_NOTEBOOK.name, run_timeout=30.0, figure_timeout=5.0).run()
