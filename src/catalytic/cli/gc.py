"""``catalytic gc``: prune the content-addressed store of what no kept ledger references, and stale caches."""

from __future__ import annotations

import argparse
import os
import sys

from catalytic.cli import locate
from catalytic.cli.locate import add_location
from catalytic.cli.output import Progress, add_verbosity, print_json
from catalytic.errors import EXIT_OK
from catalytic.ledger.format import reserved


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``catalytic gc``."""
    p = subparsers.add_parser(
        "gc",
        help="prune the store under <runs root>/_store of runs whose ledger is gone, and stale caches",
        description="Drop the saved pre-states of runs whose ledger directory no longer exists, then "
        "every stored object no remaining pre-state references, the stat caches under <runs root>/_cache "
        "of directories that no longer exist, the temporary overlay layers of runtimes that were killed, "
        "and the files a killed restore had staged. Refused (exit 2, LOCKED) while a run or a restore "
        "uses the runs root.",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    add_location(p)
    p.add_argument("--json", action="store_true", help="print a JSON report on stdout")
    add_verbosity(p)
    p.set_defaults(execute=execute_cli)


def execute_cli(args: argparse.Namespace) -> int:
    from catalytic.isolation.journal import recover
    from catalytic.isolation.state import collect_garbage
    from catalytic.isolation.store import Store
    from catalytic.locks import store_lock
    from catalytic.snapshot.domains import cache_dir
    from catalytic.snapshot.rowstore import remove_cache, stale_caches

    progress = Progress(quiet=args.quiet or args.json, verbose=args.verbose)
    runs_root = locate.workspace(args, checked=True, say=progress)[1]
    # Exclusive: no run (which may need its pre-state until it ends) or restore is using the store.
    with store_lock(runs_root, exclusive=True, who="catalytic gc"):
        for done in recover(runs_root):
            progress(f"recovered the interrupted {done['what']} of run {done['run_id']}: {done['action']}")
        kept = (
            [n for n in os.listdir(runs_root) if not reserved(n) and (runs_root / n).is_dir()]
            if runs_root.is_dir()
            else []
        )
        dropped, objects = collect_garbage(Store(runs_root), kept, dry_run=args.dry_run)
        caches = stale_caches(cache_dir(runs_root))
        if not args.dry_run:
            for path in caches:
                remove_cache(path)
    layers: list[str] = []
    if sys.platform.startswith("linux"):
        from catalytic.isolation.overlay import remove_layers, stale_layers

        stale = stale_layers()
        layers = [str(p) for p in stale]
        if not args.dry_run:
            remove_layers(stale)
    verb = "would remove" if args.dry_run else "removed"
    progress(
        f"{verb} {len(dropped)} pre-state(s), {len(objects)} object(s), {len(caches)} stale cache(s) and "
        f"{len(layers)} stale overlay layer(s); {len(kept)} ledger(s) kept"
    )
    if args.json:
        print_json(
            {
                "dry_run": args.dry_run,
                "states": dropped,
                "objects": [str(p) for p in objects],
                "caches": [str(p) for p in caches],
                "overlay_layers": layers,
                "kept": len(kept),
            }
        )
    return EXIT_OK
