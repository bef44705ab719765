"""The row store: what the last snapshot of a domain saw, one SQLite row per entry, keyed by directory.

It is both the stat cache across runs and, within a run, the pre-run snapshot that the post-run snapshot is
compared with, directory by directory, in the worker processes (:mod:`catalytic.snapshot.dirscan`). One file
per (domain directory, hash algorithm) under ``<runs root>/_cache/``; WAL mode, so the workers of a snapshot
read and write it at the same time, each directory in its own transaction.

A row holds the entry's name, the ``lstat`` fields the cache key needs (inode, device, size, mode,
``mtime_ns``, ``ctime_ns``), the moment the snapshot started listing its directory (``taken``), its
manifest value and permission bits, and a CRC over all of them. A row stands for a file without hashing it
again only under the rules in :func:`trusted`. After each directory is listed its rows are made to match
what was seen (new and changed rows written, vanished ones deleted with everything below them), so the
store is always a set of true observations: a corrupt or foreign file is deleted and rebuilt, a row whose
CRC does not match is ignored. The store can only cost time, never correctness.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalytic.snapshot.cache import racy

if TYPE_CHECKING:
    import sqlite3

FORMAT = "catalytic.rowstore/1"
#: The directory key of the domain's own entry (``.``): no real directory key contains a NUL byte.
TOP_DIR = b"\0"
_PACK = struct.Struct("<7q")
_BUSY_MS = 600_000

# name, ino, dev, size, st_mode, mtime_ns, ctime_ns, taken_ns, value, mode (None for symlinks)
Row = tuple[bytes, int, int, int, int, int, int, int, str, str | None]

_COLUMNS = "name, ino, dev, size, mode, mtime_ns, ctime_ns, taken_ns, value, vmode, crc"
_LISTING = "hi, fingerprint, taken_ns, payload, crc"


@dataclass(frozen=True)
class Listing:
    """What one part of a directory looked like (``fingerprint``) and what it gave (``payload``)."""

    lo: bytes
    hi: bytes | None
    fingerprint: bytes
    taken_ns: int
    payload: bytes


def _listing_crc(dir_key: bytes, listing: Listing) -> int:
    head = _PACK.pack(listing.taken_ns, len(dir_key), len(listing.lo), len(listing.hi or b""), 0, 0, 0)
    return zlib.crc32(
        head + dir_key + listing.lo + (listing.hi or b"") + listing.fingerprint + listing.payload
    )


def crc(dir_key: bytes, row: Row) -> int:
    name, ino, dev, size, mode, mtime, ctime, taken, value, vmode = row
    packed = _PACK.pack(ino, dev, size, mode, mtime, ctime, taken)
    return zlib.crc32(b"%b\0%b\0%b%b\0%b" % (dir_key, name, packed, value.encode(), (vmode or "-").encode()))


def trusted(row: Row | None, st: os.stat_result) -> bool:
    """True when ``row`` may stand for the regular file whose ``lstat`` is ``st`` (no re-hash).

    Type, size, mode, inode, device, ``mtime_ns`` and ``ctime_ns`` must all match (a same-size rewrite
    with the mtime put back still moves ``ctime``), and the row must not be *racily clean*: a file whose
    timestamps are within the file system's granularity of the moment its directory was listed could
    have been written again without any timestamp moving (git's "racy git" problem).
    """
    return (
        row is not None
        and row[4] == st.st_mode
        and stat.S_ISREG(st.st_mode)
        and row[3] == st.st_size
        and row[1] == st.st_ino
        and row[2] == st.st_dev
        and row[5] == st.st_mtime_ns
        and row[6] == st.st_ctime_ns
        and not racy(row[5], row[6], row[7])
    )


def store_path(cache_dir: Path, directory: str, algorithm: str) -> Path:
    """Where the row store of ``directory`` (hashed with ``algorithm``) lives."""
    ident = hashlib.sha256(os.fsencode(directory) + b"\0" + algorithm.encode()).hexdigest()
    return cache_dir / f"{ident[:32]}.rows.sqlite"


def _connect(path: Path) -> sqlite3.Connection:
    import sqlite3

    conn = sqlite3.connect(path, timeout=_BUSY_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
    conn.execute("PRAGMA synchronous=OFF")
    return conn


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def prepare(path: Path, directory: str, algorithm: str) -> str:
    """Make ``path`` a usable store for ``directory``; returns ``used`` or ``rebuilt``.

    A missing, unreadable, foreign or otherwise unusable file is deleted and created anew (``rebuilt``).
    """
    import sqlite3

    meta = {"format": FORMAT, "algorithm": algorithm, "directory": directory}
    if path.exists():
        try:
            conn = _connect(path)
            try:
                found = dict(conn.execute("SELECT name, value FROM meta").fetchall())
                conn.execute(f"SELECT {_COLUMNS} FROM files LIMIT 1").fetchall()
                conn.execute(f"SELECT {_LISTING} FROM listings LIMIT 1").fetchall()
            finally:
                conn.close()
            if found == meta:
                return "used"
        except sqlite3.Error:
            pass
        _remove(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = _connect(path)
    done = False
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN")
        conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute(
            "CREATE TABLE files (dir BLOB NOT NULL, name BLOB NOT NULL, ino INTEGER, dev INTEGER,"
            " size INTEGER, mode INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, taken_ns INTEGER,"
            " value TEXT, vmode TEXT, crc INTEGER, PRIMARY KEY (dir, name)) WITHOUT ROWID"
        )
        conn.execute(
            "CREATE TABLE listings (dir BLOB NOT NULL, lo BLOB NOT NULL, hi BLOB, fingerprint BLOB,"
            " taken_ns INTEGER, payload BLOB, crc INTEGER, PRIMARY KEY (dir, lo)) WITHOUT ROWID"
        )
        conn.executemany("INSERT INTO meta VALUES (?, ?)", sorted(meta.items()))
        conn.execute("COMMIT")
        done = True
    finally:
        conn.close()
        if not done:  # a half-made store (e.g. the disk is full) is not left behind
            _remove(path)
    return "rebuilt"


def discard(path: Path) -> None:
    """Delete a store that turned out to be unusable mid-snapshot (the next run rebuilds it)."""
    _remove(path)


def _decode(dir_key: bytes, record: tuple[Any, ...]) -> Row | None:
    row: Row = record[:10]
    if record[10] != crc(dir_key, row):
        return None
    return row


class Rows:
    """One process's connection to a store (open it after ``fork``, never share it across one)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pid = os.getpid()
        self.conn = _connect(path)
        self.bad_rows = 0

    def listing(self, dir_key: bytes, lo: bytes | None = None, hi: bytes | None = None) -> dict[bytes, Row]:
        """The rows of the entries of directory ``dir_key`` whose names lie in ``[lo, hi)``."""
        query = f"SELECT {_COLUMNS} FROM files WHERE dir = ?"
        args: list[bytes] = [dir_key]
        if lo is not None:
            query += " AND name >= ?"
            args.append(lo)
        if hi is not None:
            query += " AND name < ?"
            args.append(hi)
        found: dict[bytes, Row] = {}
        for record in self.conn.execute(query, args):
            row = _decode(dir_key, record)
            if row is None:
                self.bad_rows += 1
                found[record[0]] = (record[0], -1, -1, -1, -1, -1, -1, -1, "", None)  # deleted on write
                continue
            found[row[0]] = row
        return found

    def cached(self, dir_key: bytes, lo: bytes | None, hi: bytes | None) -> Listing | None:
        """The stored listing of this part of directory ``dir_key``, if it is intact."""
        found = self.conn.execute(
            f"SELECT {_LISTING} FROM listings WHERE dir = ? AND lo = ?", (dir_key, lo or b"")
        ).fetchone()
        if found is None:
            return None
        stored_hi, fingerprint, taken, payload, check = found
        if stored_hi != hi or not isinstance(fingerprint, bytes) or not isinstance(payload, bytes):
            return None
        listing = Listing(lo or b"", hi, fingerprint, taken, payload)
        if not isinstance(taken, int) or check != _listing_crc(dir_key, listing):
            self.bad_rows += 1
            return None
        return listing

    def subtree(self, dir_key: bytes) -> list[tuple[bytes, Row]]:
        """Every row below directory ``dir_key`` (its entries and theirs), unordered."""
        query = f"SELECT dir, {_COLUMNS} FROM files WHERE dir = ? OR (dir >= ? AND dir < ?)"
        out: list[tuple[bytes, Row]] = []
        for record in self.conn.execute(query, (dir_key, dir_key + b"/", dir_key + b"0")):
            row = _decode(record[0], record[1:])
            if row is None:
                self.bad_rows += 1
                continue
            out.append((record[0], row))
        return out

    def everything(self) -> list[tuple[bytes, Row]]:
        """Every row but the domain's own, unordered."""
        out: list[tuple[bytes, Row]] = []
        for record in self.conn.execute(f"SELECT dir, {_COLUMNS} FROM files WHERE dir != ?", (TOP_DIR,)):
            row = _decode(record[0], record[1:])
            if row is None:
                self.bad_rows += 1
                continue
            out.append((record[0], row))
        return out

    def write(
        self,
        dir_key: bytes,
        upserts: list[Row],
        deletes: list[bytes],
        subtrees: list[bytes],
        listing: Listing | None = None,
    ) -> None:
        """Apply one directory's changes in one transaction (``subtrees``: directory keys to empty)."""
        if not (upserts or deletes or subtrees or listing):
            return
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sub in subtrees:
                for table in ("files", "listings"):
                    conn.execute(
                        f"DELETE FROM {table} WHERE dir = ? OR (dir >= ? AND dir < ?)",
                        (sub, sub + b"/", sub + b"0"),
                    )
            if listing is not None:
                # Parts of this directory cut at other points are gone now.
                if listing.hi is None:
                    conn.execute("DELETE FROM listings WHERE dir = ? AND lo >= ?", (dir_key, listing.lo))
                else:
                    conn.execute(
                        "DELETE FROM listings WHERE dir = ? AND lo >= ? AND lo < ?",
                        (dir_key, listing.lo, listing.hi),
                    )
                conn.execute(
                    "INSERT INTO listings VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        dir_key,
                        listing.lo,
                        listing.hi,
                        listing.fingerprint,
                        listing.taken_ns,
                        listing.payload,
                        _listing_crc(dir_key, listing),
                    ),
                )
            if deletes:
                conn.executemany(
                    "DELETE FROM files WHERE dir = ? AND name = ?", [(dir_key, n) for n in deletes]
                )
            if upserts:
                conn.executemany(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(dir_key, *row, crc(dir_key, row)) for row in upserts],
                )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise

    def clear(self) -> None:
        """Delete every row but the domain's own (the domain is gone or is not a directory)."""
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("DELETE FROM files WHERE dir != ?", (TOP_DIR,))
        self.conn.execute("DELETE FROM listings")
        self.conn.execute("COMMIT")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()
