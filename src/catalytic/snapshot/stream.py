"""The parallel, streaming snapshot of a domain, written straight into the ledger's manifest documents.

Work is split by directory (:mod:`catalytic.snapshot.dirscan`): the worker processes list, describe, compare
and encode whole directories, and this process only puts their answers in walk order. Directories are
handed out in walk order (byte order of ``path/``), so the one the output needs next is always among the
first sent; answers that arrive early wait in a bounded window. The manifest and MODES text goes to a
spool file as it is produced (:class:`Spool`), the Merkle root is built from per-directory listing hashes
(:mod:`catalytic.snapshot.merkle`), and the post-run snapshot's differences come from the workers: nothing
here grows with the number of files, only with the depth of the tree and the differences found.

The pre-run snapshot leaves its rows in the store (:mod:`catalytic.snapshot.rowstore`); the post-run
snapshot compares every directory with them and brings them up to date for the next run.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalytic.diff import DomainDiff
from catalytic.errors import SnapshotError
from catalytic.excludes import NONE, Excludes
from catalytic.ledger.canonical import json_string
from catalytic.paths import ROOT, to_bytes
from catalytic.snapshot import dirscan
from catalytic.snapshot.digest import hasher_factory
from catalytic.snapshot.listing import STAMP
from catalytic.snapshot.merkle import MerkleBuilder, listing_hasher
from catalytic.snapshot.report import StreamReport, default_jobs
from catalytic.snapshot.rowstore import Row, Rows, prepare, store_failure, store_path
from catalytic.snapshot.scheduler import Scheduler
from catalytic.snapshot.spool import ObjectWriter, Span, Spool
from catalytic.snapshot.walker import WalkStats, describe_top

if TYPE_CHECKING:
    from catalytic.snapshot.digest import Hasher


@dataclass
class DomainScan:
    """A finished snapshot of one domain: counts, Merkle root, documents in spools, differences."""

    domain: str
    stats: WalkStats
    merkle_root: str
    manifest: Span
    modes: Span
    diff: DomainDiff | None = None
    report: StreamReport = field(default_factory=StreamReport)
    top: Row | None = None  # the domain's own entry, for the comparison of the post-run snapshot
    stored: bool = False  # the store holds this snapshot (it has no file while no entry needed one)

    @property
    def absent(self) -> bool:
        return self.stats.absent

    @property
    def cache(self) -> str:
        return self.report.cache


@dataclass
class _Dir:
    rel: str
    parts: deque[int]
    listing: bytes | None = None  # its L(D), when a worker answered it whole
    hasher: Hasher | None = None  # its L(D) so far, from the records of its parts (a split directory)
    split: list[bytes] | None = None  # the lower bounds of its parts, when split


@dataclass
class _Frame:
    directory: _Dir
    items: Iterator[tuple[Any, ...]] | None = None


def scan_domain(
    path: Path,
    domain: str,
    algorithm: str,
    *,
    store_dir: Path | None,
    manifest: Spool,
    modes: Spool,
    trust: bool = True,
    before: DomainScan | None = None,
    jobs: int = 0,
    progress: Callable[[int, int], None] | None = None,
    leave_out: Excludes = NONE,
) -> DomainScan:
    """Snapshot the directory tree at ``path`` (the domain ``domain``) into the two spools.

    ``trust``: rows of the store may stand for unchanged files (False: ``--no-cache``). ``before``: the
    pre-run snapshot of the same domain, taken with the same ``store_dir`` just before; this is then the
    post-run snapshot, and the result carries the differences from it. ``store_dir`` None: no store at all
    (every file is hashed, nothing is kept; the differences from an earlier snapshot are then those of
    their documents, :func:`catalytic.snapshot.manifest_stream.documents_diff`).
    ``leave_out``: what below the top is left out with everything below it (:mod:`catalytic.excludes`: the
    run's exclude patterns, and the runs root and declared outputs an overlay run leaves out of a domain).
    """
    directory = os.path.abspath(path)
    store = store_path(store_dir, directory, algorithm) if store_dir is not None else None
    if store is None and before is not None:
        raise ValueError("a post-run snapshot without a store is compared by its documents")
    try:
        return _scan_domain(
            path, domain, algorithm, store, manifest, modes, trust, before, jobs, progress, leave_out
        )
    except Exception as exc:
        # A spool or the store that cannot be written (a full disk): the run falls back to memory.
        failure = store_failure(store, exc, io=True)
        if failure is not None:
            raise failure from exc
        raise


def _scan_domain(
    path: Path,
    domain: str,
    algorithm: str,
    store: Path | None,
    manifest: Spool,
    modes: Spool,
    trust: bool,
    before: DomainScan | None,
    jobs: int,
    progress: Callable[[int, int], None] | None,
    leave_out: Excludes,
) -> DomainScan:
    directory = os.path.abspath(path)
    stats = WalkStats()
    state = prepare(store, directory, algorithm) if store is not None else "missing"
    compare = before is not None
    if before is not None and before.stored and state != "used":
        raise SnapshotError("the store of the pre-run snapshot is gone", path=ROOT, code="STORE")
    config = dirscan.ScanConfig(
        os.fsencode(directory), algorithm, store, trust, compare, time.time_ns(), leave_out
    )
    scheduler = Scheduler(config, jobs or default_jobs())
    scheduler.report.cache = ("used" if state == "used" else "rebuilt") if trust and store else "disabled"
    diff = DomainDiff() if compare else None
    builder = MerkleBuilder(algorithm)
    body = ObjectWriter(manifest)
    mode_body = ObjectWriter(modes)
    rows = Rows(store, directory, algorithm)
    top_row: Row | None = None
    try:
        found = describe_top(directory, hasher_factory(algorithm), stats)
        was = before.top if before is not None else None
        if found is None:
            if diff is not None:
                _everything_removed(rows, was, diff)
            rows.clear()
        else:
            entry, st, _fd = found
            value, mode = entry.value, entry.mode
            builder.set_top(value, mode)
            root = (
                "t",
                json_string(ROOT) + ":" + json_string(value),
                "" if mode is None else f'".":"{mode}"',
            )
            top_row = Row._make((b"", *STAMP(st), 0, value, mode))
            if diff is not None:
                if was is None:
                    diff.add(("added", ROOT, None, value, None, mode))
                else:
                    diff.add(("changed", ROOT, was.value, value, was.mode, mode))
            if value != "dir":
                if diff is not None and was is not None and was.value == "dir":
                    _everything_removed(rows, None, diff)
                rows.clear()
                _put(root, body, mode_body)
            else:
                _walk(scheduler, rows, st, root, body, mode_body, builder, stats, diff, progress)
        stored = rows.exists
    finally:
        rows.close()
        scheduler.close()
        if progress is not None:
            progress(-1, -1)
    return DomainScan(
        domain,
        stats,
        builder.root(),
        body.close(),
        mode_body.close(),
        diff.sorted() if diff is not None else None,
        scheduler.report,
        top_row,
        stored,
    )


def _everything_removed(rows: Rows, top: Row | None, diff: DomainDiff) -> None:
    if top is not None:
        diff.add(("removed", ROOT, top.value, None, top.mode, None))
    for dir_key, row in rows.everything():
        rel = (dir_key + b"/" + row.name if dir_key else row.name).decode("utf-8", "surrogateescape")
        diff.add(("removed", rel, row.value, None, row.mode, None))


def _walk(
    scheduler: Scheduler,
    rows: Rows,
    st: os.stat_result,
    root: tuple[str, str, str] | None,
    body: ObjectWriter,
    mode_body: ObjectWriter,
    builder: MerkleBuilder,
    stats: WalkStats,
    diff: DomainDiff | None,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Put the answers in walk order; ``root``: the domain's own entry as a text item, written where the
    top directory's answer marks its place in byte order (or last, after names all below it)."""
    factory = hasher_factory(scheduler.config.algorithm)
    report = scheduler.report
    first = scheduler.add(("", st.st_dev, st.st_ino, None, None))
    stack = [_Frame(_Dir("", deque([first])))]
    while stack:
        frame = stack[-1]
        if frame.items is None:
            directory = frame.directory
            if not directory.parts:
                stack.pop()
                if directory.split is not None:
                    rows.keep_parts(to_bytes(directory.rel), directory.split)
                listing = directory.listing if directory.hasher is None else directory.hasher.digest()
                if listing is not None:  # a directory with no entry has no listing hash
                    builder.add_listing(directory.rel or ROOT, listing)
                continue
            tid = directory.parts.popleft()
            task, result = scheduler.take(tid)
            if result.split is not None:
                rel, dev, ino, _lo, _hi = task
                bounds: list[bytes | None] = [None, *result.split, None]
                directory.split = [lo or b"" for lo in bounds[:-1]]
                parts = [
                    scheduler.add((rel, dev, ino, bounds[i], bounds[i + 1])) for i in range(len(bounds) - 1)
                ]
                directory.parts.extendleft(reversed(parts))
                continue
            if result.listing is not None:
                directory.listing = result.listing
            elif result.records:
                if directory.hasher is None:
                    directory.hasher = listing_hasher(factory)
                directory.hasher.update(result.records)
            _count(result.counts, stats, report)
            if diff is not None:
                for record in result.diff:
                    diff.add(record)
            items = [
                item
                if item[0] != "d" and item[0] != "D"  # "t", "F" and the root's mark pass as they are
                else ("d", item[1], scheduler.add((item[1], item[2], item[3], None, None)))
                if item[0] == "d"
                else ("d", item[1], scheduler.answered((item[1], item[2], item[3], None, None), item[4]))
                for item in result.items
            ]
            frame.items = iter(items)
            if progress is not None:
                progress(stats.files, stats.bytes_hashed)
            continue
        item = next(frame.items, None)
        if item is None:
            frame.items = None
        elif item[0] == "t":
            _put(item, body, mode_body)
        elif item[0] == "F":  # a subtree a worker answered whole, in one piece
            text, mode_text, records, counts, changes = item[4]
            body.add(text)
            mode_body.add(mode_text)
            builder.add_listings(records)
            _count(counts, stats, report)
            if diff is not None:
                for record in changes:
                    diff.add(record)
            if progress is not None:
                progress(stats.files, stats.bytes_hashed)
        elif item[0] == "d":
            stack.append(_Frame(_Dir(item[1], deque([item[2]]))))
        elif root is not None:  # ROOT_HERE
            _put(root, body, mode_body)
            root = None
    if root is not None:
        _put(root, body, mode_body)


def _count(counts: tuple[int, ...], stats: WalkStats, report: StreamReport) -> None:
    """Add an answer's counts (files, dirs, other, bytes hashed, rows used, files hashed)."""
    files, dirs, other, nbytes, hits, hashed = counts
    stats.files += files
    stats.dirs += dirs
    stats.other += other
    stats.bytes_hashed += nbytes
    report.cache_hits += hits
    report.hashed_files += hashed


def _put(item: tuple[Any, ...], body: ObjectWriter, mode_body: ObjectWriter) -> None:
    """Write a text item: ("t", manifest text, MODES text)."""
    body.add(item[1])
    mode_body.add(item[2])
