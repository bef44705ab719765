"""Finding the workspace root from where a command is run, as git, ruff and pytest find theirs.

From the starting directory upward, the first directory that holds ``catalytic.toml`` or a
``pyproject.toml`` with a ``[tool.catalytic]`` table is the root. The search stops at the top level of
the repository (the nearest directory holding ``.git``): with no config up to there, that directory is
the root (a config above the repository never captures it). Outside any repository, with no config
found up to the file system's root, the starting directory is the root. The search
never reads a file it does not need: a ``pyproject.toml`` is parsed only to look for the table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

CONFIG_FILE = "catalytic.toml"


class Found(NamedTuple):
    """A workspace root and why it was chosen (``catalytic.toml``, ``pyproject.toml``, ``.git`` or ``cwd``;
    ``given`` when the user named it with ``--root`` or the caller passed it)."""

    root: Path
    found_by: str


def has_table(pyproject: Path) -> bool:
    """Whether ``pyproject`` has a ``[tool.catalytic]`` table (an unreadable file counts as one: loading
    the config then reports what is wrong with it, instead of the search silently passing it by)."""
    try:
        data = pyproject.read_bytes()
    except OSError:
        return False
    if b"catalytic" not in data:
        return False
    import tomllib

    try:
        tool = tomllib.loads(data.decode("utf-8")).get("tool", {})
    except (ValueError, RecursionError):
        return True
    return isinstance(tool, dict) and "catalytic" in tool


def find_root(start: Path | None = None) -> Found:
    """The workspace root for a command run in ``start`` (default: the current directory)."""
    here = Path(os.path.abspath(start if start is not None else Path.cwd()))
    for directory in (here, *here.parents):
        if (directory / CONFIG_FILE).is_file():
            return Found(directory, CONFIG_FILE)
        pyproject = directory / "pyproject.toml"
        if pyproject.is_file() and has_table(pyproject):
            return Found(directory, "pyproject.toml")
        if os.path.lexists(directory / ".git"):
            return Found(directory, ".git")
    return Found(here, "cwd")


def given(root: str | os.PathLike[str]) -> Found:
    """A root named with ``--root``."""
    return Found(Path(root), "given")
