"""How long the notebooks make a student wait: Run All, every control, the first numba use.

    python benchmarks/notebooks.py                 # all seven notebooks, ~10 min on 2 cores
    python benchmarks/notebooks.py --only 01 04    # some of them
    python benchmarks/notebooks.py --skip-first-use
    python benchmarks/notebooks.py --first-use-only

Prints one table (the numbers of issue 17, measured again):

- **Run All** per notebook, headless (nbclient, FAST mode, a fresh kernel each time, kernel
  start included): *cold* = the first run after a fresh set-up (numba's cache warmed by
  ``python -m lalic_core.warmup``, as ``make venv`` does; an empty user cache, so e.g. the
  Triton interpreter comparison of 01 runs its process), *warm* = the next run.
- **Controls**: for every control of every interactive view, after the warm Run All in that
  same kernel, :func:`lalic_core.widgets.measure_controls`: one user step away from the
  default, as a first visit (the view's cache for that setting dropped), median of 3; kernel
  side (compute, draw, PNG), without the ~0.05 s coalescing pause and the browser's part
  (``tests/test_browser.py`` prints what the browser sees).
- **First use**: a fresh set-up simulated with an empty ``NUMBA_CACHE_DIR``:
  ``python -m lalic_core.warmup`` (the compilation, once per install), then notebook 01 opened
  and run up to its first numba BiWKV result (kernel start included).

Say under what load the numbers were measured: the table prints ``os.getloadavg()`` before and
after, and the number of CPUs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lalic_core.notebooks import error_outputs, execute, kernel_environment

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
#: The first cell of notebook 01 that shows a numba BiWKV result.
FIRST_NUMBA_MARK = "explain.compare_backends(("
MEASURE_CELL = ("import json as _json\nfrom lalic_core.widgets import measure_controls as _m\n"
                "print('LATENCY' + _json.dumps(_m(repeats={repeats})))")


def _cell_seconds(cell) -> float:
    """Seconds a cell ran, from nbclient's timing metadata."""
    from datetime import datetime

    timing = cell.metadata.get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not start or not end:
        return 0.0
    parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))
    return (parse(end) - parse(start)).total_seconds()


def _run(path: Path, env: dict, work: Path, repeats: int | None = None):
    """(Run All seconds, control rows) of one fresh-kernel run of a copy of ``path``."""
    import nbformat

    copy = work / path.name
    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    if repeats:
        nb.cells.append(nbformat.v4.new_code_cell(MEASURE_CELL.format(repeats=repeats)))
    nbformat.write(nb, str(copy))
    ran, seconds = execute(copy, env=env, cwd=work, timeout=600)
    errors = error_outputs(ran)
    if errors:
        raise RuntimeError(f"{path.name}: {errors}")
    rows = []
    if repeats:
        seconds -= _cell_seconds(ran.cells[-1])
        text = "".join(o.get("text", "") for o in ran.cells[-1].outputs)
        line = next(x for x in text.splitlines() if x.startswith("LATENCY"))
        rows = json.loads(line[len("LATENCY"):])
    return seconds, rows


def first_use(env: dict, work: Path) -> tuple[float, float]:
    """(compile seconds of the warm-up, seconds until 01's first numba result) with an empty
    numba cache."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lalic_core.warmup"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    compile_s = time.perf_counter() - start
    import nbformat

    path = REPO / "notebooks" / "01_biwkv.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    upto = next(i for i, c in enumerate(nb.cells) if FIRST_NUMBA_MARK in c.source) + 1
    ran, seconds = execute(path, env=env, cwd=work, upto=upto, timeout=600)
    if error_outputs(ran):
        raise RuntimeError(f"01 up to cell {upto}: {error_outputs(ran)}")
    return compile_s, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=None,
                        help="notebook number prefixes, e.g. 01 04 (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="changes per control")
    parser.add_argument("--skip-first-use", action="store_true")
    parser.add_argument("--first-use-only", action="store_true",
                        help="only the first-use measurement")
    args = parser.parse_args(argv)
    paths = [p for p in NOTEBOOKS if not args.only or p.name[:2] in args.only]
    if args.first_use_only:
        paths, args.skip_first_use = [], False
    load_before = os.getloadavg()
    lines = []
    with tempfile.TemporaryDirectory(prefix="lalic-bench-") as tmp:
        tmp = Path(tmp)
        env = kernel_environment(True, {"XDG_CACHE_HOME": str(tmp / "user-cache")})
        runs, controls = {}, []
        for path in paths:
            work = tmp / path.stem
            work.mkdir()
            cold, _ = _run(path, env, work)
            warm, rows = _run(path, env, work, repeats=args.repeats)
            runs[path.stem] = (cold, warm)
            controls += [dict(r, notebook=path.stem[:2]) for r in rows]
            print(f"  {path.stem}: {cold:.1f} / {warm:.1f} s, {len(rows)} controls",
                  file=sys.stderr, flush=True)
        first = None
        if not args.skip_first_use:
            fresh = dict(env, NUMBA_CACHE_DIR=str(tmp / "numba-cache-fresh"),
                         XDG_CACHE_HOME=str(tmp / "user-cache-fresh"))
            (tmp / "first").mkdir()
            first = first_use(fresh, tmp / "first")
    load_after = os.getloadavg()

    lines.append(f"benchmarks/notebooks.py on {os.cpu_count()} CPUs; load average before "
                 f"{load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f}, after "
                 f"{load_after[0]:.1f} / {load_after[1]:.1f} / {load_after[2]:.1f} (1/5/15 min)")
    lines.append("")
    if runs:
        lines.append("Run All (FAST, nbclient, fresh kernel)   cold (s)   warm (s)")
    for name, (cold, warm) in runs.items():
        lines.append(f"  {name:38s} {cold:8.1f}   {warm:8.1f}")
    if controls:
        lines.append("")
        lines.append(f"Controls at their defaults: one step, first visit, median of {args.repeats} "
                     f"(kernel side)")
        lines.append(f"  {'nb':3s}{'view':17s}{'control':12s}{'change':40s}{'median':>8s}"
                     f"{'max':>7s}  {'<= 1 s':6s}")
        for r in controls:
            lines.append(f"  {r['notebook']:3s}{r['view']:17s}{r['control']:12s}"
                         f"{r['change'][:39]:40s}{r['median']:7.2f}s{max(r['seconds']):6.2f}s"
                         f"  {'yes' if r['median'] <= 1.0 else 'NO'}")
    if first is not None:
        compile_s, first_s = first
        lines.append("")
        lines.append("First use after a fresh set-up (empty NUMBA_CACHE_DIR):")
        lines.append(f"  python -m lalic_core.warmup (compiles, once per install) {compile_s:7.1f} s")
        lines.append(f"  01 opened -> first numba BiWKV result (kernel start incl.) {first_s:5.1f} s"
                     f"  {'<= 10 s' if first_s <= 10 else '> 10 s'}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
