"""The ``catalytic`` command line: a thin layer over the library.

Each subcommand is one module with ``add_parser(subparsers)`` and ``execute(args) -> int``; they are
listed in :data:`SUBCOMMANDS`. This is the one place that turns errors into messages and exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, cast

from catalytic import __version__
from catalytic.errors import EXIT_INTERNAL, EXIT_PIPE, EXIT_USAGE, CatalyticError

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

#: Subcommand name -> module under ``catalytic.cli``.
SUBCOMMANDS: dict[str, str] = {
    "run": "catalytic.cli.run",
    "init": "catalytic.cli.init",
    "validate": "catalytic.cli.validate",
    "snapshot": "catalytic.cli.snapshot",
    "diff": "catalytic.cli.diff",
    "restore": "catalytic.cli.restore",
    "gc": "catalytic.cli.gc",
    "show": "catalytic.cli.show",
    "runs": "catalytic.cli.runs",
    "export": "catalytic.cli.export",
    "keygen": "catalytic.cli.keygen",
    "completion": "catalytic.cli.completion",
}


class Subcommand(Protocol):
    def add_parser(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        """Register the subcommand's parser (with ``set_defaults(execute=...)``)."""

    def execute(self, args: argparse.Namespace) -> int:
        """Run the subcommand; return the exit code."""


def _help_width() -> int:
    """The width argparse's formatter picks by default: ``shutil.get_terminal_size().columns - 2``."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
        columns = columns or 80
    return columns - 2


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors exit with catalytic's code 2 and one clear line."""

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse builds a formatter for every add_argument() (to check the metavar); the default
        # width would import shutil each run (~2 ms) for a value only help output uses.
        factory = cast(Any, self.formatter_class)  # typeshed's protocol omits ``width``
        return cast(argparse.HelpFormatter, factory(prog=self.prog, width=_help_width()))

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        # argparse ignores a failed write (help into a closed pipe); main() maps it like any other.
        if message:
            (file or sys.stderr).write(message)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"catalytic: error: USAGE: {message}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full argument parser (also used to generate and check the docs).

    With ``only``, just that subcommand is registered: importing every subcommand's module costs tens of
    milliseconds, which a short ``catalytic run`` should not pay.
    """
    parser = _Parser(
        prog="catalytic",
        description="Run any command and prove what it did to the filesystem (CMP-01).",
    )
    parser.add_argument("--version", action="version", version=f"catalytic {__version__}")
    subparsers = parser.add_subparsers(dest="subcommand", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name, module_name in SUBCOMMANDS.items():
        if only is not None and name != only:
            continue
        module = cast(Subcommand, importlib.import_module(module_name))
        module.add_parser(cast("argparse._SubParsersAction[argparse.ArgumentParser]", subparsers))
    return parser


def exit_process(code: int) -> NoReturn:
    """End the ``catalytic`` process with ``code``, skipping the interpreter's teardown.

    Freeing every module and object at exit costs a run ~8 ms of CPU (measured on an empty domain)
    for nothing the kernel does not do anyway when the process ends. So stdout and stderr are flushed
    and the ``atexit`` handlers run, as at a normal exit, then ``os._exit``. When anything is
    unusual (another thread still running, a stream that cannot be flushed) the process leaves the
    normal way. Only for the process's own entry points: never call it from library code or tests.
    """
    if code == EXIT_PIPE:
        _drop_stdout()
    threading = sys.modules.get("threading")
    if threading is None or threading.active_count() == 1:
        try:
            import atexit

            sys.stdout.flush()
            sys.stderr.flush()
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # leave the normal way, which reports the problem as usual
            raise SystemExit(code) from None
        os._exit(code)
    raise SystemExit(code)


def _drop_stdout() -> None:
    """Point stdout at the null device: its reader has gone, and what is still buffered must not fail
    again when the interpreter flushes it on the way out (Python's recipe for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (AttributeError, ValueError, OSError):
        pass


def stdout_closed() -> bool:
    """Whether the reader of stdout has gone (a pipe or socket whose other end is closed)."""
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, 0)  # POLLERR and POLLHUP are reported whatever is asked for
        events = poller.poll(0)
    except (AttributeError, ValueError, OSError):  # no stdout, no descriptor, or no poll()
        return False
    return any(mask & (select.POLLERR | select.POLLHUP) for _fd, mask in events)


def console() -> NoReturn:
    """The process entry point (``python -m catalytic``): :func:`main`, then :func:`exit_process`."""
    exit_process(main())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``catalytic`` command; returns the exit code.

    A reader that closes stdout early (``catalytic runs | head -1``) ends the command quietly with
    :data:`~catalytic.errors.EXIT_PIPE`, as SIGPIPE would; any other broken pipe is an internal error.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    first = args_list[0] if args_list else None
    parser = build_parser(first if first in SUBCOMMANDS else None)
    verbose = 0
    try:
        if not args_list:
            # A bare `catalytic`: list the commands (an error, so on stderr with the usage code).
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        try:
            args, extras = parser.parse_known_args(args_list)
            if extras:
                hint = getattr(args, "unrecognized_hint", None)
                parser.error(f"unrecognized arguments: {' '.join(extras)}" + (f" ({hint})" if hint else ""))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else EXIT_USAGE
        else:
            verbose = getattr(args, "verbose", 0)
            code = int(args.execute(args))
        # Output still buffered meets a closed pipe here, where it is mapped, not at exit.
        sys.stdout.flush()
        return code
    except CatalyticError as exc:
        for line in exc.lines():
            sys.stderr.write(f"catalytic: error: {line}\n")
        if verbose:
            import traceback

            traceback.print_exc()
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("catalytic: interrupted\n")
        return 130
    except BrokenPipeError as exc:
        if stdout_closed():
            return EXIT_PIPE
        return _internal_error(exc, verbose)
    except Exception as exc:
        return _internal_error(exc, verbose)


def _internal_error(exc: Exception, verbose: int) -> int:
    sys.stderr.write(f"catalytic: internal error: {type(exc).__name__}: {exc}\n")
    if verbose:
        import traceback

        traceback.print_exc()
    else:
        sys.stderr.write("catalytic: run again with -v for the traceback\n")
    return EXIT_INTERNAL
