"""Shared fixtures for the test suite (keep this small)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Frames the code under a deep-tree test may use on top of the test's own stack (pickling a worker's
#: nested answers recurses a bounded number of levels).
_HEADROOM = 250


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


@pytest.fixture
def past_recursion_limit() -> Iterator[int]:
    """A directory depth half again past Python's recursion limit, lowered for this test to what the test
    and the code under it need at the most: code that recursed once per directory level fails here exactly
    as it would on a tree deeper than the default limit, on a tree a few times shallower (the deep-tree
    tests are quadratic in depth: every path below is resolved level by level). Worker processes are
    forked, so they inherit the lowered limit."""
    frame, stack = sys._getframe(), 0
    while frame is not None:
        frame, stack = frame.f_back, stack + 1
    before = sys.getrecursionlimit()
    limit = stack + _HEADROOM
    sys.setrecursionlimit(limit)
    try:
        yield limit * 3 // 2
    finally:
        sys.setrecursionlimit(before)
