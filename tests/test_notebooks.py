"""Every notebook in notebooks/ runs top to bottom, headless, in its fast mode.

Each ``notebooks/*.ipynb`` is copied into a temporary folder (so no notebook can rely on paths
relative to notebooks/) and executed with nbclient in the ``python3`` kernel
(:func:`lalic_core.notebooks.execute`: ``LALIC_NOTEBOOK_FAST=1`` and this checkout's
``lalic_core`` first on the kernel's ``PYTHONPATH``); the test fails on any error output. Run
times are printed at the end of the module (also under pytest's output capture) and written to
``notebook_timings.json`` in pytest's temporary base folder (``--basetemp`` to choose it).

Committed notebooks are committed *executed* in their fast mode (so a code host shows the
figures): every code cell has run, in order, without an error output, with no volatile
metadata (timestamps, widget state, live widget views; ``python -m lalic_core.notebooks
notebooks/*.ipynb`` writes them so), and they declare the ``python3`` kernelspec.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import ipykernel  # noqa: F401  (dev dependencies: a missing one is a failure, not a skip)
import nbclient
import nbformat
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
#: Per-cell limit (s); fast modes aim at well under a minute per notebook.
CELL_TIMEOUT = 300
#: Notebooks whose fast mode exceeds ~90 s on 2 loaded cores go here (run with -m slow).
SLOW_NOTEBOOKS: set[str] = set()

if not NOTEBOOKS:
    pytest.skip("no notebooks in notebooks/", allow_module_level=True)


def _param(path: Path):
    marks = [pytest.mark.slow] if path.stem in SLOW_NOTEBOOKS else []
    return pytest.param(path, id=path.stem, marks=marks)


@pytest.fixture(scope="module")
def timings(request, tmp_path_factory):
    """Collects {notebook: seconds}; at the end of the module writes them to a JSON file and
    prints a summary past pytest's output capture."""
    record: dict[str, float] = {}
    yield record
    if not record:
        return
    path = tmp_path_factory.getbasetemp() / "notebook_timings.json"
    path.write_text(json.dumps(record, indent=2))
    lines = ["", "notebook run times (fast mode):"]
    lines += [f"  {name:32s} {seconds:6.1f} s" for name, seconds in record.items()]
    lines.append(f"  {'total':32s} {sum(record.values()):6.1f} s   ({path})")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print("\n".join(lines))
    else:  # pragma: no cover
        print("\n".join(lines))


@pytest.mark.parametrize("path", [_param(p) for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, timings):
    from lalic_core.notebooks import error_outputs, execute

    work = tmp_path / "run"
    work.mkdir()
    copy = work / path.name
    shutil.copyfile(path, copy)
    start = time.perf_counter()
    nb = None
    try:
        nb, _ = execute(copy, timeout=CELL_TIMEOUT, cwd=work)
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{path.name} failed:\n{str(exc)[-4000:]}")
    finally:
        timings[path.stem] = time.perf_counter() - start
        if nb is not None:
            nbformat.write(nb, copy)  # the executed copy, for a look after a failure
    assert not error_outputs(nb), f"{path.name}: error outputs {error_outputs(nb)}"


def test_kernel_imports_this_checkout(tmp_path):
    """The notebook kernel imports the lalic_core of this checkout (not another install)."""
    from lalic_core.notebooks import execute

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.cells = [nbformat.v4.new_code_cell("import lalic_core; print(lalic_core.__file__)")]
    path = tmp_path / "which.ipynb"
    nbformat.write(nb, path)
    ran, _ = execute(path, timeout=120)
    printed = ran.cells[0].outputs[0]["text"].strip()
    assert Path(printed).resolve() == (REPO_ROOT / "lalic_core" / "__init__.py").resolve()


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in NOTEBOOKS])
def test_notebook_is_committed_executed_and_clean(path):
    from lalic_core.notebooks import error_outputs, volatile_metadata

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec") == KERNELSPEC, (
        f"{path.name}: metadata.kernelspec must be {KERNELSPEC} (got "
        f"{nb.metadata.get('kernelspec')})")
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    counts = [cell.get("execution_count") for cell in code]
    rerun = ("re-run them: `python -m lalic_core.notebooks notebooks/*.ipynb` (executes in "
             "FAST mode, strips volatile metadata)")
    assert counts == list(range(1, len(code) + 1)), (
        f"{path.name}: execution counts {counts} are not 1..{len(code)}; {rerun}")
    assert not error_outputs(nb), f"{path.name}: error outputs {error_outputs(nb)}; {rerun}"
    assert not volatile_metadata(nb), f"{path.name}: {volatile_metadata(nb)}; {rerun}"
    assert any(o.get("data", {}).get("image/png") for c in code for o in c.get("outputs", [])), (
        f"{path.name}: no figure among the committed outputs; {rerun}")


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in NOTEBOOKS])
def test_notebook_reads_the_fast_switch(path):
    """The first code cell is the parameter cell, and it reads LALIC_NOTEBOOK_FAST."""
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "LALIC_NOTEBOOK_FAST" in first.source and "FAST" in first.source, (
        f"{path.name}: the first code cell must set FAST from LALIC_NOTEBOOK_FAST")


def test_clean_keeps_figures_and_drops_what_changes_from_run_to_run():
    from lalic_core.notebooks import WIDGET_VIEW, clean, volatile_metadata

    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"state": {}}
    view = {"output_type": "display_data", "metadata": {},
            "data": {WIDGET_VIEW: {"model_id": "x"}, "image/png": "iVBO", "text/plain": "V"}}
    bar = {"output_type": "display_data", "metadata": {},
           "data": {WIDGET_VIEW: {"model_id": "y"}, "text/plain": "VBox"}}
    nb.cells = [nbformat.v4.new_code_cell("a", outputs=[nbformat.from_dict(bar)]),
                nbformat.v4.new_markdown_cell("text"),
                nbformat.v4.new_code_cell("b", outputs=[nbformat.from_dict(view)])]
    nb.cells[0].metadata["execution"] = {"shell.execute_reply": "2026-01-01T00:00:00Z"}
    nb.cells[0].execution_count, nb.cells[2].execution_count = 7, 9
    assert len(volatile_metadata(nb)) == 4
    clean(nb)
    assert volatile_metadata(nb) == []
    assert nb.cells[0].outputs == [] and nb.cells[0].execution_count == 1
    assert nb.cells[2].execution_count == 2
    assert set(nb.cells[2].outputs[0]["data"]) == {"image/png", "text/plain"}
