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

import heapq
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalytic import faults
from catalytic.diff import DomainDiff
from catalytic.errors import SnapshotError
from catalytic.ledger.canonical import json_string
from catalytic.paths import ROOT, sort_key, to_bytes
from catalytic.snapshot import dirscan
from catalytic.snapshot.digest import hasher_factory
from catalytic.snapshot.merkle import MerkleBuilder
from catalytic.snapshot.report import ScanReport, default_jobs
from catalytic.snapshot.rowstore import Row, Rows, ensure, prepare, store_path
from catalytic.snapshot.walker import WalkStats, describe_stat

if TYPE_CHECKING:
    from catalytic.snapshot.digest import Hasher
    from catalytic.snapshot.forkpool import ForkPool

#: Start the worker processes once this many entries were described in this process (forking costs
#: ~10-30 ms; small domains never pay it).
POOL_MIN_ENTRIES = 1024
#: Tasks queued per worker, and answers held (sent or waiting to be written) per worker.
DEPTH = 3
WINDOW = 8
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class Spool:
    """Collects the text of one document, domain after domain: in memory up to 1 MiB, then in an unnamed
    temporary file (``O_TMPFILE`` in the runs root: a crash leaves nothing behind)."""

    LIMIT = 1 << 20

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.fd = -1
        self.size = 0  # bytes written so far, in memory or in the file
        self._on_disk = 0
        self._buffer: list[bytes] = []
        self._buffered = 0

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        self._buffer.append(data)
        self._buffered += len(data)
        self.size += len(data)
        if self._buffered >= self.LIMIT:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        if self.fd < 0:
            self.fd = _unnamed(self.directory)
        data = memoryview(b"".join(self._buffer))
        self._buffer.clear()
        self._buffered = 0
        while data:
            written = os.pwrite(self.fd, data, self._on_disk)
            self._on_disk += written
            data = data[written:]

    def read(self, start: int, end: int) -> Iterator[bytes]:
        """The bytes from ``start`` to ``end``, in pieces."""
        if self.fd < 0:  # still all in memory
            yield b"".join(self._buffer)[start:end]
            return
        self.flush()
        while start < end:
            chunk = os.pread(self.fd, min(end - start, self.LIMIT), start)
            if not chunk:
                raise OSError(f"spool file shorter than expected ({start} < {end})")
            yield chunk
            start += len(chunk)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._buffer.clear()


