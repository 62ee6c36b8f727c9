"""JupyterLab in headless Chromium, driven by Playwright for Python (used by test_browser.py).

Two pieces, both usable outside pytest:

- ``JupyterLabServer``: a JupyterLab process on 127.0.0.1, a free port and a random token, its
  Jupyter config/data/runtime dirs and IPython dir isolated in a temporary folder (nothing of
  the user's set-up leaks in), stopped for sure by ``stop()`` (terminate, then kill, then any
  kernel it left behind).
- ``SliderRound``: one user round on a notebook page: open it, Run > Run All Cells, wait for the
  first ``IntSlider`` and the first figure after it, press ArrowRight on the slider handle,
  wait for the figure to be redrawn, with screenshots before and after.

Failures raise ``BrowserCheckError`` with a message that says what the user would have seen.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
    "--mute-audio",
]

# JupyterLab user settings written into the isolated config dir: no news/update toasts, and every
# cell kept in the DOM (no windowing), so that a widget below the fold is in the page too.
LAB_USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


class BrowserCheckError(AssertionError):
    """What a user would have seen go wrong in the browser."""


def chromium_path() -> str | None:
    """The Chromium to launch: $LALIC_CHROMIUM when set, else /usr/bin/chromium or `chromium`
    on PATH; None when that is not an executable file."""
    override = os.environ.get("LALIC_CHROMIUM")
    candidates = [override] if override else ["/usr/bin/chromium", shutil.which("chromium")]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JupyterLabServer:
    """A JupyterLab server serving ``root_dir``, isolated under ``state_dir``.

    It runs ``sys.executable -m jupyterlab``, so the kernelspec it finds first is the one of this
    interpreter's environment (``JUPYTER_PREFER_ENV_PATH=1``) and the kernel runs this Python.
    """

    def __init__(self, root_dir: Path, state_dir: Path, start_timeout: float = 60.0):
        self.root_dir = Path(root_dir)
        self.state_dir = Path(state_dir)
        self.start_timeout = start_timeout
        self.port = _free_port()
        self.token = secrets.token_hex(24)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log_path = self.state_dir / "jupyterlab.log"

    # -- environment --------------------------------------------------------------------------
    def _environment(self) -> dict[str, str]:
        dirs = {name: self.state_dir / name for name in ("config", "data", "runtime", "ipython")}
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        for rel, settings in LAB_USER_SETTINGS.items():
            path = dirs["config"] / "lab" / "user-settings" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(settings))
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=str(dirs["config"]),
            JUPYTER_DATA_DIR=str(dirs["data"]),
            JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
            JUPYTER_PREFER_ENV_PATH="1",
            IPYTHONDIR=str(dirs["ipython"]),
            PYTHONUNBUFFERED="1",
        )
        # A user's JUPYTER_PATH / JUPYTER_CONFIG_PATH would add their kernels and settings;
        # MPLBACKEND=Agg (as in `make figures`) would stop the kernel's inline figures.
        for name in ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "MPLBACKEND", "JUPYTER_TOKEN"):
            env.pop(name, None)
        return env

    def _command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--port-retries=0",
            f"--ServerApp.root_dir={self.root_dir}",
            f"--IdentityProvider.token={self.token}",
            "--LabApp.news_url=None",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        return cmd

    # -- REST -----------------------------------------------------------------------------------
    def api(self, path: str, method: str = "GET", timeout: float = 5.0):
        request = urllib.request.Request(
            f"{self.base_url}/api/{path}", method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def url(self, notebook_relpath: str) -> str:
        # `reset` starts from an empty workspace: notebooks opened earlier are not reopened.
        return f"{self.base_url}/lab/tree/{notebook_relpath}?reset&token={self.token}"

    def log_tail(self, n_chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return "(no server log)"

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> JupyterLabServer:
        env = self._environment()  # creates state_dir
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self._command(), cwd=self.root_dir, env=env,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited with status {self.process.returncode} while starting; "
                    f"log:\n{self.log_tail()}"
                )
            try:
                self.api("status", timeout=2.0)
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(
            f"JupyterLab did not answer /api/status within {self.start_timeout:.0f} s; "
            f"log:\n{self.log_tail()}"
        )

    def shutdown_kernels(self) -> None:
        """Close every notebook session and kernel (between tests, to free CPU and memory)."""
        try:
            for session in self.api("sessions"):
                self.api(f"sessions/{session['id']}", method="DELETE", timeout=15.0)
            for kernel in self.api("kernels"):
                self.api(f"kernels/{kernel['id']}", method="DELETE", timeout=15.0)
        except (urllib.error.URLError, OSError, ValueError):
            pass

    @contextlib.contextmanager
    def disabled_lab_extensions(self, *names: str):
        """Pages loaded inside this block run without the named JupyterLab extensions."""
        path = self.state_dir / "config" / "labconfig" / "page_config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"disabledExtensions": {name: True for name in names}}))
        try:
            yield
        finally:
            path.unlink()

    def _leftover_kernel_pids(self) -> list[int]:
        """Processes whose command line names our private runtime dir (our kernels)."""
        marker = str(self.state_dir / "runtime").encode()
        pids = []
        for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
            if not entry.name.isdigit():
                continue
            try:
                if marker in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def stop(self) -> None:
        """Stop the server and everything it started; safe to call more than once."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.shutdown_kernels()
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=10)
        for pid in self._leftover_kernel_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process = None


