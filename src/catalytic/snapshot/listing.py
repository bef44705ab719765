"""One directory's listing as a snapshot task sees it: entries with their ``lstat``, in walk order.

A directory's *walk keys* are its entries' names and, for each subdirectory, its name followed by ``/``
(where the subdirectory's contents come in the walk). Parts of a directory are ranges of walk keys (a
whole directory is the part without bounds). A part's *fingerprint* hashes its names, in the order the
directory lists them, with the ``lstat`` fields the stat cache compares (:func:`fingerprint`).
"""

from __future__ import annotations

import bisect
import errno
import hashlib
import marshal
import os
import stat
from operator import attrgetter, itemgetter

from catalytic import faults
from catalytic.errors import SnapshotError
from catalytic.paths import to_bytes

# (walk key, is the subdirectory's contents, name, lstat)
Item = tuple[bytes, bool, str, os.stat_result]
_FMT, _DIR, _REG = 0o170000, stat.S_IFDIR, stat.S_IFREG


def listed(
    listing: list[os.DirEntry[str]], rel: str, lo: bytes | None, hi: bytes | None
) -> tuple[list[str], list[os.stat_result]]:
    """The names of the part ``[lo, hi)``, in listing order, with their ``lstat``: every entry whose own walk
    key or whose contents' walk key (``name/``) is in the part. An entry that cannot be read is VANISHED or
    IO_ERROR."""
    if lo is None and hi is None and not faults.ACTIVE:
        try:  # the common case in one comprehension; an entry that cannot be read takes the loop below
            return [d.name for d in listing], [d.stat(follow_symlinks=False) for d in listing]
        except OSError:
            pass
    names: list[str] = []
    stats: list[os.stat_result] = []
    for dirent in listing:
        name = dirent.name
        if lo is not None or hi is not None:
            key = to_bytes(name)
            if not (_within(key, lo, hi) or _within(key + b"/", lo, hi)):
                continue
        faults.point("entry")
        try:
            stats.append(dirent.stat(follow_symlinks=False))
        except OSError as exc:
            raise lost(rel, name, exc) from exc
        names.append(name)
    return names, stats


def _within(key: bytes, lo: bytes | None, hi: bytes | None) -> bool:
    return (lo is None or key >= lo) and (hi is None or key < hi)


def walk_items(
    names: list[str], stats: list[os.stat_result], lo: bytes | None, hi: bytes | None
) -> list[Item]:
    """The part's entries and subdirectory contents in walk order (``names``, ``stats``: :func:`listed`)."""
    items = [(n.encode("utf-8", "surrogateescape"), False, n, st) for n, st in zip(names, stats, strict=True)]
    items += [(key + b"/", True, name, st) for key, _, name, st in items if st.st_mode & _FMT == _DIR]
    if lo is not None or hi is not None:
        items = [item for item in items if _within(item[0], lo, hi)]
    items.sort()  # by walk key: keys are unique, so the lstat results are never compared
    return items


def with_root_mark(items: list[Item], st: os.stat_result) -> list[Item]:
    """``items`` (a top directory's, in walk order) with a mark where the domain's own entry ``.`` sorts:
    after the names that start below b"." (``-x``, ``+page``, ``#x#``), before the others. The mark is a
    subtree item with no name, so the loops over entries pay nothing for it. None when every name sorts
    below b".": the entry then comes after all of them (a part of a split directory cannot know that no
    later part holds more such names)."""
    at = bisect.bisect_left(items, b".", key=_KEY)
    if at == len(items):
        return items
    return [*items[:at], (b".", True, "", st), *items[at:]]


def size_points(items: list[Item], part_bytes: int) -> list[bytes]:
    """Split points that give each part about ``part_bytes`` of regular files (none for small dirs)."""
    points: list[bytes] = []
    if sum([item[3].st_size for item in items]) < part_bytes:  # counts more than files: only a bound
        return points
    gathered = 0
    for key, sub, _name, st in items:
        if gathered >= part_bytes:
            points.append(key)
            gathered = 0
        if not sub and st.st_mode & _FMT == _REG:
            gathered += st.st_size
    return points


