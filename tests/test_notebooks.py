"""Every notebook in notebooks/ runs top to bottom, headless, in its fast mode.

Each ``notebooks/*.ipynb`` is copied into a temporary folder (so no notebook can rely on paths
relative to notebooks/) and executed with nbclient in the ``python3`` kernel, with
``LALIC_NOTEBOOK_FAST=1`` in the kernel's environment; the test fails on any error output. Run
times are printed at the end of the module (also under pytest's output capture) and written to
``notebook_timings.json`` in pytest's temporary base folder (``--basetemp`` to choose it).

Committed notebooks must have their outputs stripped and declare the ``python3`` kernelspec.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

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


def _error_outputs(nb) -> list[str]:
    errors = []
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                errors.append(f"cell {index}: {out.get('ename')}: {out.get('evalue')}")
    return errors


@pytest.mark.parametrize("path", [_param(p) for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, timings):
    work = tmp_path / "run"
    work.mkdir()
    copy = work / path.name
    shutil.copyfile(path, copy)
    nb = nbformat.read(copy, as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's inline one
    env.update({"LALIC_NOTEBOOK_FAST": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3",
        resources={"metadata": {"path": str(work)}},
    )
    start = time.perf_counter()
    try:
        client.execute(env=env, cwd=str(work))
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{path.name} failed:\n{str(exc)[-4000:]}")
    finally:
        timings[path.stem] = time.perf_counter() - start
        nbformat.write(nb, copy)  # the executed copy, for a look after a failure
    assert not _error_outputs(nb), f"{path.name}: error outputs {_error_outputs(nb)}"


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in NOTEBOOKS])
def test_notebook_is_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec") == KERNELSPEC, (
        f"{path.name}: metadata.kernelspec must be {KERNELSPEC} (got "
        f"{nb.metadata.get('kernelspec')})")
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} have outputs or execution counts; strip "
                       "them before committing (e.g. `jupyter nbconvert --clear-output "
                       "--inplace`)")


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in NOTEBOOKS])
def test_notebook_reads_the_fast_switch(path):
    """The first code cell is the parameter cell, and it reads LALIC_NOTEBOOK_FAST."""
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "LALIC_NOTEBOOK_FAST" in first.source and "FAST" in first.source, (
        f"{path.name}: the first code cell must set FAST from LALIC_NOTEBOOK_FAST")
