"""The notebooks as users meet them: JupyterLab in headless Chromium, driven by Playwright.

For each of the seven notebooks the test starts from a fresh JupyterLab workspace and does what
a user does: open the notebook, Run > Run All Cells (no cell may end in an error output), then,
in every interactive view of :mod:`lalic_core.widgets` on the page, change every control once
(ArrowRight on a slider handle, the next option of a dropdown, another toggle button, a click
on a checkbox) and wait until the view shows a *new* figure whose caption ("shown: control =
value | ...") names exactly the values the controls show. The time of each change until its
figure is printed. Screenshots of the first view before and after the changes are saved as
``figures/browser/<name>_before.png`` and ``<name>_after.png`` (``$LALIC_BROWSER_ARTIFACTS``
overrides the folder). Negative controls check that the harness fails on real breakage: a
view whose controls are not connected, a slider whose callback is not connected (the smoke
notebook), the ipywidgets front-end missing.

Needs Debian's Chromium (``/usr/bin/chromium`` or ``$LALIC_CHROMIUM``; launched by path, never
``playwright install``) and the ``playwright`` package; skips with the reason otherwise.
``bash scripts/ci_browser_setup.sh`` installs both. Run only these tests: ``make test-browser``.

Contract for a notebook in ``TARGETS``:

1. Notebook metadata has ``"kernelspec": {"name": "python3", ...}`` (no "Select Kernel" dialog).
2. Run All Cells finishes without an error output within the target's ``run_timeout`` on 2 CPU
   cores (small models, packaged demo images, zoo weights).
3. Its interactive views are :class:`lalic_core.widgets.FigureView` objects (they carry the
   classes and the caption the test reads); ``views`` says how many the page shows.
4. Each control change shows its new, matching figure within ``change_timeout``.
5. The notebook runs from a copy in a temporary folder: no paths relative to notebooks/ (reach
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
    _KERNEL_PREFIX_JS,
    CHROMIUM_ARGS,
    BrowserCheckError,
    JupyterLabServer,
    NotebookRound,
    SliderRound,
    chromium_path,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOKE_NOTEBOOK = REPO_ROOT / "tests" / "data" / "browser_smoke.ipynb"
WIDGETS_FRONTEND = "@jupyter-widgets/jupyterlab-manager"


@dataclass(frozen=True)
class Target:
    """A notebook checked in the browser, and how long it may take on 2 busy CPU cores."""

    name: str  # screenshot stem under figures/browser/
    notebook: Path
    views: int = 0  # interactive views the page shows after Run All
    run_timeout: float = 180.0  # Run All Cells, seconds
    change_timeout: float = 30.0  # one control change until its figure shows, seconds


NOTEBOOKS = REPO_ROOT / "notebooks"
TARGETS = [
    Target("biwkv", NOTEBOOKS / "01_biwkv.ipynb", views=1),
    Target("birwkv_block", NOTEBOOKS / "02_birwkv_block.ipynb"),
    Target("train_small_model", NOTEBOOKS / "03_train_small_model.ipynb", run_timeout=300.0),
    Target("erf_explorer", NOTEBOOKS / "04_erf_explorer.ipynb", views=1),
    Target("latent_correlation", NOTEBOOKS / "05_latent_correlation.ipynb", views=1),
    Target("scctx_stepper", NOTEBOOKS / "06_scctx_stepper.ipynb", views=1),
    Target("paper_figures_and_tables", NOTEBOOKS / "07_paper_figures_and_tables.ipynb"),
]

#: A notebook with one interactive view whose controls are not connected (``connect=False``):
#: the negative control of the control check.
DISCONNECTED_VIEW = [
    "import ipywidgets\nfrom matplotlib.figure import Figure\n\nfrom lalic_core import widgets",
    ("def draw(n):\n    fig = Figure(figsize=(3, 2))\n    fig.subplots().plot([0, n])\n"
    "    return fig\n\n\nwidgets.FunctionView(draw, {'n': ipywidgets.IntSlider(value=1, "
    "description='n')}, connect=False)"),
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
    for path in [SMOKE_NOTEBOOK, *(t.notebook for t in TARGETS)]:
        if path.exists():
            _write_without_outputs(json.loads(path.read_text()), root / path.name)
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
def test_every_control_redraws_its_figure_in_browser(target, lab, page, tmp_path):
    artifacts = _artifacts_dir()
    start = time.monotonic()
    check = NotebookRound(page, lab, target.notebook.name, run_timeout=target.run_timeout,
                          change_timeout=target.change_timeout,
                          failure_png=tmp_path / "page_at_failure.png")
    shots = {stage: artifacts / f"{target.name}_{stage}.png" if target.views else None
             for stage in ("before", "after")}
    seconds_run_all, changes = check.run(before_png=shots["before"], after_png=shots["after"])
    kernel_prefix = page.evaluate(_KERNEL_PREFIX_JS)
    print(f"{target.name}: run all {seconds_run_all:.1f} s, {len(changes)} control changes "
          f"(" + ", ".join(f"{c.kind} {c.before} -> {c.after}: {c.seconds:.1f} s"
                           for c in changes) + f"), round {time.monotonic() - start:.1f} s")
    assert Path(kernel_prefix) == Path(sys.prefix), "the kernel runs another Python"
    assert len(check.views()) == target.views, (
        f"{target.notebook.name}: {len(check.views())} interactive views, expected "
        f"{target.views}")
    assert changes or not target.views
    for change in changes:
        assert change.after != change.before and change.caption[change.control] == change.after


@pytest.mark.browser
def test_smoke_slider_redraws_figure_in_browser(lab, page, tmp_path):
    result = SliderRound(page, lab, SMOKE_NOTEBOOK.name, run_timeout=30.0, redraw_timeout=15.0,
                         failure_png=tmp_path / "page_at_failure.png").run()
    assert result.figure_after != result.figure_before


@pytest.mark.browser
def test_harness_fails_when_view_controls_are_not_connected(lab, page):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in DISCONNECTED_VIEW]
    nbformat.write(nb, lab.root_dir / "disconnected_view.ipynb")
    with pytest.raises(BrowserCheckError, match="the figure was not redrawn to match"):
        NotebookRound(page, lab, "disconnected_view.ipynb", run_timeout=60.0,
                      change_timeout=4.0).run()


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
