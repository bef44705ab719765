"""``catalytic run [options] -- COMMAND [ARGS...]``: run a command under CMP-01 and write its ledger."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from catalytic.cli.locate import ROOT_HELP, declaration, describe
from catalytic.cli.output import (
    Progress,
    add_snapshot_options,
    add_verbosity,
    print_json,
    snapshot_settings,
    stdout_to_stderr,
    summary_target,
)
from catalytic.errors import UsageError
from catalytic.isolation import ISOLATION_CHOICES, Options
from catalytic.ledger.canonical import json_chunks, write_output
from catalytic.ledger.format import DETERMINISM_VALUES
from catalytic.policy import preflight
from catalytic.profiles import PROFILE_NAMES
from catalytic.runtime import execute
from catalytic.snapshot.digest import HASH_NAMES
from catalytic.trace import BACKEND_NAMES, SCOPES

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
    p.add_argument("--run-id", help="ledger directory name (default: generated, sortable by time)")
    p.add_argument(
        "--catalytic-domains",
        nargs="+",
        metavar="PATH",
        help="scratch directories the command must leave byte-for-byte as it found them",
    )
    p.add_argument(
        "--durable-outputs",
        nargs="+",
        metavar="PATH",
        help="files or directories the command may create; must be under an allowed root",
    )
    p.add_argument(
        "--allow-absent",
        action="store_true",
        default=None,
        help="accept domains that do not exist yet (recorded as absent); otherwise preflight fails (ABSENT)",
    )
    p.add_argument(
        "--allow-no-domains",
        action="store_true",
        default=None,
        help="accept a run without any catalytic domain; otherwise preflight fails (NO_DOMAINS)",
    )
    p.add_argument(
        "--allow-missing-outputs",
        action="store_true",
        default=None,
        help="a declared output the command did not produce is recorded, not a failure "
        "(otherwise a successful command that leaves one missing fails with OUTPUT_NOT_PRODUCED)",
    )
    p.add_argument("--intent", help="one line saying what the run is for")
    p.add_argument("--determinism", choices=DETERMINISM_VALUES, help="declared determinism")
    p.add_argument("--allowed-roots", nargs="+", metavar="PATH", help="where durable outputs may go")
    p.add_argument(
        "--forbidden-paths",
        nargs="+",
        metavar="PATH",
        help="paths no domain or output may overlap (.git is always forbidden)",
    )
    p.add_argument(
        "--runs-root",
        metavar="PATH",
        help="where ledgers go (default: the profile's, .catalytic/runs or CONTRACTS/_runs)",
    )
    p.add_argument(
        "--profile",
        choices=PROFILE_NAMES,
        help="defaults for what the config does not say (default: cmp01-seed in a workspace with "
        "CONTRACTS/ or CORTEX/, else default); see README",
    )
    p.add_argument("--root", metavar="DIR", help=ROOT_HELP)
    p.add_argument("--hash", choices=HASH_NAMES, help="digest for files (default sha256)")
    p.add_argument(
        "--exclude",
        action="append",
        metavar="PATTERN",
        help="leave out paths matching this gitignore-style pattern, relative to the workspace root "
        "(repeatable; e.g. __pycache__/); see docs/excludes.md",
    )
    p.add_argument(
        "--exclude-from-gitignore",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also leave out what the workspace root's .gitignore lists",
    )
    add_snapshot_options(p)
    p.add_argument(
        "--sign-key",
        metavar="PREFIX",
        help="sign the ledger digest with this Ed25519 private key (from catalytic keygen)",
    )
    p.add_argument(
        "--isolation",
        choices=ISOLATION_CHOICES,
        help="none (default: run on the real tree, verify after), rollback (save the pre-state, put it "
        "back if dirty), overlay (Linux: run on an overlay, commit outputs after the proof), auto",
    )
    p.add_argument(
        "--rollback-on-failure",
        action="store_true",
        help="rollback: also put everything back when the command fails",
    )
    p.add_argument(
        "--discard",
        action="store_true",
        help="overlay: drop the write set of a failed run instead of keeping it under quarantine/",
    )
    p.add_argument(
        "--check-determinism",
        action="store_true",
        help="overlay, deterministic runs: run twice, each in its own overlay; fail if outputs differ",
    )
    p.add_argument(
        "--trace",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="record every write (path, op, time, process) in WRITE_LOG.json; see docs/tracing.md",
    )
    p.add_argument(
        "--trace-scope",
        choices=SCOPES,
        help="trace the catalytic domains (default) or the whole workspace minus the runs root",
    )
    p.add_argument(
        "--trace-backend",
        choices=BACKEND_NAMES,
        help="tracing backend (default auto: fanotify if permitted, else watchdog/inotify)",
    )
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
    """Settings given on the command line (None where a flag was not given)."""
    return {
        "run_id": args.run_id,
        "catalytic_domains": args.catalytic_domains,
        "durable_outputs": args.durable_outputs,
        "intent": args.intent,
        "determinism": args.determinism,
        "allowed_roots": args.allowed_roots,
        "forbidden_paths": args.forbidden_paths,
        "runs_root": args.runs_root,
        "profile": args.profile,
        "hash": args.hash,
        "isolation": args.isolation,
        "trace": args.trace,
        "trace_scope": args.trace_scope,
        "trace_backend": args.trace_backend,
        "exclude": args.exclude,
        "exclude_from_gitignore": args.exclude_from_gitignore,
        "allow_absent": args.allow_absent,
        "allow_no_domains": args.allow_no_domains,
        "allow_missing_outputs": args.allow_missing_outputs,
    }


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
    policy = preflight(decl)
    if args.check_determinism and (policy.isolation != "overlay" or policy.determinism != "deterministic"):
        raise UsageError(
            "--check-determinism needs --isolation overlay (or auto resolving to it) and a run "
            f"declared deterministic (this one: {policy.isolation}, {policy.determinism})"
        )
    sign_key = None
    if args.sign_key:
        from catalytic.integrations.signing import load_signing_key

        sign_key = load_signing_key(args.sign_key)
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
    options = Options(
        rollback_on_failure=args.rollback_on_failure,
        discard=args.discard,
        check_determinism=args.check_determinism,
    )
    with snapshot_settings(args) as settings, stdout_to_stderr(args.json):
        result = execute(
            policy,
            command,
            progress=progress,
            preflight_seconds=time.perf_counter() - start,
            options=options,
            snapshots=settings,
            sign_key=sign_key,
        )
    if result.command_error:
        sys.stderr.write(f"catalytic: {result.command_error}\n")
    summary = result.summary()
    if json_file is not None:
        write_output(json_file, json_chunks(summary))
    if args.json:
        print_json(summary)
    return result.exit_status