def lost(rel: str, name: str, exc: OSError) -> SnapshotError:
    path = f"{rel}/{name}" if rel else name
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return SnapshotError("vanished while the snapshot was taken", path=path, code="VANISHED")
    return SnapshotError(f"I/O error: {exc.strerror or exc}", path=path, code="IO_ERROR")


#: The lstat fields the stat cache compares, in the order fingerprints and rows hold them.
STAMP = attrgetter("st_ino", "st_dev", "st_size", "st_mode", "st_mtime_ns", "st_ctime_ns")

#: Timestamp granularity assumed for file systems with sub-second timestamps (Linux stamps files from a
#: coarse clock that ticks every 1-10 ms; 100 ms leaves a wide margin).
FINE_GRANULARITY_NS = 100_000_000
#: For file systems whose timestamps are whole seconds (ext4 with small inodes, FAT: 2 s, some NFS).
COARSE_GRANULARITY_NS = 2_000_000_000


def granularity_ns(mtime_ns: int, ctime_ns: int) -> int:
    """The timestamp granularity to assume for a file with these timestamps."""
    if mtime_ns % 1_000_000_000 == 0 and ctime_ns % 1_000_000_000 == 0:
        return COARSE_GRANULARITY_NS
    return FINE_GRANULARITY_NS


def racy(mtime_ns: int, ctime_ns: int, taken_ns: int) -> bool:
    """True when an entry with these timestamps, listed by a snapshot started at ``taken_ns``, is *racily
    clean*: it could be written again in the same clock tick without any timestamp moving (git's "racy
    git" problem), so what was recorded for it is never trusted."""
    limit = taken_ns - granularity_ns(mtime_ns, ctime_ns)
    return mtime_ns >= limit or ctime_ns >= limit


def trusted_stamp(stamp: tuple[int, ...], taken_ns: int, st: os.stat_result) -> bool:
    """The stat cache's rule: a digest recorded for a regular file whose ``lstat`` fields were ``stamp``
    (:data:`STAMP`), by a snapshot that listed it at ``taken_ns``, stands for the file whose ``lstat`` is
    ``st`` only when every field matches (a same-size rewrite with the mtime put back still moves
    ``ctime``) and the record is not racily clean."""
    return stat.S_ISREG(st.st_mode) and STAMP(st) == stamp and not racy(stamp[4], stamp[5], taken_ns)


_MTIME, _CTIME = itemgetter(4), itemgetter(5)
_KEY = itemgetter(0)


def fingerprint(names: list[str], stamps: list[tuple[int, ...]]) -> tuple[bytes, int]:
    """A part's fingerprint: one hash of the names :func:`listed` gave, in listing order, with their
    :data:`STAMP` fields; and the newest timestamp among them.

    An unchanged directory lists in the same order again, so the fingerprint is taken without sorting; a
    directory listed in another order only misses its stored answer (equal fingerprints still mean the same
    names with the same ``lstat`` fields, which give the same entries and subdirectories). The numbers are
    serialised by ``marshal`` version 2 (no object references, so equal values give equal bytes).
    """
    joined = "\0".join(names).encode("utf-8", "surrogateescape")
    newest = max(max(map(_MTIME, stamps), default=0), max(map(_CTIME, stamps), default=0))
    return hashlib.sha256(joined + b"\0\0" + marshal.dumps(stamps, 2)).digest(), newest


def split_points(listing: list[os.DirEntry[str]], every: int) -> list[bytes]:
    keys: list[bytes] = []
    for dirent in listing:
        key = to_bytes(dirent.name)
        keys.append(key)
        try:
            if dirent.is_dir(follow_symlinks=False):
                keys.append(key + b"/")
        except OSError:
            pass
    keys.sort()
    return keys[every::every]
