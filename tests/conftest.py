"""Shared fixtures for the test suite (keep this small)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty workspace root with one catalytic domain directory, ``scratch``."""
    (tmp_path / "scratch").mkdir()
    return tmp_path


@pytest.fixture
def seed_layout(tmp_path: Path) -> Path:
    """``tmp_path`` laid out like the seed's project (it holds ``CONTRACTS/``): the ``cmp01-seed`` profile
    applies there, so ledgers go to ``CONTRACTS/_runs`` and its allowed and forbidden paths hold."""
    (tmp_path / "CONTRACTS").mkdir(exist_ok=True)
    return tmp_path