# ---------------------------------------------------------------------------------------------
# The page side. The user's gestures go through the page (menus, keyboard); the notebook's state
# (cells run, errors, kernel status) is read from JupyterLab's model, exposed to the page by
# `--LabApp.expose_app_in_browser`. Selectors follow the contract in test_browser.py.

# State of the notebook in the main area: its path, the kernel status, and per code cell
# [execution count, execution state, first error output or null].
_NOTEBOOK_STATE_JS = """() => {
    const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    if (!widget || !widget.content || !widget.content.model || !widget.sessionContext) return null;
    const session = widget.sessionContext.session;
    const cells = [];
    for (const cell of widget.content.model.cells) {
        if (cell.type !== 'code') continue;
        const error = cell.outputs.toJSON().find(o => o.output_type === 'error');
        cells.push([cell.executionCount, cell.executionState,
                    error ? [error.ename, error.evalue, error.traceback.join('\\n')] : null]);
    }
    return {path: widget.context.path, kernel: !!(session && session.kernel),
            status: widget.sessionContext.kernelDisplayStatus, cells: cells};
}"""

_OUTPUT_TEXT_JS = """() => Array.from(
    document.querySelectorAll('.jp-Notebook .jp-OutputArea-output'),
    el => el.innerText.trim().slice(0, 300)).filter(t => t)"""

# The src of the first loaded <img> inside an ipywidgets Output after the first slider.
_FIGURE_JS = """() => {
    const slider = document.querySelector('.jp-Notebook .widget-slider');
    if (!slider) return null;
    for (const img of document.querySelectorAll('.jp-Notebook .widget-output img')) {
        if (slider.compareDocumentPosition(img) & Node.DOCUMENT_POSITION_FOLLOWING
                && img.complete && img.naturalWidth > 0) {
            return img.getAttribute('src');
        }
    }
    return null;
}"""

# The value the first slider shows (its readout).
_READOUT_JS = """() => {
    const readout = document.querySelector('.jp-Notebook .widget-slider .widget-readout');
    if (!readout) return null;
    return readout.value ? readout.value : readout.textContent.trim();
}"""

# Runs a line in the notebook's kernel (outside any cell) and returns what it printed.
_KERNEL_PREFIX_JS = """async () => {
    const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
    const future = kernel.requestExecute({code: 'import sys; print(sys.prefix, end="")',
                                          store_history: false});
    let text = '';
    future.onIOPub = msg => { if (msg.header.msg_type === 'stream') text += msg.content.text; };
    await future.done;
    return text;
}"""

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class RoundResult:
    """What one slider round saw: the kernel's Python, the figure's image data and the slider
    value before and after the move, and how long running and redrawing took."""

    kernel_prefix: str  # sys.prefix of the kernel's Python
    figure_before: str
    figure_after: str
    readout_before: str | None
    readout_after: str | None
    seconds_run_all: float
    seconds_redraw: float


