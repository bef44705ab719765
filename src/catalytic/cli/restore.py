"""``catalytic restore RUN_ID``: put domains back to a run's pre-state from the content-addressed store."""

from __future__ import annotations

import argparse
import sys

from catalytic.cli.locate import add_location, workspace
from catalytic.cli.output import Progress, add_verbosity, print_json
from catalytic.errors import EXIT_DIRTY, EXIT_OK, UsageError


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``catalytic restore``."""
    p = subparsers.add_parser(
        "restore",
        help="put catalytic domains back to a run's pre-state (runs made with --isolation rollback)",
        description="Restore the catalytic domains (and with --outputs the declared outputs) of a run "
        "to what they held before it ran, from the store under <runs root>/_store, then prove it "
        "with a fresh snapshot; a tree whose path leads through a symlink is refused. Exit 0 when proven "
        "(or on --dry-run), 1 otherwise, 2 (LOCKED) while a run or restore of an overlapping domain, or "
        "gc, is in progress.",
    )
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--domain", action="append", metavar="PATH", help="restore only this domain (repeatable)")
    p.add_argument("--outputs", action="store_true", help="also put the declared outputs back")
    p.add_argument("--dry-run", action="store_true", help="list what would change, change nothing")
    add_location(p)
    p.add_argument("--json", action="store_true", help="print a JSON report on stdout")
    add_verbosity(p)
    p.set_defaults(execute=execute_cli)


def execute_cli(args: argparse.Namespace) -> int:
    from catalytic.isolation.journal import recover
    from catalytic.isolation.rollback import restore_state
    from catalytic.isolation.state import open_state
    from catalytic.isolation.store import Store
    from catalytic.locks import domain_locks
    from catalytic.snapshot.domains import cache_dir

    progress = Progress(quiet=args.quiet or args.json, verbose=args.verbose)
    root, runs_root = workspace(args, checked=True, say=progress)
    store = Store(runs_root)
    state = open_state(store, args.run_id)
    domains = state.names("domains")
    wanted = args.domain or domains
    unknown = [d for d in wanted if d not in domains]
    if unknown:
        raise UsageError(f"run {args.run_id} has no domain {unknown[0]!r} (domains: {', '.join(domains)})")
    only = [*wanted, *(state.names("outputs") if args.outputs else [])]
    # Like a run on the same trees: no run or restore of an overlapping domain meanwhile, no gc.
    with domain_locks(
        runs_root, only, args.run_id, who=f"catalytic restore {args.run_id}", writes_ledger=False
    ):
        for done in recover(runs_root):
            progress(f"recovered the interrupted {done['what']} of run {done['run_id']}: {done['action']}")
        result = restore_state(
            root,
            store,
            state,
            only=only,
            dry_run=args.dry_run,
            cache_dir=cache_dir(runs_root),
            run_id=args.run_id,
        )
    for op, path in result["actions"]:
        progress(f"{'would ' if args.dry_run else ''}{op} {path}")
    for problem in result["problems"]:
        sys.stderr.write(f"catalytic: error: RESTORE: {problem}\n")
    if args.json:
        print_json({"run_id": args.run_id, "dry_run": args.dry_run, **result})
    if args.dry_run:
        progress(f"dry run: {len(result['actions'])} change(s) needed")
        return EXIT_OK
    if result["verified"]:
        progress(f"restored {', '.join(only)} to the pre-state of {args.run_id} (proven by a fresh snapshot)")
        return EXIT_OK
    for tree, rels in result["remaining"].items():
        progress(f"NOT restored in {tree}: {', '.join(rels[:10])}")
    return EXIT_DIRTY
