"""Formatting shared by the subcommands: progress lines on stderr and JSON on stdout."""

from __future__ import annotations

import sys
from typing import Any

from catalytic.ledger.canonical import dumps

PREFIX = "[catalytic]"


class Progress:
    """Writes ``[catalytic] ...`` lines to stderr unless quiet."""

    def __init__(self, *, quiet: bool = False, verbose: int = 0) -> None:
        self.quiet = quiet
        self.verbose = verbose

    def __call__(self, message: str) -> None:
        if not self.quiet:
            sys.stderr.write(f"{PREFIX} {message}\n")
            sys.stderr.flush()

    def debug(self, message: str) -> None:
        if self.verbose and not self.quiet:
            sys.stderr.write(f"{PREFIX} {message}\n")


def print_json(value: Any) -> None:
    """Machine-readable output: canonical JSON on stdout."""
    sys.stdout.write(dumps(value))
    sys.stdout.flush()


def add_verbosity(parser: Any) -> None:
    """The shared ``-q`` / ``-v`` flags."""
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more detail (tracebacks on errors)"
    )
