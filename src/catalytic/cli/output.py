"""Formatting shared by the subcommands: progress lines on stderr and JSON on stdout."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from catalytic.events import Event, render
from catalytic.ledger.canonical import dumps
from catalytic.settings import BY_NAME, Setting

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

    def event(self, item: Event) -> None:
        """Print the line of a run's event (:mod:`catalytic.events`)."""
        self(render(item))

    def debug(self, message: str) -> None:
        if self.verbose and not self.quiet:
            sys.stderr.write(f"{PREFIX} {message}\n")


def printable(text: str) -> str:
    """``text`` on one line, always encodable: newlines, escape codes and lone surrogates (a name that is
    not UTF-8) are shown as Python escapes."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def print_json(value: Any) -> None:
    """Machine-readable output: canonical JSON on stdout."""
    sys.stdout.write(dumps(value))
    sys.stdout.flush()


@contextmanager
def stdout_to_stderr(active: bool = True) -> Iterator[None]:
    """While active, whatever is written to descriptor 1 (the command, which inherits it, and its own
    children) goes to stderr instead, so that catalytic's stdout carries its JSON alone.

    The original stdout is kept on a descriptor the command does not inherit, and put back at the end.
    """
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)  # not inheritable: the command cannot hold the summary's pipe open
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def summary_target(name: str | None) -> Path | None:
    """The file ``--json-file`` names (relative to the current directory), checked before anything runs:
    a summary that cannot be written must not be found out only after the command."""
    if name is None:
        return None
    from catalytic.errors import UsageError

    path = Path(name)
    if not name or path.is_dir() or name.endswith(os.sep):
        raise UsageError(f"--json-file {name!r}: not a file name")
    if not path.absolute().parent.is_dir():
        raise UsageError(f"--json-file {name!r}: its directory does not exist")
    return path


def add_verbosity(parser: Any) -> None:
    """The shared ``-q`` / ``-v`` flags."""
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more detail (tracebacks on errors)"
    )


def add_setting(parser: Any, setting: Setting, default: Any = None) -> None:
    """The flag(s) of a run setting (:mod:`catalytic.settings`); ``args.<name>`` is ``default`` (None:
    the flag was not given, the config file or the profile decides) unless the flag is given."""
    style = setting.style
    options: dict[str, Any] = {"dest": setting.name, "default": default, "help": setting.help}
    if style in ("store_true", "store_false"):
        options["action"] = style
    elif style == "optional":
        options["action"] = argparse.BooleanOptionalAction
    else:
        if setting.metavar:
            options["metavar"] = setting.metavar
        if setting.choices:
            options["choices"] = setting.choices
        if setting.kind == "int":
            options["type"] = int
        if style == "+":
            options["nargs"] = "+"
        elif style == "append":
            options["action"] = "append"
    parser.add_argument(*setting.flags, **options)


def add_snapshot_options(parser: Any) -> None:
    """The shared ``--jobs`` / ``--no-cache`` flags of commands that take snapshots (``args.jobs``,
    ``args.use_cache``), the run settings of the same names."""
    add_setting(parser, BY_NAME["jobs"], default=0)
    add_setting(parser, BY_NAME["use_cache"], default=True)


def check_jobs(jobs: int | None) -> None:
    """``--jobs``: a usage error (exit 2) when negative."""
    if jobs is not None and not BY_NAME["jobs"].accepts(jobs):
        from catalytic.errors import UsageError

        raise UsageError(f"--jobs must be {BY_NAME['jobs'].rule}")


class _Bar:
    """A rich progress line on stderr, shown only once a snapshot has taken a moment.

    It refreshes only when the snapshot reports progress (no refresh thread: the snapshot forks its
    hashing processes, and a fork must not copy a lock held by another thread) and disappears at the end
    of each snapshot, so nothing is drawn while the command runs.
    """

    DELAY = 0.5

    def __init__(self) -> None:
        self.start: float | None = None
        self.live: Any = None
        self.task: Any = None
        self.available = True

    def __call__(self, files: int, nbytes: int) -> None:
        if files < 0:  # the snapshot is over
            self.close()
            return
        if self.start is None:
            self.start = time.monotonic()
        if self.live is None:
            if not self.available or time.monotonic() - self.start < self.DELAY:
                return
            try:
                from rich.console import Console
                from rich.progress import Progress as RichProgress
                from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn
            except ImportError:  # the bar is a nicety: without rich, plain progress lines only
                self.available = False
                return
            self.live = RichProgress(
                SpinnerColumn(),
                TextColumn("[catalytic] snapshot: {task.fields[files]} files, {task.fields[mib]} MiB hashed"),
                TimeElapsedColumn(),
                console=Console(file=sys.stderr),
                transient=True,
                auto_refresh=False,
            )
            self.live.start()
            self.task = self.live.add_task("snapshot", files=0, mib=0)
        self.live.update(self.task, files=files, mib=nbytes >> 20, refresh=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
        self.live = None
        self.start = None


def progress_bar(args: argparse.Namespace) -> _Bar | None:
    """A snapshot progress bar when stderr is a terminal and the command is not quiet."""
    return _Bar() if sys.stderr.isatty() and not getattr(args, "quiet", False) else None


@contextmanager
def snapshot_settings(args: argparse.Namespace) -> Iterator[Any]:
    """Snapshot settings from the flags, with a progress bar when stderr is a terminal."""
    from catalytic.snapshot.domains import SnapshotSettings

    check_jobs(args.jobs)
    bar = progress_bar(args)
    try:
        yield SnapshotSettings(jobs=args.jobs, use_cache=args.use_cache, progress=bar)
    finally:
        if bar is not None:
            bar.close()