class SliderRound:
    """One user round on ``notebook`` (a path relative to the server root) in a Playwright page.

    ``run()`` opens the notebook, runs all cells from the Run menu, waits for the first slider
    and the figure after it, presses ArrowRight on the slider handle and waits for the figure to
    change. Any departure raises ``BrowserCheckError``; with ``failure_png`` set, the page at
    that moment is saved there.
    """

    def __init__(self, page, server: JupyterLabServer, notebook: str, *,
                 run_timeout: float = 60.0, redraw_timeout: float = 30.0,
                 kernel_timeout: float = 30.0, figure_timeout: float = 10.0,
                 failure_png: Path | None = None):
        self.page = page
        self.server = server
        self.notebook = notebook
        self.run_timeout = run_timeout
        self.redraw_timeout = redraw_timeout
        self.kernel_timeout = kernel_timeout
        self.figure_timeout = figure_timeout
        self.failure_png = failure_png

    # -- helpers --------------------------------------------------------------------------------
    def _fail(self, what: str, show_outputs: bool = True) -> NoReturn:
        message = f"{self.notebook}: {what}"
        if show_outputs:
            outputs = self.page.evaluate(_OUTPUT_TEXT_JS)
            shown = "\n---\n".join(outputs[-6:]) if outputs else "(no cell output at all)"
            message += f"\nCell outputs in the page:\n{shown}"
        if self.failure_png is not None:
            self.page.screenshot(path=str(self.failure_png))
            message += f"\n(screenshot of the page: {self.failure_png})"
        raise BrowserCheckError(message)

    def _state(self) -> dict | None:
        state = self.page.evaluate(_NOTEBOOK_STATE_JS)
        return state if state and state["path"] == self.notebook else None

    def _dialog(self) -> str | None:
        dialog = self.page.locator(".jp-Dialog")
        return " ".join(dialog.first.inner_text().split())[:300] if dialog.count() else None

    def _poll(self, timeout: float, probe):
        """Call ``probe()`` every 0.2 s until it returns a truthy value or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.2)

    # -- the round ------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the notebook in a fresh workspace; wait until its kernel is connected and idle."""
        self.page.goto(self.server.url(self.notebook), wait_until="domcontentloaded")
        idle_polls = 0

        def kernel_ready() -> bool:
            nonlocal idle_polls
            # A "Select Kernel" dialog: the notebook's kernelspec metadata did not start a kernel.
            if (dialog := self._dialog()) is not None:
                self._fail(f"a dialog blocks the notebook (kernelspec metadata?): {dialog!r}")
            state = self._state()
            idle = bool(state and state["kernel"] and state["status"] == "idle")
            idle_polls = idle_polls + 1 if idle else 0
            return idle_polls >= 3  # idle for three polls in a row, not a passing moment

        if not self._poll(self.kernel_timeout, kernel_ready):
            state = self._state()
            self._fail(f"no idle kernel after {self.kernel_timeout:.0f} s (notebook state: "
                       f"{state and state['status']!r}); server log:\n{self.server.log_tail(1500)}")

    def run_all_cells(self) -> float:
        """Run > Run All Cells, as a user does; returns the seconds until every cell has run."""
        start = time.monotonic()
        self.page.get_by_role("menuitem", name="Run", exact=True).click()
        self.page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

        def finished() -> bool:
            state = self._state()
            if state is None:
                return False
            for number, (_, _, error) in enumerate(state["cells"], start=1):
                if error:
                    ename, evalue, traceback = error
                    self._fail(f"code cell {number} raised {ename}: {evalue}\n"
                               f"{_ANSI.sub('', traceback)[-1500:]}", show_outputs=False)
            return all(count is not None and run_state != "running"
                       for count, run_state, _ in state["cells"])

        if not self._poll(self.run_timeout, finished):
            state = self._state()
            counts = state and [count for count, _, _ in state["cells"]]
            self._fail(f"cells had not all run after {self.run_timeout:.0f} s "
                       f"(execution counts: {counts})")
        return time.monotonic() - start

    def wait_for_figure(self) -> str:
        src = self._poll(self.figure_timeout, lambda: self.page.evaluate(_FIGURE_JS))
        if src:
            return src
        if not self.page.locator(".jp-Notebook .widget-slider").count():
            self._fail("no ipywidgets slider is rendered (widgets front-end missing, or the "
                       "widget failed to display)")
        self._fail("the slider is shown but no figure (an <img> in an ipywidgets Output after it)")

    def output_area(self):
        """The cell output area that holds the first slider: what the screenshots show."""
        return self.page.locator(".jp-Notebook .jp-OutputArea-output",
                                 has=self.page.locator(".widget-slider")).first

    def move_slider(self) -> None:
        """Focus the first slider's handle and press ArrowRight (one step), as a user does."""
        handle = self.page.locator(".jp-Notebook .widget-slider .noUi-handle").first
        handle.focus()
        handle.press("ArrowRight")

    def run(self, before_png: Path | None = None, after_png: Path | None = None) -> RoundResult:
        self.open()
        kernel_prefix = self.page.evaluate(_KERNEL_PREFIX_JS)
        seconds_run_all = self.run_all_cells()
        figure_before = self.wait_for_figure()
        readout_before = self.page.evaluate(_READOUT_JS)
        if before_png is not None:
            self.output_area().screenshot(path=str(before_png))

        self.move_slider()
        start = time.monotonic()
        figure_after = self._poll(
            self.redraw_timeout,
            lambda: (src := self.page.evaluate(_FIGURE_JS)) and src != figure_before and src,
        )
        seconds_redraw = time.monotonic() - start
        readout_after = self.page.evaluate(_READOUT_JS)
        if readout_after == readout_before:
            self._fail(f"ArrowRight on the slider handle did not move the slider "
                       f"(it still shows {readout_before!r})")
        if not figure_after:
            self._fail(f"the slider moved ({readout_before!r} -> {readout_after!r}) but the "
                       f"figure was not redrawn within {self.redraw_timeout:.0f} s")
        if after_png is not None:
            self.page.wait_for_timeout(300)  # let the new image settle before the screenshot
            self.output_area().screenshot(path=str(after_png))
        return RoundResult(kernel_prefix, figure_before, figure_after, readout_before, readout_after,
                           seconds_run_all, seconds_redraw)


