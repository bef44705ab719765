"""The fast snapshot: the race-safe walk, the stat cache and a pool of hashing processes, streamed in order.

The walk (in this process) lists every entry in byte order. Directories, symlinks and special files are
described on the spot. A regular file whose cache row is trusted (see :mod:`catalytic.snapshot.cache`)
takes the cached digest; every other file goes into a batch that a worker hashes. Workers are processes
(hashing many small files is bound by the interpreter, which threads would serialise); a worker opens the
file's directory by path with ``O_NOFOLLOW``, checks it is the very directory the walk listed (device and
inode), and then hashes exactly like the walker: ``O_NOFOLLOW | O_NONBLOCK``, stat before and after,
byte count, retries, and an error (never a skip) for a file that vanished, is unreadable or kept changing.

Entries come out in walk order through a bounded window of batches, so memory does not grow with the
number of files. The pool is started only when there is enough work to pay for it.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalytic import faults
from catalytic.errors import SnapshotError
from catalytic.paths import sort_key
from catalytic.snapshot.cache import CacheReader, CacheWriter, Row, cache_path
from catalytic.snapshot.digest import hasher_factory
from catalytic.snapshot.entry import Entry, mode_string
from catalytic.snapshot.report import ScanReport, default_jobs
from catalytic.snapshot.walker import WalkStats, describe_stat, open_directory, walk_with
from catalytic.threads import may_fork

#: A batch is handed to a worker when it holds this many files or bytes.
BATCH_FILES = 256
BATCH_BYTES = 16 << 20
#: Below this much work to do, hashing stays in this process (starting processes costs ~10-30 ms).
POOL_MIN_FILES = 1024
POOL_MIN_BYTES = 64 << 20

if TYPE_CHECKING:
    from catalytic.snapshot.forkpool import ForkPool

# (dir path, dir dev, dir ino, name, rel, the lstat the walk listed it with)
Job = tuple[bytes, int, int, str, str, os.stat_result]
# ("ok", value, mode, ino, dev, size, st_mode, mtime_ns, ctime_ns) | ("err", message, rel, code)
Outcome = tuple[Any, ...]


def _hash_task(argument: tuple[str, list[Job]]) -> tuple[list[Outcome], int]:
    return hash_batch(*argument)


def hash_batch(algorithm: str, jobs: list[Job]) -> tuple[list[Outcome], int]:
    """Hash a batch of files (in a worker or in-process); returns one outcome per job and bytes read."""
    new_hasher = hasher_factory(algorithm)
    counts = WalkStats()
    out: list[Outcome] = []
    current: bytes | None = None
    dir_fd = -1
    dir_error: Outcome | None = None
    try:
        for dir_path, dir_dev, dir_ino, name, rel, expected in jobs:
            if dir_path != current:
                if dir_fd >= 0:
                    os.close(dir_fd)
                    dir_fd = -1
                current, dir_error = dir_path, None
                try:
                    dir_fd = open_directory(dir_path or b"/")
                    dst = os.fstat(dir_fd)
                    if dst.st_dev != dir_dev or dst.st_ino != dir_ino:
                        dir_error = ("err", "was replaced while the snapshot was taken", rel, "VANISHED")
                except OSError as exc:
                    gone = exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
                    code = "VANISHED" if gone else "IO_ERROR"
                    dir_error = ("err", f"directory cannot be opened: {exc.strerror or exc}", rel, code)
            if dir_error is not None:
                out.append(("err", dir_error[1], rel, dir_error[3]))
                continue
            try:
                entry, final = describe_stat(dir_fd, name, rel, expected, new_hasher, counts)
            except SnapshotError as exc:
                message = exc.message.removeprefix(f"{exc.path}: ")
                out.append(("err", message, exc.path, exc.code))
                continue
            out.append(
                (
                    "ok",
                    entry.value,
                    entry.mode,
                    final.st_ino,
                    final.st_dev,
                    final.st_size,
                    final.st_mode,
                    final.st_mtime_ns,
                    final.st_ctime_ns,
                )
            )
    finally:
        if dir_fd >= 0:
            os.close(dir_fd)
    return out, counts.bytes_hashed


@dataclass
class _Chunk:
    # Each slot: a finished (entry, row for the cache or None), or the index of a job in ``jobs``.
    slots: list[tuple[Entry, Row | None] | tuple[int, str, bool]] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    size: int = 0
    ticket: int | None = None  # the worker it was sent to; None: hashed in this process


class Scanner:
    """One streaming snapshot of one directory tree (see the module docstring).

    ``progress(files, bytes_hashed)`` is called after every batch, and once with ``(-1, -1)`` at the end.
    """

    def __init__(
        self,
        path: Path,
        algorithm: str,
        stats: WalkStats,
        *,
        jobs: int = 0,
        cache_dir: Path | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.path = path
        self.algorithm = algorithm
        self.stats = stats
        self.jobs = jobs or default_jobs()
        self.cache_dir = cache_dir
        self.progress = progress
        self.report = ScanReport()
        self._pool: ForkPool | None = None
        self._queued_files = 0
        self._queued_bytes = 0

    # -- hashing -------------------------------------------------------------------------------------
    def _submit(self, chunk: _Chunk) -> None:
        if not chunk.jobs:
            return
        self._queued_files += len(chunk.jobs)
        self._queued_bytes += chunk.size
        if (
            self._pool is None
            and self.jobs > 1
            and (self._queued_files >= POOL_MIN_FILES or self._queued_bytes >= POOL_MIN_BYTES)
            and may_fork()
        ):
            from catalytic.snapshot.forkpool import ForkPool

            self._pool = ForkPool(self.jobs, _hash_task)
            self.report.pool_started = True
        if self._pool is not None:
            chunk.ticket = self._pool.submit((self.algorithm, chunk.jobs))

    def _drain(self, chunk: _Chunk, writer: CacheWriter | None) -> Iterator[Entry]:
        outcomes: list[Outcome] = []
        if chunk.jobs:
            if chunk.ticket is None or self._pool is None:
                outcomes, nbytes = hash_batch(self.algorithm, chunk.jobs)
            else:
                outcomes, nbytes = self._pool.result(chunk.ticket)
            self.stats.bytes_hashed += nbytes
        for slot in chunk.slots:
            if len(slot) == 2:
                entry, row = slot
                if writer is not None and row is not None:
                    writer.add(row)
                yield entry
                continue
            index, rel, record = slot
            outcome = outcomes[index]
            if outcome[0] == "err":
                raise SnapshotError(outcome[1], path=outcome[2], code=outcome[3])
            _, value, mode, ino, dev, size, st_mode, mtime, ctime = outcome
            self.report.hashed_files += 1
            if stat.S_ISREG(st_mode):
                self.stats.files += 1
                if writer is not None and record:
                    writer.add((sort_key(rel), ino, dev, size, st_mode, mtime, ctime, value))
            elif stat.S_ISDIR(st_mode):
                self.stats.dirs += 1
            else:
                self.stats.other += 1
            yield Entry(rel, value, mode)
        if self.progress is not None:
            self.progress(self.stats.files, self.stats.bytes_hashed)

    # -- the scan ------------------------------------------------------------------------------------
    def entries(self) -> Iterator[Entry]:
        """Every entry of the tree, in byte order of the path."""
        taken_ns = time.time_ns()
        directory = os.path.abspath(self.path)
        reader: CacheReader | None = None
        writer: CacheWriter | None = None
        target: Path | None = None
        if self.cache_dir is not None:
            target = cache_path(self.cache_dir, self.path, self.algorithm)
            reader = CacheReader(target, directory, self.algorithm)
        rows = reader.rows() if reader is not None else iter(())
        row: Row | None = next(rows, None)
        # While every file so far was a trusted hit on the next row, the new cache would equal the old
        # one: nothing is written until the first difference, and then the hits so far are copied over.
        clean = reader is not None and reader.state == "valid"
        last_hit: bytes | None = None

        def diverge() -> None:
            nonlocal clean, writer
            clean = False
            if target is None:
                return
            writer = CacheWriter(target, directory, self.algorithm, taken_ns)
            if reader is not None and last_hit is not None:
                for old in reader.rows(upto=last_hit):
                    writer.add(old)

        if target is not None and not clean:
            diverge()

        last_dir: tuple[bytes, int, int] = (b"", -1, -1)

        def visit(fd: int, dir_path: bytes, name: str, rel: str, st: os.stat_result) -> Any:
            nonlocal last_dir
            if faults.ACTIVE:
                faults.point("entry")
            if stat.S_ISREG(st.st_mode):
                if last_dir[0] != dir_path:
                    dst = os.fstat(fd)
                    last_dir = (dir_path, dst.st_dev, dst.st_ino)
                return (dir_path, last_dir[1], last_dir[2], name, rel, st)
            return describe_stat(fd, name, rel, st, hasher_factory(self.algorithm), self.stats)

        window: deque[_Chunk] = deque()
        chunk = _Chunk()
        max_window = max(2, self.jobs * 2)
        try:
            for item in walk_with(self.path, hasher_factory(self.algorithm), self.stats, visit):
                if isinstance(item, Entry):  # the top of the tree
                    chunk.slots.append((item, None))
                    continue
                if len(item) == 2:  # described on the spot (not a regular file)
                    entry, st = item
                    key = sort_key(entry.path)
                    while row is not None and row[0] <= key:
                        if clean:
                            diverge()
                        row = next(rows, None)
                    chunk.slots.append((entry, None))
                    continue
                dir_path, dir_dev, dir_ino, name, rel, st = item
                key = sort_key(rel)
                while row is not None and row[0] < key:
                    if clean:
                        diverge()
                    row = next(rows, None)
                hit = row is not None and row[0] == key and reader is not None and reader.trusted(row, st)
                if hit:
                    assert row is not None
                    self.report.cache_hits += 1
                    self.stats.files += 1
                    chunk.slots.append((Entry(rel, row[7], mode_string(st.st_mode)), None if clean else row))
                    if clean:
                        last_hit = key
                    row = next(rows, None)
                else:
                    if clean:
                        diverge()
                    if row is not None and row[0] == key:
                        row = next(rows, None)
                    chunk.slots.append((len(chunk.jobs), rel, not clean))
                    chunk.jobs.append((dir_path, dir_dev, dir_ino, name, rel, st))
                    chunk.size += st.st_size
                if len(chunk.jobs) >= BATCH_FILES or chunk.size >= BATCH_BYTES or len(chunk.slots) >= 4096:
                    self._submit(chunk)
                    window.append(chunk)
                    chunk = _Chunk()
                    while len(window) > max_window:
                        yield from self._drain(window.popleft(), writer)
            self._submit(chunk)
            window.append(chunk)
            while window:
                yield from self._drain(window.popleft(), writer)
            if clean and (row is not None or (reader is not None and reader.state != "valid")):
                diverge()  # rows left over (files removed) or a corrupt tail: rewrite
            if reader is not None:
                self.report.cache = "used" if reader.state == "valid" else "rebuilt"
            if writer is not None:
                writer.commit()
                writer = None
        finally:
            if self.progress is not None:
                self.progress(-1, -1)  # this snapshot is over
            if writer is not None:
                writer.abort()
            if reader is not None:
                reader.close()
            if self._pool is not None:
                self._pool.close(kill=True)
                self._pool = None
