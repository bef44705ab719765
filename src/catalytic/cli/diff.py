"""``catalytic diff A B``: compare two manifests, or a manifest and a directory (mtree-style)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from catalytic.cli.output import add_snapshot_options, add_verbosity, print_json, snapshot_settings
from catalytic.errors import EXIT_DIRTY
from catalytic.snapshot.digest import DEFAULT_HASH, HASH_NAMES
from catalytic.snapshot.entry import Entry


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``catalytic diff``."""
    p = subparsers.add_parser(
        "diff",
        help="compare two manifests, or a manifest and a directory",
        description="Each of A and B is a manifest written by `catalytic snapshot --output` or a directory "
        "(snapshotted now). Exit 0 when they are identical, 1 when they differ.",
    )
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--hash", choices=HASH_NAMES, help="digest for directories (default: the manifest's)")
    p.add_argument("--json", action="store_true", help="print the differences as JSON")
    add_snapshot_options(p)
    add_verbosity(p)
    p.set_defaults(execute=execute_cli)


def _load(spec: str, algorithm: str | None, args: argparse.Namespace) -> tuple[Iterable[Entry], str]:
    from catalytic.snapshot import entries_from_documents, snapshot_tree
    from catalytic.snapshot.manifest_file import read_manifest

    path = Path(spec)
    if path.is_dir():
        with snapshot_settings(args) as settings:
            algo = algorithm or DEFAULT_HASH
            snap = snapshot_tree(path, algo, jobs=settings.jobs, progress=settings.progress)
        return snap.entries, algorithm or DEFAULT_HASH
    manifest, modes, algo, _doc = read_manifest(path)
    return entries_from_documents(manifest, modes), algo


def execute_cli(args: argparse.Namespace) -> int:
    """Print the differences; exit 1 when there are any."""
    from catalytic.diff import diff_entries
    from catalytic.paths import sort_key

    a_is_dir, b_is_dir = Path(args.a).is_dir(), Path(args.b).is_dir()
    algorithm = args.hash
    if algorithm is None and not (a_is_dir and b_is_dir):
        from catalytic.snapshot.manifest_file import read_manifest

        algorithm = read_manifest(Path(args.b if a_is_dir else args.a))[2]
    a, _ = _load(args.a, algorithm, args)
    b, _ = _load(args.b, algorithm, args)
    diff = diff_entries(a, b)
    if args.json:
        print_json(diff.to_json())
    else:
        lines: list[tuple[bytes, str]] = []
        for path, value in diff.added.items():
            lines.append((sort_key(path), f"extra    {path} ({value})"))
        for path, value in diff.removed.items():
            lines.append((sort_key(path), f"missing  {path} ({value})"))
        for path, rec in diff.changed.items():
            detail = f"{rec['before']} -> {rec['after']}"
            if "mode_before" in rec:
                detail += f", mode {rec['mode_before']} -> {rec['mode_after']}"
            lines.append((sort_key(path), f"changed  {path} ({detail})"))
        for _key, line in sorted(lines):
            sys.stdout.write(line + "\n")
    return 0 if diff.clean else EXIT_DIRTY
