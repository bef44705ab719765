"""Walk a catalytic domain and describe every entry, in byte order of the full path, race-safely.

The walk never follows symlinks: directories are opened relative to their parent's descriptor with
``O_NOFOLLOW`` and checked against the ``lstat`` that listed them, so swapping a directory for a
symlink while we walk is detected, not followed. Regular files are opened with ``O_NOFOLLOW |
O_NONBLOCK`` (a FIFO swapped in cannot block us) and hashed; a file whose inode, type, size, mtime or
ctime after the read differ from the ``lstat`` it was listed with, or whose byte count differs from its
size, is listed and read again and, if it keeps changing, reported as an error. Nothing is ever
skipped: unreadable and vanishing entries are errors.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import TypeVar

from catalytic import faults
from catalytic.errors import SnapshotError
from catalytic.paths import ROOT, to_bytes
from catalytic.snapshot.attrs import entry_value, fd_digest, value_of
from catalytic.snapshot.digest import Hasher, HasherFactory
from catalytic.snapshot.entry import DIR, SYMLINK_PREFIX, Entry, mode_string, special_value
from catalytic.snapshot.listing import STAMP, lost, with_root_mark

RETRIES = 3
CHUNK = 1 << 20
#: Small files opened (and their pages asked for) together by :func:`hash_files`.
READ_AHEAD = 64
#: How a directory of a snapshot is opened: never through a symlink, never inherited by a child.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
T = TypeVar("T")
_WILLNEED = getattr(os, "POSIX_FADV_WILLNEED", 3)
_SIZE, _MODE = attrgetter("st_size"), attrgetter("st_mode")


def _no_advice(fd: int, offset: int, length: int, advice: int) -> None:
    """Where ``posix_fadvise`` does not exist (macOS), small files are read without asking first."""


_advise: Callable[[int, int, int, int], None] = getattr(os, "posix_fadvise", _no_advice)


@dataclass
class WalkStats:
    """What a walk saw, for progress lines and the ledger."""

    files: int = 0
    dirs: int = 0
    other: int = 0
    bytes_hashed: int = 0
    absent: bool = False
    errors: list[str] = field(default_factory=list)


def _fail(rel: str, exc: OSError) -> SnapshotError:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return SnapshotError("vanished while the snapshot was taken", path=rel, code="VANISHED")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return SnapshotError("cannot be read (permission denied)", path=rel, code="UNREADABLE")
    return SnapshotError(f"I/O error: {exc.strerror or exc}", path=rel, code="IO_ERROR")


def hash_open_file(
    fd: int, expected: os.stat_result, new_hasher: Callable[[], Hasher]
) -> tuple[str, os.stat_result] | None:
    """Hash an open file listed with the ``lstat`` ``expected``; None when it is not that file any more or
    changed while being read (the caller lists it again and retries).

    The listing is the "before": the digest is taken only when, after the read, the file's type, inode,
    device, size, ``mtime_ns`` and ``ctime_ns`` still equal the listing's and exactly ``size`` bytes were
    read. A small file is read once, for one byte more than its size (no read to see EOF, and a bounded read
    even if something else was swapped in); a large one is first checked to be the regular file listed, so
    a device swapped in is never read without end.
    """
    h = new_hasher()
    size = 0
    if expected.st_size < CHUNK:
        chunk = os.read(fd, expected.st_size + 1)
        h.update(chunk)
        size = len(chunk)
    else:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode) or before.st_ino != expected.st_ino:
            return None
        while chunk := os.read(fd, CHUNK):
            h.update(chunk)
            size += len(chunk)
    after = os.fstat(fd)
    if size != expected.st_size or STAMP(after) != STAMP(expected):
        return None
    return h.hexdigest(), after


#: What :func:`hash_files` answers for a file: its digest, its :data:`STAMP` (the listing's, as the file
#: still had it after the read) and the digest of its xattrs (None: it has none,
#: :func:`~catalytic.snapshot.attrs.fd_digest`), or None.
Hashed = tuple[str, tuple[int, ...], str | None] | None


def hash_files(
    dir_fd: int, files: list[tuple[str, os.stat_result]], new_hasher: Callable[[], Hasher]
) -> list[Hashed]:
    """One attempt at the digest of each regular file ``name`` of ``dir_fd`` exactly as it was listed
    (``st``), in one tight loop (the parallel snapshot's workers hash whole directories of small files: a
    call per file is a large share of the cost there). The checks are :func:`hash_open_file`'s, inlined for
    files read in one piece.

    An answer is None when its file cannot be opened or read or is not that file any more: the caller then
    takes the careful path (:func:`describe_stat`), which retries and reports.
    """
    out: list[Hashed] = []
    for start in range(0, len(files), READ_AHEAD):
        _hash_batch(dir_fd, files[start : start + READ_AHEAD], new_hasher, out)
    return out


def _hash_batch(
    dir_fd: int,
    batch: list[tuple[str, os.stat_result]],
    new_hasher: Callable[[], Hasher],
    out: list[Hashed],
) -> None:
    # Open the whole batch and ask for every small file's pages first: files not in the page cache are then
    # read from the disk together rather than one after the other (about 6x faster from a virtual disk; one
    # cheap call per file when they are cached). A file that cannot be opened is -1 and answered None.
    open_, read, fstat, close, advise = os.open, os.read, os.fstat, os.close, _advise
    fds: list[int] = []
    try:
        for name, st in batch:
            try:
                fd = open_(name, _FILE_FLAGS, dir_fd=dir_fd)
            except OSError:
                fd = -1
            fds.append(fd)
            if fd >= 0 and 0 < st.st_size < CHUNK:
                # Not contextlib.suppress: a context manager per file is a measurable share of a small file.
                try:  # noqa: SIM105
                    advise(fd, 0, st.st_size, _WILLNEED)
                except OSError:  # not a regular file any more (a FIFO says ESPIPE): the checks below see it
                    pass
        append = out.append
        for (_name, st), fd in zip(batch, fds, strict=True):
            if fd < 0:
                append(None)
                continue
            try:
                size = st.st_size
                if size >= CHUNK:
                    big = hash_open_file(fd, st, new_hasher)
                    append(None if big is None else (big[0], STAMP(big[1]), fd_digest(fd)))
                    continue
                # One read of one byte more than the size: a file that grew shows it, no read to see EOF.
                data = read(fd, size + 1)
                after = fstat(fd)
                xattrs = fd_digest(fd)
            except OSError:
                append(None)
                continue
            stamp = STAMP(after)
            if len(data) != size or stamp != STAMP(st):
                append(None)
                continue
            h = new_hasher()
            h.update(data)
            append((h.hexdigest(), stamp, xattrs))
    finally:
        for fd in fds:
            if fd >= 0:
                close(fd)


def listed_reading(
    dir_fd: int,
    listing: list[os.DirEntry[str]],
    rel: str,
    new_hasher: HasherFactory,
    budget: int,
) -> tuple[list[str], list[os.stat_result], dict[str, Hashed]]:
    """A whole directory's names and stats as :func:`~catalytic.snapshot.listing.listed` gives them, with its
    small regular files already hashed: the first description of a directory, when nothing stored can stand
    for its files.

    The files the listing calls regular are opened first, and a file's stat is the ``fstat`` of the
    descriptor it is read from: it is looked up by name once instead of twice (``lstat``, then ``open``).
    They go :data:`READ_AHEAD` at a time, each step one call over the whole group (open, ``fstat``, ask for
    the pages, read, ``fstat`` again, close), so the interpreter's work per file stays small. The checks
    are :func:`hash_files`': a digest only when the ``fstat`` after the read equals the one before and
    exactly ``size`` bytes were read, else None (the caller takes the careful path). Files of :data:`CHUNK`
    bytes or more, or not regular any more, are only listed; so is a group with a file that cannot be opened
    or read, and every file once ``budget`` bytes were read: the caller hashes those (or splits the
    directory).
    """
    names = [dirent.name for dirent in listing]
    files = [dirent.name for dirent in listing if dirent.is_file(follow_symlinks=False)]
    opened_stats: dict[str, os.stat_result] = {}
    answers: dict[str, Hashed] = {}
    fstat, read, advise = os.fstat, os.read, _advise
    open_file = functools.partial(os.open, flags=_FILE_FLAGS, dir_fd=dir_fd)
    for start in range(0, len(files), READ_AHEAD):
        if budget <= 0:
            break
        group = files[start : start + READ_AHEAD]
        fds: list[int] = []
        try:
            fds.extend(map(open_file, group))  # extend keeps the descriptors opened before a failure
            stats = list(map(fstat, fds))
            opened_stats.update(zip(group, stats, strict=True))
            reading = fds
            if max(map(_SIZE, stats)) >= CHUNK or not all(map(stat.S_ISREG, map(_MODE, stats))):
                # A big file, or one that is not regular any more: only the group's small files are read.
                small = [i for i, st in enumerate(stats) if stat.S_ISREG(st.st_mode) and st.st_size < CHUNK]
                group, reading, stats = (
                    [group[i] for i in small],
                    [fds[i] for i in small],
                    [stats[i] for i in small],
                )
            sizes = list(map(_SIZE, stats))
            for fd, size in zip(reading, sizes, strict=True):
                advise(fd, 0, size, _WILLNEED)
            # One read of one byte more than the size: a file that grew shows it, no read to see EOF.
            datas = list(map(read, reading, [size + 1 for size in sizes]))
            afters = list(map(STAMP, map(fstat, reading)))
            xattrs = list(map(fd_digest, reading))
        except OSError:
            continue
        finally:
            for fd in fds:
                os.close(fd)
        budget -= sum(sizes)
        answers.update(
            zip(
                group,
                [
                    (new_hasher(data).hexdigest(), after, x)
                    if after == before and len(data) == size
                    else None
                    for data, after, before, size, x in zip(
                        datas, afters, map(STAMP, stats), sizes, xattrs, strict=True
                    )
                ],
                strict=True,
            )
        )
    entries = list(zip(names, listing, strict=True))
    try:
        listed = [opened_stats.get(name) or dirent.stat(follow_symlinks=False) for name, dirent in entries]
    except OSError:
        listed = []
        for name, dirent in entries:
            try:
                listed.append(opened_stats.get(name) or dirent.stat(follow_symlinks=False))
            except OSError as exc:
                raise lost(rel, name, exc) from exc
    return names, listed, answers


def describe(
    dir_fd: int,
    name: str,
    rel: str,
    st: os.stat_result,
    new_hasher: Callable[[], Hasher],
    counts: WalkStats,
) -> Entry:
    """The manifest entry of ``name`` in ``dir_fd`` whose ``lstat`` was ``st``."""
    if faults.ACTIVE:
        faults.point("entry")
    return describe_stat(dir_fd, name, rel, st, new_hasher, counts)[0]


def describe_stat(
    dir_fd: int,
    name: str,
    rel: str,
    st: os.stat_result,
    new_hasher: Callable[[], Hasher],
    counts: WalkStats,
) -> tuple[Entry, os.stat_result]:
    """Like :func:`describe`, also returning the stat the entry was observed with (for the cache).

    No fault point here: the snapshot engine's callers fire theirs.
    """
    for _ in range(RETRIES):
        fmt = stat.S_IFMT(st.st_mode)
        if fmt == stat.S_IFREG:
            try:
                fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:  # became a symlink since it was listed
                    st = _lstat(dir_fd, name, rel)
                    continue
                raise _fail(rel, exc) from exc
            try:
                result = hash_open_file(fd, st, new_hasher)
                xattrs = fd_digest(fd)
            except OSError as exc:
                raise _fail(rel, exc) from exc
            finally:
                os.close(fd)
            if result is None:
                st = _lstat(dir_fd, name, rel)
                continue
            digest, final = result
            counts.files += 1
            counts.bytes_hashed += final.st_size
            return Entry(rel, digest, value_of(final, xattrs, mode_string(final.st_mode))), final
        if fmt == stat.S_IFDIR:
            counts.dirs += 1
            return Entry(rel, DIR, _mode(dir_fd, name, rel, st, mode_string(st.st_mode))), st
        if fmt == stat.S_IFLNK:
            try:
                target = os.readlink(name, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno == errno.EINVAL:  # no longer a symlink
                    st = _lstat(dir_fd, name, rel)
                    continue
                raise _fail(rel, exc) from exc
            counts.other += 1
            return Entry(rel, SYMLINK_PREFIX + target, None), st
        counts.other += 1
        mode = _mode(dir_fd, name, rel, st, mode_string(st.st_mode))
        return Entry(rel, special_value(st), mode), st
    raise SnapshotError(f"kept changing while it was hashed ({RETRIES} attempts)", path=rel, code="UNSTABLE")


def _mode(dir_fd: int, name: str, rel: str, st: os.stat_result, bits: str) -> str:
    """The MODES value of an entry (:mod:`catalytic.snapshot.attrs`: its xattrs are read now)."""
    try:
        return entry_value(dir_fd, name, st, bits)
    except OSError as exc:
        raise _fail(rel, exc) from exc


def _lstat(dir_fd: int, name: str, rel: str) -> os.stat_result:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        raise _fail(rel, exc) from exc


def open_directory(path: bytes) -> int:
    """``os.open(path)`` of a directory (the last component not followed), also when ``path`` is longer
    than the system takes in one call (PATH_MAX, 4096 bytes on Linux): then it is opened a piece at a
    time, each piece relative to the last, with the same meaning (symlinks followed on the way only)."""
    try:
        return os.open(path, DIR_FLAGS)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
    parts = path.split(b"/")
    fd = os.open(b"/" if path.startswith(b"/") else b".", DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        start = 0
        while start < len(parts):
            end, size = start, 0
            while end < len(parts) and (end == start or size + len(parts[end]) < _PIECE):
                size += len(parts[end]) + 1
                end += 1
            piece = b"/".join(parts[start:end]) or b"."
            flags = DIR_FLAGS if end == len(parts) else DIR_FLAGS & ~os.O_NOFOLLOW
            opened = os.open(piece, flags, dir_fd=fd)
            os.close(fd)
            fd = opened
            start = end
        return fd
    except BaseException:
        os.close(fd)
        raise


_PIECE = 2048


def _open_dir(dir_fd: int, name: str, rel: str, st: os.stat_result) -> int:
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise SnapshotError(
                "was replaced while the snapshot was taken", path=rel, code="VANISHED"
            ) from exc
        raise _fail(rel, exc) from exc
    opened = os.fstat(fd)
    if opened.st_ino != st.st_ino or opened.st_dev != st.st_dev:
        os.close(fd)
        raise SnapshotError("was replaced while the snapshot was taken", path=rel, code="VANISHED")
    return fd


#: Called for every entry below the top: (dir_fd, dir_path, name, rel, lstat) -> item.
Visit = Callable[[int, bytes, str, str, os.stat_result], T]


def _listed(fd: int, prefix: str) -> list[tuple[bytes, bool, str, os.stat_result]]:
    """A directory's entries and subtrees in walk order: (walk key, is subtree, name, lstat)."""
    items: list[tuple[bytes, bool, str, os.stat_result]] = []
    try:
        with os.scandir(fd) as it:
            for dirent in it:
                name = dirent.name
                try:
                    st = dirent.stat(follow_symlinks=False)
                except OSError as exc:
                    raise _fail(prefix + name, exc) from exc
                key = to_bytes(name)
                items.append((key, False, name, st))
                if stat.S_ISDIR(st.st_mode):
                    items.append((key + b"/", True, name, st))
    except OSError as exc:
        raise _fail(prefix.rstrip("/") or ROOT, exc) from exc
    items.sort(key=lambda item: item[0])
    return items


