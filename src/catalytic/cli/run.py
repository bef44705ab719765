"""``catalytic run [options] -- COMMAND [ARGS...]``: run a command under CMP-01 and write its ledger."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from catalytic.cli.locate import declaration, describe
from catalytic.cli.output import (
    Progress,
    add_setting,
    add_verbosity,
    check_jobs,
    print_json,
    progress_bar,
    stdout_to_stderr,
    summary_target,
)
from catalytic.errors import UsageError
from catalytic.ledger.canonical import json_chunks, write_output
from catalytic.policy import Policy
from catalytic.runtime import execute, prepare
from catalytic.settings import SETTINGS, overrides

#: How to give the command, for every usage error that suggests it was given some other way.
COMMAND_HINT = "put it after '--', e.g. catalytic run ... -- make build"

EPILOG = """\
exit codes: 0 restored and the command succeeded; the command's own code when it failed but the
domains were restored (its 4 is reported as 1); 4 the contract was broken: domains not restored, the
proof could not be made, an undeclared write, a declared output not produced; 2 bad declaration or
usage; 3 internal error; 126/127 command not executable / not found; 130/143 interrupted; 141
stdout closed by its reader. With --json, stdout holds the summary alone: the command's stdout goes
to stderr (--json-file FILE leaves it alone).
Settings can also live in catalytic.toml or [tool.catalytic] in pyproject.toml; flags override them.
Without --root, paths on the command line are relative to the current directory (as git's are).
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``catalytic run``."""
    p = subparsers.add_parser(
        "run",
        help="run a command under the CMP-01 contract and write a run ledger",
        description="Snapshot the catalytic domains, run COMMAND, snapshot again, verify that "
        "the domains are byte-identical, and record a run ledger.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for setting in SETTINGS:
        add_setting(p, setting)
    p.add_argument(
        "--json",
        action="store_true",
        help="print a JSON summary on stdout, alone: the command's stdout goes to stderr",
    )
    p.add_argument(
        "--json-file",
        metavar="FILE",
        help="write the JSON summary to FILE (atomically); the command's stdout is left alone",
    )
    add_verbosity(p)
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    p.set_defaults(execute=execute_cli, unrecognized_hint=f"if that is the command's, {COMMAND_HINT}")


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Settings given on the command line (None where a flag was not given), ``root`` aside (it says where
    to look for the rest: :func:`catalytic.cli.locate.found`)."""
    check_jobs(args.jobs)
    return overrides(vars(args))


def execute_cli(args: argparse.Namespace) -> int:
    """Run the command; return catalytic's exit code."""
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError(f"no command given: {COMMAND_HINT}")
    json_file = summary_target(args.json_file)
    progress = Progress(quiet=args.quiet, verbose=args.verbose)
    start = time.perf_counter()
    decl = declaration(args, overrides_from(args))
    progress(describe(decl))
    bar = progress_bar(args)
    try:
        policy, how = prepare(decl, started=start, events=progress.event, snapshot_progress=bar)
        _describe_policy(policy, progress)
        with stdout_to_stderr(args.json):
            result = execute(policy, command, how)
    finally:
        if bar is not None:
            bar.close()
    if result.command_error:
        sys.stderr.write(f"catalytic: {result.command_error}\n")
    summary = result.summary()
    if json_file is not None:
        write_output(json_file, json_chunks(summary))
    if args.json:
        print_json(summary)
    return result.exit_status


def _describe_policy(policy: Policy, progress: Progress) -> None:
    """The lines that say what preflight decided, before phase 1."""
    domains = len(policy.catalytic_domains)
    progress(
        f"Phase 0: Preflight passed: run {policy.run_id}, {domains} catalytic "
        f"domain{'s' * (domains != 1)}, {len(policy.durable_outputs)} durable outputs"
    )
    if policy.excludes:
        progress(f"Excluding ({len(policy.excludes)} patterns): {' '.join(policy.excludes)}")
    elif policy.exclude_from_gitignore:
        progress("Excluding nothing: the workspace root has no .gitignore patterns")
    if policy.isolation_requested != "none":
        why = f" ({policy.isolation_reason})" if policy.isolation_reason else ""
        progress(f"Isolation: {policy.isolation}{why}")
