"""The workspace root, the runs root and a run's ledger, for every subcommand.

Without ``--root`` the workspace root is found as git finds a repository's
(:func:`catalytic.workspace.find_root`). Paths given on the command line are then relative to the
current directory, as git's pathspecs are: ``cd src && catalytic run --catalytic-domains tmp`` declares
``src/tmp``. With ``--root`` they are relative to that root. Paths in the config file are always
relative to the root.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from catalytic import settings
from catalytic.errors import RunInProgress, UsageError
from catalytic.ledger import format as fmt
from catalytic.policy import Declaration, checked_runs_root, declare
from catalytic.workspace import Found, find_root, given

#: The settings that name paths (the ones :func:`from_cwd` turns into paths relative to the root).
PATH_SETTINGS = tuple(s.name for s in settings.SETTINGS if s.path)

ROOT_HELP = settings.ROOT_HELP


def add_location(parser: argparse.ArgumentParser) -> None:
    """The shared ``--root`` and ``--runs-root`` flags."""
    parser.add_argument("--root", metavar="DIR", help=ROOT_HELP)
    parser.add_argument(
        "--runs-root",
        metavar="PATH",
        help="where ledgers are (default from the config, else the profile's)",
    )


def found(args: argparse.Namespace) -> Found:
    """The workspace root the flags name, or the one found from the current directory."""
    root = getattr(args, "root", None)
    return given(root) if root else find_root()


def from_cwd(where: Found, value: str) -> str:
    """A path given on the command line, as a path relative to the workspace root ``where`` (or absolute):
    relative to the current directory unless the root was named with ``--root``."""
    if where.found_by == "given" or os.path.isabs(value) or not value:
        return value
    here = Path.cwd()
    if here == where.root:
        return value
    return os.path.normpath(os.path.join(os.path.relpath(here, where.root), value)).replace(os.sep, "/")


def flags_from_cwd(where: Found, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` with every path setting given (:data:`PATH_SETTINGS`) made relative to the root."""
    result = dict(overrides)
    for key in PATH_SETTINGS:
        value = result.get(key)
        if isinstance(value, str):
            result[key] = from_cwd(where, value)
        elif isinstance(value, Sequence):
            result[key] = [from_cwd(where, v) for v in value]
    return result


def declaration(args: argparse.Namespace, overrides: Mapping[str, Any]) -> Declaration:
    """The declaration of the config file at the workspace root and the flags ``overrides``."""
    where = found(args)
    return declare(where.root, flags_from_cwd(where, overrides), found_by=where.found_by)


def describe(decl: Declaration) -> str:
    """One line saying which workspace root and profile apply (the commands' first progress line)."""
    how = {
        "given": "given with --root",
        "cwd": "the current directory: no config or repository above it",
        ".git": "the repository's top level",
    }.get(decl.found_by, f"found by its {decl.found_by}")
    return f"Workspace: {decl.root} ({how}); profile {decl.profile}"


def workspace(
    args: argparse.Namespace, *, checked: bool = False, say: Callable[[str], None] | None = None
) -> tuple[Path, Path]:
    """The workspace root and the runs root named by the flags and the config file; ``checked`` (for the
    commands that change a runs root) holds the runs root to the rule ``catalytic run`` applies; ``say``
    receives the line naming the root (:func:`describe`)."""
    decl = declaration(args, {"runs_root": getattr(args, "runs_root", None)})
    if say is not None:
        say(describe(decl))
    if checked:
        return decl.root, checked_runs_root(decl)
    return decl.root, decl.root / decl.runs_root


def runs_root(args: argparse.Namespace) -> Path:
    """The runs root named by the flags and the config file."""
    return workspace(args)[1]


def ledger_dir(args: argparse.Namespace, run: str) -> Path:
    """A run's ledger: ``run`` is a run id in the runs root or a path to a ledger directory."""
    candidate = Path(run)
    if (candidate / fmt.RUN_INFO).is_file():
        return finished(candidate)
    directory = runs_root(args) / run
    if not directory.is_dir():
        raise UsageError(f"no ledger for run {run!r} in {directory.parent}", code="NO_SUCH_RUN")
    return finished(directory)


def finished(directory: Path) -> Path:
    """``directory``, a ledger no catalytic run is writing now (:class:`RunInProgress` otherwise: its
    half-written documents are no run's record yet)."""
    from catalytic.locks import IN_PROGRESS, in_progress

    if in_progress(directory.parent, directory.name):
        raise RunInProgress(IN_PROGRESS.format(run=directory.name))
    return directory