def _unnamed(directory: Path) -> int:
    """A read-write descriptor of a new file without a name in ``directory``."""
    flag = getattr(os, "O_TMPFILE", 0)
    if flag:
        try:
            return os.open(directory, flag | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError:
            pass  # a file system without O_TMPFILE: a named file, unlinked at once
    import tempfile

    fd, name = tempfile.mkstemp(dir=directory, prefix=".spool.", suffix=".tmp")
    os.unlink(name)
    return fd


@dataclass(frozen=True)
class Span:
    """One domain's document text in a spool."""

    spool: Spool
    start: int
    end: int

    def chunks(self) -> Iterator[bytes]:
        return self.spool.read(self.start, self.end)


class _Object:
    """Writes one JSON object (``{...}``) of entries into a spool, comma-separated."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.start = spool.size
        self.empty = True
        spool.write("{")

    def add(self, text: str) -> None:
        if not text:
            return
        self.spool.write(text if self.empty else "," + text)
        self.empty = False

    def close(self) -> Span:
        self.spool.write("}")
        return Span(self.spool, self.start, self.spool.size)


@dataclass
class StreamReport(ScanReport):
    """How the snapshot used the store (``cache``) and the processes, and how many tasks it took."""

    tasks: int = 0


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
    hasher: Hasher
    parts: deque[int]
    listed: bool = False
    split: list[bytes] | None = None  # the lower bounds of its parts, when split


@dataclass
class _Frame:
    directory: _Dir
    items: Iterator[tuple[Any, ...]] | None = None


def _work(argument: tuple[dirscan.ScanConfig, dirscan.Task]) -> tuple[str, Any]:
    config, task = argument
    try:
        return "ok", dirscan.scan(config, task)
    except SnapshotError as exc:
        return "err", (exc.message.removeprefix(f"{exc.path}: "), exc.path, exc.code)


class _Scheduler:
    """Hands tasks out in walk order and gives answers back in the order they are asked for."""

    def __init__(self, config: dirscan.ScanConfig, jobs: int) -> None:
        self.config = config
        self.jobs = jobs
        self.tasks: dict[int, dirscan.Task] = {}  # not yet answered
        self.count = 0
        self.heap: list[tuple[bytes, int]] = []
        self.sent: dict[int, int] = {}  # task -> worker
        self.queues: list[deque[int]] = []
        self.results: dict[int, dirscan.DirResult] = {}
        self.pool: ForkPool | None = None
        self.described = 0
        self.split = False  # a directory was split: enough work for the workers, whatever the count
        self.report = StreamReport()

    def add(self, task: dirscan.Task) -> int:
        tid = self.count
        self.count += 1
        self.tasks[tid] = task
        rel, _dev, _ino, lo, _hi = task
        key = (to_bytes(rel) + b"/" if rel else b"") + (lo or b"")
        heapq.heappush(self.heap, (key, tid))
        self.report.tasks += 1
        return tid

    def _maybe_start_pool(self) -> None:
        if (
            self.pool is None
            and self.jobs > 1
            and (self.described >= POOL_MIN_ENTRIES or self.split)
            and not faults.ACTIVE  # fault points must fire in this process
            # Forking while other threads run could copy a lock one of them holds into the child.
            and threading.active_count() == 1
        ):
            from catalytic.snapshot.forkpool import ForkPool

            config = self.config
            ensure(config.store, os.fsdecode(config.top), config.algorithm)
            self.pool = ForkPool(self.jobs, _work)
            self.queues = [deque() for _ in range(self.jobs)]
            self.report.pool_started = True

    def _send(self, tid: int) -> None:
        argument = (self.config, self.tasks[tid])
        if self.pool is None:
            status, value = _work(argument)
            self._store(tid, status, value)
            return
        worker = min(range(self.jobs), key=lambda w: len(self.queues[w]))
        self.pool.submit(argument, worker)
        self.sent[tid] = worker
        self.queues[worker].append(tid)

    def _store(self, tid: int, status: str, value: Any) -> None:
        if status == "err":
            message, path, code = value
            raise SnapshotError(message, path=path, code=code)
        result: dirscan.DirResult = value
        self.described += sum(result.counts[:3])
        self.split = self.split or result.split is not None
        self.results[tid] = result

    def _fill(self) -> None:
        if self.pool is None:
            return
        limit = self.jobs * WINDOW
        while self.heap and len(self.sent) < self.jobs * DEPTH and len(self.sent) + len(self.results) < limit:
            _key, tid = heapq.heappop(self.heap)
            if tid in self.tasks and tid not in self.sent and tid not in self.results:
                self._send(tid)

    def take(self, tid: int) -> tuple[dirscan.Task, dirscan.DirResult]:
        """Task ``tid`` and its answer (sending it first if it is not out yet)."""
        while tid not in self.results:
            if tid not in self.sent:
                self._maybe_start_pool()
                self._send(tid)
                continue
            self._fill()
            assert self.pool is not None
            worker = self.sent[tid]
            done = self.queues[worker].popleft()
            del self.sent[done]
            self._store(done, *self.pool.result(worker))
        self._fill()
        return self.tasks.pop(tid), self.results.pop(tid)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close(kill=True)
            self.pool = None
        dirscan.close_rows()


def _top(directory: str, algorithm: str, stats: WalkStats) -> tuple[str, str | None, os.stat_result] | None:
    """The domain's own entry (``.``): value, mode and ``lstat``; None when it does not exist."""
    parent, name = os.path.split(directory)
    try:
        parent_fd = os.open(parent or "/", _DIR_FLAGS)
    except FileNotFoundError:
        stats.absent = True
        return None
    except OSError as exc:
        raise SnapshotError(f"cannot be opened: {exc.strerror or exc}", path=ROOT, code="IO_ERROR") from exc
    try:
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            stats.absent = True
            return None
        except OSError as exc:
            raise SnapshotError(f"cannot be read: {exc.strerror or exc}", path=ROOT, code="IO_ERROR") from exc
        entry, final = describe_stat(parent_fd, name, ROOT, st, hasher_factory(algorithm), stats)
        return entry.value, entry.mode, final
    finally:
        os.close(parent_fd)


def _changed(
    diff: DomainDiff, record: tuple[str, str, str | None, str | None, str | None, str | None]
) -> None:
    kind, path, before, after, mode_before, mode_after = record
    if kind == "added":
        assert after is not None
        diff.added[path] = after
    elif kind == "removed":
        assert before is not None
        diff.removed[path] = before
    else:
        assert before is not None and after is not None
        change = {"before": before, "after": after}
        if mode_before != mode_after:
            change["mode_before"] = mode_before or ""
            change["mode_after"] = mode_after or ""
        diff.changed[path] = change


def _sorted(diff: DomainDiff) -> DomainDiff:
    return DomainDiff(
        added={k: diff.added[k] for k in sorted(diff.added, key=sort_key)},
        removed={k: diff.removed[k] for k in sorted(diff.removed, key=sort_key)},
        changed={k: diff.changed[k] for k in sorted(diff.changed, key=sort_key)},
    )


def scan_domain(
    path: Path,
    domain: str,
    algorithm: str,
    *,
    store_dir: Path,
    manifest: Spool,
    modes: Spool,
    trust: bool = True,
    before: DomainScan | None = None,
    jobs: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> DomainScan:
    """Snapshot the directory tree at ``path`` (the domain ``domain``) into the two spools.

    ``trust``: rows of the store may stand for unchanged files (False: ``--no-cache``). ``before``: the
    pre-run snapshot of the same domain, taken with the same ``store_dir`` just before; this is then the
    post-run snapshot, and the result carries the differences from it.
    """
    directory = os.path.abspath(path)
    store = store_path(store_dir, directory, algorithm)
    try:
        return _scan_domain(path, domain, algorithm, store, manifest, modes, trust, before, jobs, progress)
    except Exception as exc:
        # sqlite3 is imported only once a store exists: an empty domain never loads it.
        sqlite3 = sys.modules.get("sqlite3")
        if isinstance(exc, OSError) or (sqlite3 is not None and isinstance(exc, sqlite3.Error)):
            raise dirscan.store_error(store, exc) from exc
        raise


def _scan_domain(
    path: Path,
    domain: str,
    algorithm: str,
    store: Path,
    manifest: Spool,
    modes: Spool,
    trust: bool,
    before: DomainScan | None,
    jobs: int,
    progress: Callable[[int, int], None] | None,
) -> DomainScan:
    directory = os.path.abspath(path)
    stats = WalkStats()
    state = prepare(store, directory, algorithm)
    compare = before is not None
    if before is not None and before.stored and state != "used":
        raise SnapshotError("the store of the pre-run snapshot is gone", path=ROOT, code="STORE")
    config = dirscan.ScanConfig(os.fsencode(directory), algorithm, store, trust, compare, time.time_ns())
    scheduler = _Scheduler(config, jobs or default_jobs())
    scheduler.report.cache = ("used" if state == "used" else "rebuilt") if trust else "disabled"
    diff = DomainDiff() if compare else None
    builder = MerkleBuilder(algorithm)
    body = _Object(manifest)
    mode_body = _Object(modes)
    rows = Rows(store, directory, algorithm)
    top_row: Row | None = None
    try:
        top = _top(directory, algorithm, stats)
        was = before.top if before is not None else None
        if top is None:
            if diff is not None:
                _everything_removed(rows, was, diff)
            rows.clear()
        else:
            value, mode, st = top
            builder.set_top(value, mode)
            body.add(json_string(ROOT) + ":" + json_string(value))
            if mode is not None:
                mode_body.add(json_string(ROOT) + ':"' + mode + '"')
            stamp = (st.st_ino, st.st_dev, st.st_size, st.st_mode, st.st_mtime_ns, st.st_ctime_ns)
            top_row = (b"", *stamp, 0, value, mode)
            if diff is not None:
                if was is None:
                    _changed(diff, ("added", ROOT, None, value, None, mode))
                elif (was[8], was[9]) != (value, mode):
                    _changed(diff, ("changed", ROOT, was[8], value, was[9], mode))
            if value != "dir":
                if diff is not None and was is not None and was[8] == "dir":
                    _everything_removed(rows, None, diff)
                rows.clear()
            else:
                _walk(scheduler, rows, st, body, mode_body, builder, stats, diff, progress)
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
        _sorted(diff) if diff is not None else None,
        scheduler.report,
        top_row,
        stored,
    )


def _everything_removed(rows: Rows, top: Row | None, diff: DomainDiff) -> None:
    if top is not None:
        _changed(diff, ("removed", ROOT, top[8], None, top[9], None))
    for dir_key, row in rows.everything():
        rel = (dir_key + b"/" + row[0] if dir_key else row[0]).decode("utf-8", "surrogateescape")
        _changed(diff, ("removed", rel, row[8], None, row[9], None))


def _walk(
    scheduler: _Scheduler,
    rows: Rows,
    st: os.stat_result,
    body: _Object,
    mode_body: _Object,
    builder: MerkleBuilder,
    stats: WalkStats,
    diff: DomainDiff | None,
    progress: Callable[[int, int], None] | None,
) -> None:
    factory = hasher_factory(scheduler.config.algorithm)

    def new() -> Hasher:
        hasher = factory()
        hasher.update(b"\x00")
        return hasher

    report = scheduler.report
    first = scheduler.add(("", st.st_dev, st.st_ino, None, None))
    stack = [_Frame(_Dir("", new(), deque([first])))]
    while stack:
        frame = stack[-1]
        if frame.items is None:
            directory = frame.directory
            if not directory.parts:
                stack.pop()
                if directory.split is not None:
                    rows.keep_parts(to_bytes(directory.rel), directory.split)
                if directory.listed:
                    builder.add_listing(directory.rel or ROOT, directory.hasher.digest())
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
            if result.records:
                directory.hasher.update(result.records)
                directory.listed = True
            files, dirs, other, nbytes, hits, hashed = result.counts
            stats.files += files
            stats.dirs += dirs
            stats.other += other
            stats.bytes_hashed += nbytes
            report.cache_hits += hits
            report.hashed_files += hashed
            if diff is not None:
                for record in result.diff:
                    _changed(diff, record)
            items = [
                item
                if item[0] == "t"
                else ("d", item[1], scheduler.add((item[1], item[2], item[3], None, None)))
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
            body.add(item[1])
            mode_body.add(item[2])
        else:
            stack.append(_Frame(_Dir(item[1], new(), deque([item[2]]))))
