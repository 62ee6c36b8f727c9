"""environment.yml (conda) and pyproject.toml (pip) must list the same requirements."""
from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _normalise(req: str) -> str:
    return re.sub(r"\s+", "", req).replace('"', "'").lower()


def _pyproject_requirements() -> set[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"]) + list(meta["optional-dependencies"]["dev"])
    return {_normalise(r) for r in reqs}


def _environment_pip_requirements() -> tuple[str, set[str]]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    python, pip_reqs, in_pip = None, set(), False
    for line in lines:
        stripped = line.split("#", 1)[0].rstrip()
        if not stripped.strip():
            continue
        item = stripped.strip()
        if item.startswith("- python="):
            python = item[len("- python="):]
        if item == "- pip:":
            in_pip = True
            continue
        if in_pip:
            if item.startswith("- "):
                pip_reqs.add(_normalise(item[2:]))
            else:
                in_pip = False
    return python, pip_reqs


def test_environment_yml_matches_pyproject():
    python, env_reqs = _environment_pip_requirements()
    py_reqs = _pyproject_requirements()
    assert python == "3.11"
    missing = py_reqs - env_reqs
    extra = env_reqs - py_reqs
    assert not missing and not extra, (
        f"environment.yml and pyproject.toml disagree: only in pyproject: {sorted(missing)}, "
        f"only in environment.yml: {sorted(extra)}"
    )


def test_python_requirement_admits_environment_python():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["requires-python"] == ">=3.10"