def _walk_dir(
    fd: int, dir_path: bytes, prefix: str, visit: Visit[T], top: Entry | None = None
) -> Iterator[T | Entry]:
    """The entries below a directory in byte order of the path; ``top``: the tree's own entry ``.``, put at
    its place in that order (:func:`~catalytic.snapshot.listing.with_root_mark`).

    Iterative (a stack of open directories, not recursion), so any depth the file system allows is
    walked; the descriptors this opens are closed however the walk ends.
    """
    first = _listed(fd, prefix)
    last: Entry | None = None  # the tree's own entry when every name sorts below b"."
    if top is not None:
        marked = with_root_mark(first, os.fstat(fd))
        last = top if marked is first else None
        first = marked
    # (directory descriptor, its absolute path, its prefix, its remaining items); ``fd`` is the caller's.
    stack = [(fd, dir_path, prefix, iter(first))]
    try:
        while stack:
            dir_fd, path, pre, items = stack[-1]
            item = next(items, None)
            if item is None:
                stack.pop()
                if stack:
                    os.close(dir_fd)
                continue
            _key, is_subtree, name, st = item
            rel = pre + name
            if not is_subtree:
                yield visit(dir_fd, path, name, rel, st)
                continue
            if not name:  # the place of ``top``
                assert top is not None
                yield top
                continue
            sub = _open_dir(dir_fd, name, rel, st)
            try:
                listed = _listed(sub, rel + "/")
            except BaseException:
                os.close(sub)
                raise
            stack.append((sub, path + b"/" + to_bytes(name), rel + "/", iter(listed)))
    finally:
        for dir_fd, *_rest in stack[1:]:
            os.close(dir_fd)
    if last is not None:
        yield last


