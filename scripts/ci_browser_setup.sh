#!/usr/bin/env bash
# Installs what the browser test (tests/test_browser.py, marked `browser`) needs:
#   - Debian's Chromium at /usr/bin/chromium (apt-get), when it is missing;
#   - Playwright for Python in .venv (pip), when it is missing.
# Never runs `playwright install`: the test launches the system Chromium by path.
# Idempotent and quiet. It never fails the CI: when something cannot be installed it says so
# on stderr and exits 0, and the browser test then skips with a stated reason.
set -uo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-.venv/bin/python}"
CHROMIUM="${LALIC_CHROMIUM:-/usr/bin/chromium}"

note() { echo "ci_browser_setup: $*" >&2; }

if [ ! -x "$CHROMIUM" ]; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        if [ "$(id -u)" -ne 0 ]; then
            if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
                SUDO="sudo -n"
            else
                note "chromium missing and not root (no passwordless sudo): browser test will skip"
                SUDO="unavailable"
            fi
        fi
        if [ "$SUDO" != "unavailable" ]; then
            export DEBIAN_FRONTEND=noninteractive
            if $SUDO apt-get update -qq >/dev/null 2>&1 \
                && $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; then
                note "installed chromium ($("$CHROMIUM" --version 2>/dev/null || echo '?'))"
            else
                note "apt-get could not install chromium: browser test will skip"
            fi
        fi
    else
        note "chromium missing and apt-get unavailable: browser test will skip"
    fi
fi

if [ -x "$PY" ]; then
    if ! "$PY" -c "import playwright.sync_api" >/dev/null 2>&1; then
        if "$PY" -m pip install -q playwright >/dev/null 2>&1; then
            note "installed playwright into $(dirname "$(dirname "$PY")")"
        else
            note "pip could not install playwright: browser test will skip"
        fi
    fi
else
    note "$PY not found (run 'make venv' first): playwright not installed"
fi
exit 0
