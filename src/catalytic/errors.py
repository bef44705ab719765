"""The one error hierarchy of catalytic: every failure the library raises is a ``CatalyticError``.

Each error carries a stable ``code`` (what rule was broken) and the exit code the CLI uses for it, so
the command line has exactly one place that turns errors into messages and exit codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

#: Exit codes of the ``catalytic`` command (documented in the README).
EXIT_OK = 0
EXIT_DIRTY = 1
#: ``catalytic run``: the run failed CMP-01 (domains not restored, restoration unprovable, or a rule broken
#: after the proof). No command's own code is reported as 4: a command that exits 4 is reported as 1.
EXIT_NOT_RESTORED = 4
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
#: stdout was closed by its reader (`catalytic runs | head -0`): as a process killed by SIGPIPE reports it.
EXIT_PIPE = 141


class CatalyticError(Exception):
    """Base class of every error catalytic raises on purpose."""

    code: str = "ERROR"
    exit_code: int = EXIT_INTERNAL

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def lines(self) -> list[str]:
        """One line per problem, each naming its code."""
        return [f"{self.code}: {self.message}"]


class Problem(NamedTuple):
    """One broken rule found by preflight: a stable code and a message naming the path."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class DeclarationError(CatalyticError):
    """The CMP-01 declaration (flags or config file) is invalid; nothing was run or written."""

    code = "DECLARATION"
    exit_code = EXIT_USAGE

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        first = self.problems[0] if self.problems else Problem("DECLARATION", "invalid")
        super().__init__(first.message, code=first.code)

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems]


class ConfigError(CatalyticError):
    """A configuration file could not be read or holds an unknown key or a wrong type."""

    code = "BAD_CONFIG"
    exit_code = EXIT_USAGE


class UsageError(CatalyticError):
    """The command line itself is wrong (missing command, conflicting options)."""

    code = "USAGE"
    exit_code = EXIT_USAGE


class SnapshotError(CatalyticError):
    """A domain could not be snapshotted reliably (unreadable, vanished, changing while read)."""

    code = "SNAPSHOT"
    exit_code = EXIT_DIRTY

    def __init__(self, message: str, *, path: str, code: str = "SNAPSHOT") -> None:
        super().__init__(f"{path}: {message}", code=code)
        self.path = path


class LedgerError(CatalyticError):
    """The run ledger could not be written or read."""

    code = "LEDGER"
    exit_code = EXIT_INTERNAL


class DocumentError(CatalyticError):
    """A file catalytic reads (ledger document, manifest, chain, config) is unreadable, not strict JSON,
    or not the shape its schema says; the code says which (``BAD_FILE``, ``BAD_JSON``, ``SCHEMA``)."""

    code = "BAD_DOCUMENT"
    exit_code = EXIT_USAGE


class LingeringError(CatalyticError):
    """Processes the command started were still running after it exited; no proof is possible."""

    code = "LINGERING"
    exit_code = EXIT_DIRTY


class DomainMovedError(CatalyticError):
    """A domain, or a directory above it, was moved or replaced during the run; no proof is possible."""

    code = "DOMAIN_MOVED"
    exit_code = EXIT_DIRTY


class ForeignLedgerError(CatalyticError):
    """Something other than catalytic wrote into, or replaced, the run's own ledger directory."""

    code = "LEDGER_FOREIGN"
    exit_code = EXIT_DIRTY


class OutputEscapedError(CatalyticError):
    """A declared output is reached through a symlink: it may lie outside its allowed root (CMP-01, 2)."""

    code = "OUTPUT_ESCAPED"
    exit_code = EXIT_DIRTY


class OutputNotProducedError(CatalyticError):
    """A command that succeeded left a declared output missing (unless ``allow_missing_outputs``)."""

    code = "OUTPUT_NOT_PRODUCED"
    exit_code = EXIT_NOT_RESTORED


class UndeclaredWriteError(CatalyticError):
    """A trace of the whole workspace recorded writes outside the domains and outputs (CMP-01, 1)."""

    code = "UNDECLARED_WRITE"
    exit_code = EXIT_NOT_RESTORED


class LockedError(CatalyticError):
    """Another run holds a catalytic domain that overlaps one of this run's; nothing was run."""

    code = "LOCKED"
    exit_code = EXIT_USAGE


class RunInProgress(CatalyticError):
    """A reader of ledgers was asked for a run whose ledger a catalytic run is writing now."""

    code = "RUN_IN_PROGRESS"
    exit_code = EXIT_DIRTY


class RunInterrupted(CatalyticError):
    """The runtime received SIGINT or SIGTERM outside the child's lifetime."""

    code = "INTERRUPTED"

    def __init__(self, signum: int) -> None:
        import signal

        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}")
        self.signum = signum
        self.exit_code = 128 + signum


class TraceUnavailable(CatalyticError):
    """A write-tracing backend cannot run here (missing module, privilege or kernel feature)."""

    code = "TRACE_UNAVAILABLE"
    exit_code = EXIT_USAGE
