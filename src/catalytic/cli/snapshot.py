"""``catalytic snapshot DIR [--output FILE]``: print a tree's Merkle root, optionally write its manifest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from catalytic.cli.output import add_snapshot_options, add_verbosity, print_json, snapshot_settings
from catalytic.errors import UsageError
from catalytic.snapshot.digest import DEFAULT_HASH, HASH_NAMES
from catalytic.snapshot.manifest_file import write_spooled_manifest


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``catalytic snapshot``."""
    p = subparsers.add_parser(
        "snapshot",
        help="hash a directory tree: print its Merkle root, optionally write its manifest",
        description="Snapshot DIR exactly as a run would (race-safe, parallel) and print its Merkle root. "
        "No stat cache is used unless --cache-dir is given.",
    )
    p.add_argument("directory", metavar="DIR")
    p.add_argument("--output", "-o", metavar="FILE", help="write the manifest (canonical JSON) to FILE")
    p.add_argument("--hash", choices=HASH_NAMES, default=DEFAULT_HASH, help="digest for files")
    p.add_argument("--cache-dir", metavar="DIR", help="keep a stat cache in DIR")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    add_snapshot_options(p)
    add_verbosity(p)
    p.set_defaults(execute=execute_cli)


def execute_cli(args: argparse.Namespace) -> int:
    """Snapshot the directory into spools; write its manifest from them; print its root."""
    from catalytic.snapshot.manifest_stream import scanned

    path = Path(args.directory)
    if not path.exists() and not path.is_symlink():
        raise UsageError(f"{args.directory}: no such file or directory")
    with snapshot_settings(args) as settings:
        store = Path(args.cache_dir) if args.cache_dir and settings.use_cache else None
        with scanned(
            path, args.hash, store_dir=store, jobs=settings.jobs, progress=settings.progress
        ) as snap:
            if args.output:
                write_spooled_manifest(
                    Path(args.output), snap.manifest, snap.modes, args.hash, snap.merkle_root
                )
    if args.json:
        print_json(
            {
                "directory": str(path),
                "hash_algorithm": args.hash,
                "merkle_root": snap.merkle_root,
                "files": snap.stats.files,
                "dirs": snap.stats.dirs,
                "other": snap.stats.other,
                "bytes_hashed": snap.stats.bytes_hashed,
                "cache": snap.cache,
            }
        )
    else:
        sys.stdout.write(f"{snap.merkle_root}  {args.directory}\n")
    return 0
