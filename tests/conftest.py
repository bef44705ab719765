"""Shared fixtures for the test suite (keep this small)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty workspace root with one catalytic domain directory, ``scratch``."""
    (tmp_path / "scratch").mkdir()
    return tmp_path
