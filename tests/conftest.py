"""Shared pytest fixtures.

Tests that read the project's shared data (``../shared`` beside the repository root: Kodak,
train/val photos, published RD points, the official state-dict listing) use the fixtures
below, which skip with a stated reason when that folder is absent (e.g. a user's clone).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("LALIC_SHARED_DIR", REPO_ROOT.parent / "shared"))


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (the project's shared data folder is absent)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED_DIR, "shared data folder")


@pytest.fixture(scope="session")
def kodak_dir() -> Path:
    return _require(SHARED_DIR / "data" / "kodak", "Kodak images")


@pytest.fixture(scope="session")
def rd_dir() -> Path:
    return _require(SHARED_DIR / "data" / "rd", "published RD points")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return _require(SHARED_DIR / "reference", "reference facts")