# ---------------------------------------------------------------------------------------------
# Every control of every view: the interactive views of lalic_core.widgets (class "lalic-view",
# controls of class "lalic-control", an Output holding a PNG and a caption line
# "shown: <control> = <value> | ..." naming the control values the figure was drawn for).

# Per view: its controls (kind and the value the front-end shows), the caption and the figure.
_VIEWS_JS = """() => Array.from(document.querySelectorAll('.jp-Notebook .lalic-view'), view => {
    const controls = Array.from(view.querySelectorAll('.lalic-control'), el => {
        let kind = 'other', value = null;
        if (el.classList.contains('widget-slider')) {
            kind = 'slider';
            const r = el.querySelector('.widget-readout');
            value = r ? (r.value ? r.value : r.textContent.trim()) : null;
        } else if (el.classList.contains('widget-dropdown')) {
            kind = 'dropdown';
            const s = el.querySelector('select');
            value = s && s.selectedIndex >= 0 ? s.options[s.selectedIndex].text.trim() : null;
        } else if (el.classList.contains('widget-toggle-buttons')) {
            kind = 'toggle';
            const b = el.querySelector('.widget-toggle-button.mod-active');
            value = b ? b.textContent.trim() : null;
        } else if (el.classList.contains('widget-checkbox')) {
            kind = 'checkbox';
            const i = el.querySelector('input[type=checkbox]');
            value = i ? (i.checked ? 'true' : 'false') : null;
        }
        // ipywidgets writes option labels with non-breaking spaces
        return {kind: kind, value: value === null ? null : value.replace(/\u00a0/g, ' ')};
    });
    const out = view.querySelector('.widget-output');
    const img = out && out.querySelector('img');
    const text = out ? out.innerText : '';
    const line = text.split('\\n').find(l => l.startsWith('shown: '));
    return {controls: controls,
            caption: line ? line.slice(7).split(' | ').map(p => p.split(' = ').slice(1).join(' = ')) : null,
            figure: img && img.complete && img.naturalWidth > 0 ? img.getAttribute('src') : null,
            status: (view.querySelector('.widget-html') || {innerText: ''}).innerText.trim()};
})"""


@dataclass
class ControlChange:
    """One change of one control and what the view showed after it."""

    view: int
    control: int
    kind: str
    before: str | None
    after: str | None
    caption: list | None
    seconds: float


