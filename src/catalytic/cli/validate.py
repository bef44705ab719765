"""``catalytic validate``: re-check run ledgers offline and print the seed's PASS / FAIL blocks.

Exit codes: 0 every run passed; 1 at least one run failed, including a ``--run-dir`` that does not
exist (it is reported as a FAIL with the code ``NOT_FOUND``, so one bad path never hides the other
runs); 2 usage problems: bad flags, an ``--all`` runs root that does not exist or holds no runs.

``--all`` takes the runs root as ``catalytic run --runs-root`` does (relative to ``--root``, or without
it to the current directory; by default the config's, else the profile's, under the workspace root); every
entry in it whose name does not start with ``_`` or ``.`` is a run (except the chain ``LEDGER.jsonl``,
which ``--all`` checks too). In a runs root with a chain, a run the chain does not name fails
(UNCHAINED). ``--run-dir`` paths are relative to the current directory.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from catalytic.cli.locate import ROOT_HELP
from catalytic.cli.output import Progress, add_verbosity, print_json, printable
from catalytic.errors import EXIT_DIRTY, EXIT_OK, UsageError
from catalytic.ledger.format import CHAIN_FILE

PREFIX = "[catalytic-validator]"

EPILOG = """\
exit codes: 0 every run passed; 1 at least one run failed (a --run-dir that does not exist is a FAIL
with NOT_FOUND) or the LEDGER.jsonl chain is broken; 2 usage problems (including an --all runs root
that is missing or empty, or an unreadable --trusted-key).

A run fails when its command did not exit 0 (COMMAND_FAILED; --allow-command-failure) or left a
declared output missing (OUTPUT_NOT_PRODUCED; --allow-missing-outputs). With --all, an output is
compared with the disk only in the latest run that produced it: earlier runs' records of it are
superseded (said in their PASS block), not failed.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``catalytic validate``."""
    p = subparsers.add_parser(
        "validate",
        help="re-check run ledgers offline (CI)",
        description="Check run ledgers: every file present and schema-valid, the restoration proof "
        "recomputed from the manifests, STATUS honest, outputs under allowed roots and unchanged.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run-dir", nargs="+", metavar="DIR", help="ledger directories to check")
    which.add_argument(
        "--all",
        nargs="?",
        const="",
        metavar="RUNS_ROOT",
        help="check every run under RUNS_ROOT (relative to the current directory; default: the runs root "
        "of the config, else the profile's, under the workspace root)",
    )
    p.add_argument("--root", metavar="DIR", help="workspace root the outputs are checked in; " + ROOT_HELP)
    p.add_argument(
        "--no-outputs-check",
        dest="check_outputs",
        action="store_false",
        help="do not compare the outputs with the files on disk",
    )
    p.add_argument(
        "--allowed-roots",
        nargs="+",
        metavar="PATH",
        help="where outputs may be (default: the ledger's allowed_roots, else the seed's roots)",
    )
    p.add_argument(
        "--trusted-key",
        action="append",
        metavar="PUBKEY",
        help="every ledger must carry a valid signature by this Ed25519 public key (repeatable: any of them)",
    )
    p.add_argument(
        "--require-seal",
        action="store_true",
        help="fail ledgers without LEDGER_DIGEST.json (ledgers of the seed and of older versions have none)",
    )
    p.add_argument(
        "--anchor",
        metavar="FILE",
        help="with --all: an earlier copy of LEDGER.jsonl (from git or CI); the chain must extend it",
    )
    p.add_argument(
        "--no-chain-check",
        dest="check_chain",
        action="store_false",
        help="with --all: do not check the LEDGER.jsonl hash chain",
    )
    p.add_argument(
        "--allow-command-failure",
        action="store_true",
        help="pass runs whose command did not exit 0 (otherwise they fail with COMMAND_FAILED)",
    )
    p.add_argument(
        "--allow-missing-outputs",
        action="store_true",
        help="pass runs that left a declared output missing (otherwise OUTPUT_NOT_PRODUCED, unless the "
        "run itself was allowed to: run --allow-missing-outputs)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document with every report")
    add_verbosity(p)
    p.set_defaults(execute=execute)


def find_runs(runs_root: Path) -> list[Path]:
    """Every run under ``runs_root``, sorted by name: every entry but catalytic's own (``_cache``, ...)."""
    try:
        names = os.listdir(runs_root)
    except FileNotFoundError:
        raise UsageError(f"runs root {str(runs_root)!r} does not exist", code="NOT_FOUND") from None
    except OSError as exc:
        raise UsageError(f"runs root {str(runs_root)!r} cannot be read: {exc.strerror}") from None
    from catalytic.ledger.chain import is_run_name

    runs = sorted(runs_root / n for n in names if is_run_name(n))
    if not runs:
        raise UsageError(f"no runs under {str(runs_root)!r}: nothing to validate", code="NO_RUNS")
    return runs


