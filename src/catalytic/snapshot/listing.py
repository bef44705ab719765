"""One directory's listing as a snapshot task sees it: entries with their ``lstat``, in walk order.

A directory's *walk keys* are its entries' names and, for each subdirectory, its name followed by ``/``
(where the subdirectory's contents come in the walk). Parts of a directory are ranges of walk keys. A
part's *fingerprint* hashes the ``lstat`` fields the stat cache compares with every name: for a whole
directory in the order it lists (:func:`whole_fingerprint`), for a part of a huge one with every walk key
in walk order (:func:`fingerprint`).
"""

from __future__ import annotations

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


def stat_all(listing: list[os.DirEntry[str]], rel: str) -> list[os.stat_result]:
    """Every entry's ``lstat``, in listing order (an entry that cannot be read: VANISHED or IO_ERROR)."""
    if not faults.ACTIVE:
        try:  # the common case in one comprehension; an entry that cannot be read takes the loop below
            return [d.stat(follow_symlinks=False) for d in listing]
        except OSError:
            pass
    stats = []
    for dirent in listing:
        faults.point("entry")
        try:
            stats.append(dirent.stat(follow_symlinks=False))
        except OSError as exc:
            raise lost(rel, dirent.name, exc) from exc
    return stats


def walk_items(listing: list[os.DirEntry[str]], stats: list[os.stat_result]) -> list[Item]:
    """A whole directory's entries and subdirectory contents in walk order (``stats``: :func:`stat_all`)."""
    pairs = zip(listing, stats, strict=True)
    items = [(d.name.encode("utf-8", "surrogateescape"), False, d.name, st) for d, st in pairs]
    items += [(key + b"/", True, name, st) for key, _, name, st in items if st.st_mode & _FMT == _DIR]
    items.sort()  # by walk key: keys are unique, so the lstat results are never compared
    return items


def select(listing: list[os.DirEntry[str]], rel: str, lo: bytes | None, hi: bytes | None) -> list[Item]:
    """The entries and subdirectory contents of the part ``[lo, hi)``, with their ``lstat``, in walk order."""
    items: list[Item] = []
    append = items.append
    for dirent in listing:
        name = dirent.name
        key = to_bytes(name)
        entry_in = (lo is None or key >= lo) and (hi is None or key < hi)
        sub_in = (lo is None or key + b"/" >= lo) and (hi is None or key + b"/" < hi)
        if not (entry_in or sub_in):
            continue
        faults.point("entry")
        try:
            st = dirent.stat(follow_symlinks=False)
        except OSError as exc:
            raise lost(rel, name, exc) from exc
        if entry_in:
            append((key, False, name, st))
        if sub_in and st.st_mode & _FMT == _DIR:
            append((key + b"/", True, name, st))
    items.sort()
    return items


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
_KEY, _LSTAT = itemgetter(0), itemgetter(3)
_MTIME, _CTIME = itemgetter(4), itemgetter(5)


def fingerprint(items: list[Item]) -> tuple[bytes, int]:
    """A part's fingerprint: one hash of every walk key and the ``lstat`` fields the stat cache compares, in
    walk order; and the newest timestamp among them."""
    # A subdirectory's contents carry its lstat too: a part may hold them without the entry itself.
    stamps = list(map(STAMP, map(_LSTAT, items)))
    return seal(list(map(_KEY, items)), stamps), newest(stamps)


def whole_fingerprint(names: list[str], stamps: list[tuple[int, ...]]) -> tuple[bytes, int]:
    """A whole directory's fingerprint: its entries' names and :data:`STAMP` fields in *listing* order.

    An unchanged directory lists in the same order again, so its fingerprint is taken without sorting; a
    directory listed in another order only misses the stored answer (equal fingerprints still mean equal
    entries: the same names with the same ``lstat`` fields, which also give the same subdirectories).
    """
    joined = "\0".join(names).encode("utf-8", "surrogateescape")
    return hashlib.sha256(joined + b"\0\0" + marshal.dumps(stamps, 2)).digest(), newest(stamps)


def newest(stamps: list[tuple[int, ...]]) -> int:
    """The newest modification or change time among :data:`STAMP` tuples (0 for none)."""
    return max(max(map(_MTIME, stamps), default=0), max(map(_CTIME, stamps), default=0))


def seal(keys: list[bytes], stamps: list[tuple[int, ...]]) -> bytes:
    """The fingerprint of walk keys and their ``lstat`` fields (:data:`STAMP` tuples in the same order).

    The numbers are serialised by ``marshal`` version 2 (no object references, so equal values give equal
    bytes): one C call for the whole part.
    """
    return hashlib.sha256(b"\0".join(keys) + b"\0\0" + marshal.dumps(stamps, 2)).digest()


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
