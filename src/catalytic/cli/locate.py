"""Finding the runs root and a run's ledger from the shared ``--root`` / ``--runs-root`` flags."""

from __future__ import annotations

import argparse
from pathlib import Path

from catalytic.errors import UsageError
from catalytic.ledger import format as fmt
from catalytic.policy import checked_runs_root, declare


def add_location(parser: argparse.ArgumentParser) -> None:
    """The shared ``--root`` and ``--runs-root`` flags."""
    parser.add_argument("--root", metavar="DIR", help="workspace root (default: current directory)")
    parser.add_argument(
        "--runs-root",
        metavar="PATH",
        help="where ledgers are (default from the config, else CONTRACTS/_runs)",
    )


def workspace(args: argparse.Namespace, *, checked: bool = False) -> tuple[Path, Path]:
    """The workspace root and the runs root named by the flags and the config file; ``checked`` (for the
    commands that change a runs root) holds the runs root to the rule ``catalytic run`` applies."""
    root = Path(args.root) if args.root else Path.cwd()
    # ``validate --all`` names its runs root itself, so it has no --runs-root flag.
    decl = declare(root, {"runs_root": getattr(args, "runs_root", None)})
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
        return candidate
    directory = runs_root(args) / run
    if not directory.is_dir():
        raise UsageError(f"no ledger for run {run!r} in {directory.parent}", code="NO_SUCH_RUN")
    return directory