def format_report(report: dict[str, object], *, verbose: int = 0) -> list[str]:
    """The seed's block for one report: a PASS / FAIL line, then indented detail lines."""
    run_id = printable(str(report["run_id"]))
    if report["passed"]:
        lines = [
            f"{PREFIX} PASS: {run_id}",
            f"  Intent: {printable(str(report['intent']))}",
            f"  Exit code: {report['exit_code']}",
            f"  Outputs: {report['outputs']}",
        ]
        superseded = report.get("superseded") or []
        assert isinstance(superseded, list)
        if superseded:
            later = sorted({str(e["by"]) for e in superseded})
            lines.append(
                f"  Superseded: {len(superseded)} output(s) produced again by a later run "
                f"({printable(', '.join(later))}), checked there"
            )
    else:
        lines = [f"{PREFIX} FAIL: {run_id}"]
        errors = report["errors"]
        assert isinstance(errors, list)
        lines += [f"  {printable(e['code'])}: {printable(e['message'])}" for e in errors]
    if verbose:
        lines.append(f"  Run dir: {printable(str(report['run_dir']))}")
    return lines


def execute(args: argparse.Namespace) -> int:
    """Validate the selected runs; print one block each (or JSON); return the exit code."""
    from catalytic.validate import CatalyticLedgerValidator

    progress = Progress(quiet=args.quiet, verbose=args.verbose)
    root = Path(args.root) if args.root else None
    trusted = []
    if args.trusted_key:
        from catalytic.integrations.signing import load_public_key

        trusted = [load_public_key(k) for k in args.trusted_key]
    runs_root: Path | None = None
    if args.run_dir is not None:
        run_dirs = [Path(d) for d in args.run_dir]
    else:
        from catalytic.cli.locate import declaration, describe

        # The runs root as `catalytic run` finds it: the config's, else the profile's.
        decl = declaration(args, {"runs_root": args.all or None})
        progress(describe(decl))
        runs_root = decl.root / decl.runs_root
        run_dirs = find_runs(runs_root)
    known = None
    if runs_root is not None and args.check_chain:
        from catalytic.ledger.chain import known_runs

        known = known_runs(runs_root)
    superseded: dict[Path, dict[str, str]] = {}
    if runs_root is not None and args.check_outputs:
        from catalytic.validate import latest_producers

        superseded = latest_producers(run_dirs)
    reports = []
    for run_dir in run_dirs:
        progress.debug(f"validating {run_dir}")
        validator = CatalyticLedgerValidator(
            run_dir,
            root=root,
            check_outputs=args.check_outputs,
            allowed_roots=args.allowed_roots,
            trusted_keys=trusted,
            require_seal=args.require_seal,
            # --all checks the whole chain once (each run asking it again would cost runs x chain lines).
            chain_beside=runs_root is None,
            chain_known=known,
            superseded=superseded.get(run_dir),
            allow_command_failure=args.allow_command_failure,
            allow_missing_outputs=args.allow_missing_outputs,
        )
        _, report = validator.validate()
        reports.append(report)
    failed = [r for r in reports if not r["passed"]]
    chain_errors: list[dict[str, str]] = []
    if runs_root is not None and args.check_chain:
        from catalytic.ledger.integrity import check_chain

        found = check_chain(runs_root)
        if args.anchor:
            from catalytic.ledger.integrity import check_anchor

            try:
                anchor = Path(args.anchor).read_bytes()
            except OSError as exc:
                raise UsageError(f"cannot read the anchor {args.anchor}: {exc.strerror}") from None
            found += check_anchor(runs_root, anchor)
        chain_errors = [{"code": p.code, "message": p.message} for p in found]
    if args.json:
        document: dict[str, object] = {"passed": not failed and not chain_errors, "reports": reports}
        if runs_root is not None and args.check_chain:
            document["chain"] = {"passed": not chain_errors, "errors": chain_errors}
        print_json(document)
    else:
        for report in reports:
            if report["passed"] and args.quiet:
                continue
            sys.stdout.write("\n".join(format_report(dict(report), verbose=args.verbose)) + "\n")
        sys.stdout.flush()
        if chain_errors:
            sys.stdout.write(f"{PREFIX} FAIL: chain {CHAIN_FILE}\n")
            for e in chain_errors:
                sys.stdout.write(f"  {printable(e['code'])}: {printable(e['message'])}\n")
        elif (
            runs_root is not None
            and args.check_chain
            and not args.quiet
            and (runs_root / CHAIN_FILE).exists()
        ):
            sys.stdout.write(f"{PREFIX} PASS: chain {CHAIN_FILE}\n")
        progress(f"{len(reports)} run(s): {len(reports) - len(failed)} passed, {len(failed)} failed")
    return EXIT_DIRTY if failed or chain_errors else EXIT_OK