def walk(path: Path, new_hasher: Callable[[], Hasher], counts: WalkStats) -> Iterator[Entry]:
    """Every entry of the tree at ``path`` (itself as ``.``), sorted by the bytes of the path.

    A missing ``path`` yields nothing and sets ``counts.absent``.
    """

    def visit(fd: int, _dir_path: bytes, name: str, rel: str, st: os.stat_result) -> Entry:
        return describe(fd, name, rel, st, new_hasher, counts)

    return walk_with(path, new_hasher, counts, visit)


def describe_top(
    path: Path | str, new_hasher: Callable[[], Hasher], counts: WalkStats, *, open_dir: bool = False
) -> tuple[Entry, os.stat_result, int] | None:
    """The entry of the tree's top itself (``.``), its ``lstat``, and with ``open_dir`` a descriptor of it
    when it is a directory (checked to be the directory listed; -1 otherwise). None (and
    ``counts.absent``) when it does not exist. A symlink at the top is described, never followed.
    """
    parent, name = os.path.split(os.path.abspath(path))
    name = name or "."
    try:
        parent_fd = os.open(parent or "/", DIR_FLAGS & ~os.O_NOFOLLOW)
    except FileNotFoundError:
        counts.absent = True
        return None
    except OSError as exc:
        raise _fail(ROOT, exc) from exc
    try:
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            counts.absent = True
            return None
        except OSError as exc:
            raise _fail(ROOT, exc) from exc
        top, final = describe_stat(parent_fd, name, ROOT, st, new_hasher, counts)
        fd = _open_dir(parent_fd, name, ROOT, final) if open_dir and top.value == DIR else -1
        return top, final, fd
    finally:
        os.close(parent_fd)


def walk_with(
    path: Path, new_hasher: Callable[[], Hasher], counts: WalkStats, visit: Visit[T]
) -> Iterator[Entry | T]:
    """:func:`walk` with ``visit`` deciding what to yield for every entry below the top.

    The top itself is always described in-process (it is one entry). ``visit`` receives the absolute
    path (bytes) of the directory it is in, so the work can be handed to another process.
    """
    if faults.ACTIVE:
        faults.point("entry")
    found = describe_top(path, new_hasher, counts, open_dir=True)
    if found is None:
        return
    top, _st, fd = found
    if fd < 0:
        yield top
        return
    try:
        yield from _walk_dir(fd, os.fsencode(os.path.abspath(path)).rstrip(b"/"), "", visit, top)
    finally:
        os.close(fd)
