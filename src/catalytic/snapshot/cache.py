"""The stat cache: reuse a file's digest when nothing about the file can have changed since it was hashed.

One SQLite file per (domain directory, hash algorithm) under ``<runs root>/_cache/``. Rows are keyed by
the raw bytes of the path, so reading them ``ORDER BY key`` gives the walk's order and the lookup is a
merge-join of two sorted streams (constant memory). A row is trusted only when:

* the file's type, size, mode, inode, device, ``mtime_ns`` and ``ctime_ns`` all equal the row's (a
  same-size rewrite with the mtime put back still moves ``ctime``);
* the row is not *racily clean*: its ``mtime_ns`` and ``ctime_ns`` are older than the moment the
  snapshot that wrote it started, by more than the file system's timestamp granularity. A file written in
  the same clock tick as our ``stat`` could be written again without any timestamp moving (git's
  "racy git" problem), so such rows are never trusted and the file is hashed again;
* the row's CRC matches its fields, and the file's metadata (format, algorithm, directory) matches ours.

A cache that cannot be opened, has the wrong format, belongs to another directory or algorithm, or has a
corrupt row is ignored from that point on and rewritten: it can only cost time, never correctness.
Each snapshot writes a fresh cache file and renames it into place, so readers never see a torn file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from catalytic.snapshot.listing import STAMP

if TYPE_CHECKING:
    import sqlite3

FORMAT = "catalytic.statcache/1"
#: Timestamp granularity assumed for file systems with sub-second timestamps (Linux stamps files from a
#: coarse clock that ticks every 1-10 ms; 100 ms leaves a wide margin).
FINE_GRANULARITY_NS = 100_000_000
#: For file systems whose timestamps are whole seconds (ext4 with small inodes, FAT: 2 s, some NFS).
COARSE_GRANULARITY_NS = 2_000_000_000
_PACK = struct.Struct("<6q")
_BATCH = 2048

Row = tuple[bytes, int, int, int, int, int, int, str]  # key, ino, dev, size, mode, mtime_ns, ctime_ns, digest


def _crc(row: Row) -> int:
    key, ino, dev, size, mode, mtime, ctime, digest = row
    return zlib.crc32(b"%b\0%b%b" % (key, _PACK.pack(ino, dev, size, mode, mtime, ctime), digest.encode()))


def granularity_ns(mtime_ns: int, ctime_ns: int) -> int:
    """The timestamp granularity to assume for a file with these timestamps."""
    if mtime_ns % 1_000_000_000 == 0 and ctime_ns % 1_000_000_000 == 0:
        return COARSE_GRANULARITY_NS
    return FINE_GRANULARITY_NS


def racy(mtime_ns: int, ctime_ns: int, taken_ns: int) -> bool:
    """True when a row with these timestamps, recorded by a snapshot started at ``taken_ns``, is racy."""
    limit = taken_ns - granularity_ns(mtime_ns, ctime_ns)
    return mtime_ns >= limit or ctime_ns >= limit


def trusted_stamp(stamp: tuple[int, ...], taken_ns: int, st: os.stat_result) -> bool:
    """The stat cache's rule (both engines): a digest recorded for a regular file whose ``lstat`` fields
    were ``stamp`` (inode, device, size, mode, ``mtime_ns``, ``ctime_ns``), by a snapshot that listed it at
    ``taken_ns``, stands for the file whose ``lstat`` is ``st`` only when every field matches (a same-size
    rewrite with the mtime put back still moves ``ctime``) and the record is not racily clean."""
    return stat.S_ISREG(st.st_mode) and STAMP(st) == stamp and not racy(stamp[4], stamp[5], taken_ns)


def cache_path(cache_dir: Path, directory: Path, algorithm: str) -> Path:
    """Where the cache of ``directory`` (hashed with ``algorithm``) lives."""
    ident = hashlib.sha256(os.fsencode(os.path.abspath(directory)) + b"\0" + algorithm.encode()).hexdigest()
    return cache_dir / f"{ident[:32]}.sqlite"


def row_of(key: bytes, st: os.stat_result, digest: str) -> Row:
    return (key, st.st_ino, st.st_dev, st.st_size, st.st_mode, st.st_mtime_ns, st.st_ctime_ns, digest)


class CacheReader:
    """Streams the rows of an existing cache in key order; unusable caches yield nothing.

    ``state`` ends as ``missing``, ``valid``, ``foreign`` or ``corrupt``.
    """

    def __init__(self, path: Path, directory: str, algorithm: str) -> None:
        self.path = path
        self.state = "missing"
        self.taken_ns = 0
        self.conn: sqlite3.Connection | None = None
        if not path.exists():
            return
        import sqlite3

        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.Error:
            self.state = "corrupt"
            return
        ident = (meta.get("format"), meta.get("algorithm"), meta.get("directory"))
        if ident != (FORMAT, algorithm, os.fsencode(directory)):  # raw bytes: any name can be stored
            self.state = "foreign"
            conn.close()
            return
        try:
            self.taken_ns = int(meta["taken_ns"])
        except (KeyError, ValueError):
            self.state = "corrupt"
            conn.close()
            return
        self.state = "valid"
        self.conn = conn

    def rows(self, upto: bytes | None = None) -> Iterator[Row]:
        """Verified rows in key order (only keys <= ``upto`` if given); a bad row ends the stream."""
        if self.conn is None:
            return
        import sqlite3

        query = "SELECT key, ino, dev, size, mode, mtime_ns, ctime_ns, digest, crc FROM files"
        args: tuple[bytes, ...] = ()
        if upto is not None:
            query += " WHERE key <= ?"
            args = (upto,)
        previous = b""
        try:
            for record in self.conn.execute(query + " ORDER BY key", args):
                row: Row = record[:8]
                ordered = isinstance(row[0], bytes) and row[0] > previous
                if not ordered or type(row[7]) is not str or record[8] != _crc(row):
                    self.state = "corrupt"
                    return
                previous = row[0]
                yield row
        except (sqlite3.Error, TypeError, ValueError, struct.error, AttributeError, UnicodeError):
            self.state = "corrupt"

    def trusted(self, row: Row, st: os.stat_result) -> bool:
        """True when ``row`` may stand for the file whose ``lstat`` is ``st``."""
        return trusted_stamp(row[1:7], self.taken_ns, st)

    def close(self) -> None:
        import sqlite3

        if self.conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()
            self.conn = None


class CacheWriter:
    """Writes a new cache next to the old one and renames it into place on :meth:`commit`.

    Nothing is created until the first row arrives; committing without rows removes the old cache.
    """

    def __init__(self, path: Path, directory: str, algorithm: str, taken_ns: int) -> None:
        self.path = path
        self.meta = [
            ("format", FORMAT),
            ("algorithm", algorithm),
            ("directory", os.fsencode(directory)),
            ("taken_ns", str(taken_ns)),
        ]
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        self.conn: sqlite3.Connection | None = None
        self.pending: list[tuple[object, ...]] = []

    def _open(self) -> sqlite3.Connection:
        import sqlite3

        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.tmp)
        self.conn = conn  # from here on abort() removes the file, whatever fails next
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute(
            "CREATE TABLE files (key BLOB PRIMARY KEY, ino INTEGER, dev INTEGER, size INTEGER, mode INTEGER,"
            " mtime_ns INTEGER, ctime_ns INTEGER, digest TEXT, crc INTEGER) WITHOUT ROWID"
        )
        conn.executemany("INSERT INTO meta VALUES (?, ?)", self.meta)
        return conn

    def add(self, row: Row) -> None:
        self.pending.append((*row, _crc(row)))
        if len(self.pending) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        conn = self.conn or self._open()
        conn.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", self.pending)
        self.pending.clear()

    def commit(self) -> None:
        """Put the new cache in place (failures only cost speed: the cache is dropped)."""
        import sqlite3

        try:
            self._flush()
            if self.conn is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                return
            self.conn.commit()
            self.conn.close()
            os.replace(self.tmp, self.path)
        except (sqlite3.Error, OSError):
            self.abort()

    def abort(self) -> None:
        import sqlite3

        if self.conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