class NotebookRound:
    """A user's round on a notebook: open it, Run > Run All Cells (no error output), then
    change every control of every interactive view once and wait, each time, until the view's
    figure is a new one whose caption names exactly the values the controls show.

    Any departure raises ``BrowserCheckError`` (with ``failure_png``: a screenshot).
    """

    def __init__(self, page, server: JupyterLabServer, notebook: str, *,
                 run_timeout: float = 120.0, change_timeout: float = 30.0,
                 failure_png: Path | None = None):
        self.round = SliderRound(page, server, notebook, run_timeout=run_timeout,
                                 failure_png=failure_png)
        self.page = page
        self.notebook = notebook
        self.change_timeout = change_timeout

    def views(self) -> list[dict]:
        return self.page.evaluate(_VIEWS_JS)

    def _matches(self, view: dict) -> bool:
        shown = [c["value"] for c in view["controls"]]
        return bool(view["figure"]) and view["caption"] == shown

    def wait_for_views(self, timeout: float = 15.0) -> list[dict]:
        """The views once each shows a figure matching its controls ([] if there are none)."""
        views = self.round._poll(timeout, lambda: (v := self.views()) and all(
            self._matches(x) for x in v) and v)
        if views:
            return views
        views = self.views()
        if views:
            bad = [i for i, v in enumerate(views) if not self._matches(v)]
            self.round._fail(f"views {bad} show no figure matching their controls after Run "
                             f"All: {[views[i] for i in bad]!r}"[:1500])
        return []

    def _change(self, view: int, control: int, kind: str) -> None:
        element = self.page.locator(".jp-Notebook .lalic-view").nth(view).locator(
            ".lalic-control").nth(control)
        element.scroll_into_view_if_needed()
        if kind == "slider":
            handle = element.locator(".noUi-handle").first
            handle.focus()
            handle.press("ArrowRight")
        elif kind == "dropdown":
            select = element.locator("select")
            count = select.locator("option").count()
            index = select.evaluate("s => s.selectedIndex")
            select.select_option(index=(index + 1) % count)
        elif kind == "toggle":
            element.locator(".widget-toggle-button:not(.mod-active)").first.click()
        elif kind == "checkbox":
            element.locator("input[type=checkbox]").click()
        else:
            self.round._fail(f"view {view}: control {control} is of an unknown kind")

    def change(self, view: int, control: int) -> ControlChange:
        """Change one control once; wait for the matching new figure."""
        before = self.views()[view]
        kind = before["controls"][control]["kind"]
        old_value = before["controls"][control]["value"]
        self._change(view, control, kind)
        start = time.monotonic()

        def redrawn():
            now = self.views()[view]
            moved = now["controls"][control]["value"] != old_value
            return moved and self._matches(now) and now["figure"] != before["figure"] and now

        now = self.round._poll(self.change_timeout, redrawn)
        seconds = time.monotonic() - start
        if not now:
            now = self.views()[view]
            value = now["controls"][control]["value"]
            if value == old_value:
                self.round._fail(f"view {view}: the {kind} (control {control}) did not move "
                                 f"(still {old_value!r})")
            self.round._fail(
                f"view {view}: the {kind} (control {control}) moved {old_value!r} -> {value!r} "
                f"but the figure was not redrawn to match within {self.change_timeout:.0f} s "
                f"(caption {now['caption']!r}, controls "
                f"{[c['value'] for c in now['controls']]!r}, status {now['status']!r})")
        return ControlChange(view, control, kind, old_value, now["controls"][control]["value"],
                             now["caption"], seconds)

    def output_area(self, view: int = 0):
        return self.page.locator(".jp-Notebook .lalic-view").nth(view)

    def run(self, before_png: Path | None = None, after_png: Path | None = None
            ) -> tuple[float, list[ControlChange]]:
        """Open, Run All, change every control; returns (seconds of Run All, the changes)."""
        self.round.open()
        seconds = self.round.run_all_cells()
        views = self.wait_for_views()
        if views and before_png is not None:
            self.output_area().screenshot(path=str(before_png))
        changes = [self.change(i, j) for i, view in enumerate(views)
                   for j in range(len(view["controls"]))]
        if views and after_png is not None:
            self.page.wait_for_timeout(300)
            self.output_area().screenshot(path=str(after_png))
        return seconds, changes
