"""Run the workbench's notebooks headless, and keep their committed outputs readable.

The notebooks in ``notebooks/`` are committed *executed in their fast mode*, so that a reader
sees the figures on a code host. :func:`execute` runs one with nbclient (``LALIC_NOTEBOOK_FAST=1``,
the kernel importing this very ``lalic_core``); :func:`clean` then removes what changes from
run to run or means nothing outside a live kernel: execution timestamps, the saved widget
state, and each live widget's view (an interactive view keeps its figure as a plain PNG, which
:class:`lalic_core.widgets.FigureView` puts next to the widget for this purpose). Execution
counts are renumbered 1, 2, ...

    python -m lalic_core.notebooks notebooks/*.ipynb          # run, clean, write back
    python -m lalic_core.notebooks --check notebooks/*.ipynb  # run only, report errors
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

__all__ = ["WIDGET_VIEW", "clean", "error_outputs", "execute", "main", "volatile_metadata"]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
#: Metadata keys of a cell that change on every run.
_VOLATILE_CELL_KEYS = ("execution",)
#: Notebook metadata keys written by a run (widget state) rather than by the author.
_VOLATILE_NOTEBOOK_KEYS = ("widgets",)


def kernel_environment(fast: bool = True, extra: dict | None = None) -> dict:
    """The environment of a notebook kernel: this process's, with ``LALIC_NOTEBOOK_FAST``,
    no ``MPLBACKEND`` (the kernel's inline backend), and ``PYTHONPATH`` starting with the
    folder holding this ``lalic_core`` (so a worktree's kernel imports that worktree)."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    root = str(Path(__file__).resolve().parents[1])
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env.update({"LALIC_NOTEBOOK_FAST": "1" if fast else "0",
                "PYDEVD_DISABLE_FILE_VALIDATION": "1",
                "PYTHONPATH": os.pathsep.join([root, *paths])})
    env.update(extra or {})
    return env


def execute(path, *, fast: bool = True, timeout: float = 300.0, cwd=None, env: dict | None = None,
            upto: int | None = None):
    """Run the notebook at ``path`` top to bottom (or its first ``upto`` cells) in a fresh
    ``python3`` kernel; returns ``(notebook, seconds)``. Errors raise nbclient's
    ``CellExecutionError``; the notebook object then holds the outputs so far."""
    import nbclient
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    if upto is not None:
        nb.cells = nb.cells[:upto]
    cwd = str(cwd or Path(path).resolve().parent)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": cwd}},
                                     store_widget_state=False)
    start = time.perf_counter()
    client.execute(env=env or kernel_environment(fast), cwd=cwd)
    return nb, time.perf_counter() - start


def error_outputs(nb) -> list[str]:
    """``"cell i: Name: message"`` for every error output of the notebook."""
    errors = []
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                errors.append(f"cell {index}: {out.get('ename')}: {out.get('evalue')}")
    return errors


def clean(nb):
    """Remove volatile metadata and live widget views (keeping their PNG); renumber the
    execution counts. Returns ``nb`` (changed in place)."""
    for key in _VOLATILE_NOTEBOOK_KEYS:
        nb.metadata.pop(key, None)
    count = 0
    for cell in nb.cells:
        for key in _VOLATILE_CELL_KEYS:
            cell.metadata.pop(key, None)
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            data = out.get("data")
            if data and WIDGET_VIEW in data:
                data.pop(WIDGET_VIEW)
                if not any(k.startswith("image/") for k in data):
                    continue  # a widget without a picture (a progress bar): nothing to read
            outputs.append(out)
        cell.outputs = outputs
        count += 1
        cell.execution_count = count
        for out in outputs:
            if "execution_count" in out:
                out["execution_count"] = count
    return nb


def volatile_metadata(nb) -> list[str]:
    """What :func:`clean` would remove, in words (empty for a clean notebook)."""
    found = [f"notebook metadata {k!r}" for k in _VOLATILE_NOTEBOOK_KEYS if k in nb.metadata]
    for index, cell in enumerate(nb.cells):
        found += [f"cell {index} metadata {k!r}" for k in _VOLATILE_CELL_KEYS
                  if k in cell.metadata]
        for out in cell.get("outputs", []):
            if WIDGET_VIEW in (out.get("data") or {}):
                found.append(f"cell {index}: a live widget view (needs the kernel)")
    return found


def main(argv: list[str] | None = None) -> int:
    import nbformat

    parser = argparse.ArgumentParser(prog="python -m lalic_core.notebooks",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="run only; write nothing")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per cell")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.paths:
        nb, seconds = execute(path, timeout=args.timeout)
        errors = error_outputs(nb)
        print(f"{path}: {seconds:.1f} s{'' if not errors else ', errors: ' + '; '.join(errors)}")
        failed += bool(errors)
        if not args.check and not errors:
            nbformat.write(clean(nb), str(path))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
