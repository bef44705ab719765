"""The row store: what the last snapshot of a domain saw, one SQLite row per part of a directory.

It is both the stat cache across runs and, within a run, the pre-run snapshot that the post-run snapshot is
compared with, directory by directory, in the worker processes (:mod:`catalytic.snapshot.dirscan`). One file
per (domain directory, hash algorithm) under ``<runs root>/_cache/``; WAL mode, so the workers of a snapshot
read and write it at the same time, each part of a directory in its own transaction.

A part (a whole directory, or a slice of walk keys of a huge one) is stored with a fingerprint of what its
listing looked like (every name and the ``lstat`` fields the cache key needs: inode, device, size, mode,
``mtime_ns``, ``ctime_ns``), the moment its listing started, its answer (the manifest text, Merkle records
and subdirectories the snapshot produced), its entries (name, ``lstat`` fields, manifest value, permission
bits) and a CRC over all of it. A part whose listing is unchanged and not racily clean gives its stored
answer without describing any entry again; otherwise each entry whose row is trusted (:func:`trusted`)
keeps its digest and every other file is hashed. A corrupt or foreign file is deleted and rebuilt, a part
whose CRC does not match is ignored: the store can only cost time, never correctness.

The table of parts holds only small columns (SQLite reads and writes records of a few hundred KiB in a
key-ordered table slowly: a lookup walks pages of the big records); a part's answer and entries are in two
tables of their own, by the part's ``blob`` number, deleted with it by a trigger.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from catalytic.errors import SnapshotError
from catalytic.snapshot.attrs import RUNNER
from catalytic.snapshot.listing import trusted_stamp

if TYPE_CHECKING:
    import sqlite3

FORMAT = "catalytic.rowstore/9"
_BUSY_MS = 600_000


class Row(NamedTuple):
    """What a snapshot recorded for one entry of a directory (stored marshalled as a plain tuple)."""

    name: bytes
    ino: int
    dev: int
    size: int
    st_mode: int
    mtime_ns: int
    ctime_ns: int
    taken_ns: int  # when its directory was listed (0: not a regular file)
    value: str  # the manifest value
    mode: str | None  # the MODES value (None for symlinks)

    @property
    def stamp(self) -> tuple[int, int, int, int, int, int]:
        """The ``lstat`` fields the stat cache compares (:data:`~catalytic.snapshot.listing.STAMP`)."""
        return (self.ino, self.dev, self.size, self.st_mode, self.mtime_ns, self.ctime_ns)


_COLUMNS = "lo, snap, hi, fingerprint, taken_ns, payload, crc"
_ROWS = "rows, rows_crc"
_JOIN = "parts JOIN payloads ON payloads.id = parts.blob"
_JOIN_ROWS = _JOIN + " JOIN entries ON entries.id = parts.blob"
#: Large pages: a part is one row of a few hundred KiB, read in a few syscalls. No memory map: mapped pages
#: would count in the resident size of every worker that reads them.
_PAGE_SIZE = 65536
_MMAP_SIZE = 0
_HEAD = struct.Struct("<3q")


@dataclass(frozen=True)
class Part:
    """What one part of a directory (walk keys ``[lo, hi)``) looked like and what it gave.

    ``fingerprint`` hashes the names and ``lstat`` fields of the part (:mod:`catalytic.snapshot.listing`);
    ``payload`` is the part's answer (:mod:`catalytic.snapshot.dirscan`); ``rows`` its entries (marshalled
    :data:`Row` tuples by name); ``snap`` the snapshot that wrote it. ``rows`` is empty unless they were asked
    for.
    """

    lo: bytes
    hi: bytes | None
    snap: int
    fingerprint: bytes
    taken_ns: int
    payload: bytes
    rows: bytes


def _crc(dir_key: bytes, part: Part) -> int:
    head = _HEAD.pack(part.snap, part.taken_ns, -1 if part.hi is None else len(part.hi))
    bounds = b"%b\0%b\0%b\0" % (dir_key, part.lo, part.hi or b"")
    return zlib.crc32(part.payload, zlib.crc32(head + bounds + part.fingerprint))


def _rows_crc(dir_key: bytes, part: Part) -> int:
    head = _HEAD.pack(part.snap, 0, 0)
    return zlib.crc32(part.rows, zlib.crc32(head + b"%b\0%b\0" % (dir_key, part.lo)))


def trusted(row: Row | None, st: os.stat_result) -> bool:
    """True when ``row`` may stand for the regular file whose ``lstat`` is ``st`` (no re-hash): the stat
    cache's rule (:func:`catalytic.snapshot.listing.trusted_stamp`), with the moment the row's directory was
    listed."""
    return row is not None and trusted_stamp(row.stamp, row.taken_ns, st)


def store_failure(store: Path | None, exc: BaseException, *, io: bool = False) -> SnapshotError | None:
    """The ``STORE`` error for ``exc`` when it is the store's own failure (SQLite; with ``io`` any OSError,
    e.g. a full disk under the spools), else None.

    sqlite3 is imported only once a store exists (an empty domain never loads it), so it is looked up.
    """
    sqlite3 = sys.modules.get("sqlite3")
    ours = (sqlite3 is not None and isinstance(exc, sqlite3.Error)) or (io and isinstance(exc, OSError))
    if not ours:
        return None
    what = f"the snapshot store {store}" if store is not None else "the snapshot's spool files"
    return SnapshotError(f"{what} cannot be used: {exc}", path=".", code="STORE")


def store_path(cache_dir: Path, directory: str, algorithm: str) -> Path:
    """Where the row store of ``directory`` (hashed with ``algorithm``) lives."""
    ident = hashlib.sha256(os.fsencode(directory) + b"\0" + algorithm.encode()).hexdigest()
    return cache_dir / f"{ident[:32]}.rows.sqlite"


def _connect(path: Path) -> sqlite3.Connection:
    import sqlite3

    conn = sqlite3.connect(path, timeout=_BUSY_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute(f"PRAGMA mmap_size={_MMAP_SIZE}")
    return conn


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def prepare(path: Path, directory: str, algorithm: str) -> str:
    """Check the store at ``path`` for ``directory``: ``used`` (valid), ``rebuilt`` (unusable: deleted) or
    ``missing``. Nothing is created here: the first part with entries creates the store (:class:`Rows`), so a
    run over an empty domain never touches SQLite.
    """
    if not path.exists():
        return "missing"
    import sqlite3

    try:
        conn = _connect(path)
        try:
            found = dict(conn.execute("SELECT name, value FROM meta").fetchall())
            conn.execute(f"SELECT dir, {_COLUMNS}, {_ROWS} FROM {_JOIN_ROWS} LIMIT 1").fetchall()
        finally:
            conn.close()
        if found == _meta(directory, algorithm):
            return "used"
    except sqlite3.Error:
        pass
    _remove(path)
    return "rebuilt"


def stale_caches(cache_dir: Path) -> list[Path]:
    """The cache files under ``cache_dir`` whose directory no longer exists, that cannot be read, or that
    an older version wrote in another format: nothing would ever use them again."""
    import sqlite3

    stale: list[Path] = []
    try:
        names = sorted(os.listdir(cache_dir))
    except OSError:
        return stale
    for name in names:
        if not name.endswith(".sqlite") or name.startswith("."):
            continue
        path = cache_dir / name
        if not name.endswith(".rows.sqlite"):  # a stat cache of an older version: never read again
            stale.append(path)
            continue
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                found = conn.execute("SELECT value FROM meta WHERE name = 'directory'").fetchone()
            finally:
                conn.close()
            gone = found is None or not isinstance(found[0], bytes) or not os.path.isdir(found[0])
        except sqlite3.Error:
            gone = True
        if gone:
            stale.append(path)
    return stale


def remove_cache(path: Path) -> None:
    """Delete a cache file with its WAL and shared-memory files."""
    _remove(path)


def _meta(directory: str, algorithm: str) -> dict[str, str | bytes]:
    # The directory as its raw bytes: a name that is not UTF-8 cannot be SQLite text.
    # MODES values name the owner relative to the user taking the snapshot (:mod:`catalytic.snapshot.attrs`):
    # rows written by another user say other things.
    runner = f"{RUNNER[0]}:{RUNNER[1]}"
    return {"format": FORMAT, "algorithm": algorithm, "directory": os.fsencode(directory), "runner": runner}


def ensure(path: Path, directory: str, algorithm: str) -> None:
    """Create the store now if it does not exist (before worker processes start: they never create it)."""
    if not path.exists():
        _create(path, _meta(directory, algorithm))


def _create(path: Path, meta: dict[str, str | bytes]) -> None:
    """Create the store (statements tolerate a store that appeared meanwhile)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = _connect(path)
    try:
        conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS parts (dir BLOB NOT NULL, lo BLOB NOT NULL, snap INTEGER NOT NULL,"
            " hi BLOB, fingerprint BLOB, taken_ns INTEGER, crc INTEGER, rows_crc INTEGER, blob INTEGER,"
            " PRIMARY KEY (dir, lo, snap)) WITHOUT ROWID"
        )
        conn.execute("CREATE TABLE IF NOT EXISTS payloads (id INTEGER PRIMARY KEY, payload BLOB)")
        conn.execute("CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY, rows BLOB)")
        conn.execute(
            "CREATE TRIGGER IF NOT EXISTS part_gone AFTER DELETE ON parts BEGIN"
            " DELETE FROM payloads WHERE id = OLD.blob; DELETE FROM entries WHERE id = OLD.blob; END"
        )
        conn.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", sorted(meta.items()))
        conn.execute("COMMIT")
    finally:
        conn.close()


def rows_of(part: Part) -> list[Row] | None:
    """The entries of a part, or None when they cannot be read back."""
    try:
        rows = marshal.loads(part.rows)
        return [Row._make(row) for row in rows] if isinstance(rows, list) else None
    except (ValueError, EOFError, TypeError):
        return None


class Rows:
    """One process's connection to a store (open it after ``fork``, never share it across one)."""

    def __init__(self, path: Path | None, directory: str, algorithm: str) -> None:
        """``path`` None: no store at all (nothing is read or written: every answer is described)."""
        self.path = path
        self.meta = _meta(directory, algorithm)
        self.pid = os.getpid()
        self.conn: sqlite3.Connection | None = None
        self.bad = 0
        # Parts written while held (:meth:`hold`), stored together by :meth:`flush`.
        self.held: list[tuple[bytes, Part, bool, list[bytes], int]] | None = None

    def _open(self, *, create: bool) -> sqlite3.Connection | None:
        """The connection; None when there is no store yet (and ``create`` is False)."""
        if self.path is None:
            return None
        if self.conn is None:
            if not self.path.exists():
                if not create:
                    return None
                _create(self.path, self.meta)
            self.conn = _connect(self.path)
        return self.conn

    @property
    def exists(self) -> bool:
        return self.conn is not None or (self.path is not None and self.path.exists())

    def _parts(self, where: str, args: tuple[Any, ...], *, rows: bool = False) -> list[tuple[bytes, Part]]:
        conn = self._open(create=False)
        if conn is None:
            return []
        columns = f"dir, {_COLUMNS}, {_ROWS}" if rows else f"dir, {_COLUMNS}"
        out: list[tuple[bytes, Part]] = []
        tables = _JOIN_ROWS if rows else _JOIN
        for record in conn.execute(f"SELECT {columns} FROM {tables} WHERE {where}", args):
            dir_key, lo, snap, hi, fingerprint, taken, payload, check = record[:8]
            try:
                part = Part(lo, hi, snap, fingerprint, taken, payload, record[8] if rows else b"")
                intact = check == _crc(dir_key, part) and (not rows or record[9] == _rows_crc(dir_key, part))
            except (TypeError, struct.error):
                intact = False
            if not intact:
                self.bad += 1
                continue
            out.append((dir_key, part))
        return out

    def parts_at(self, dir_key: bytes, lo: bytes | None) -> list[Part]:
        """The stored parts of ``dir_key`` that start at ``lo``, newest first (without their entries). Empty
        for a directory the store has never seen (every directory's first part starts at ``b""``)."""
        found = [part for _d, part in self._parts("dir = ? AND lo = ?", (dir_key, lo or b""))]
        found.sort(key=lambda part: -part.snap)
        return found

    def entries(self, dir_key: bytes, lo: bytes | None, hi: bytes | None, snap: int = 0) -> dict[bytes, Row]:
        """The stored entries of directory ``dir_key`` whose names lie in ``[lo, hi)``.

        Parts the snapshot ``snap`` already wrote are left out: they are not the state it compares with.
        """
        parts = [(d, p) for d, p in self._parts("dir = ?", (dir_key,), rows=True) if p.snap != snap]
        return {
            row.name: row
            for _d, row in self._rows_of(parts)
            if (lo is None or row.name >= lo) and (hi is None or row.name < hi)
        }

    def below(self, dir_key: bytes) -> list[tuple[bytes, Row]]:
        """Every stored entry below directory ``dir_key`` (its entries and theirs), unordered."""
        return self._rows_of(self._parts("dir = ? OR (dir >= ? AND dir < ?)", _below(dir_key), rows=True))

    def everything(self) -> list[tuple[bytes, Row]]:
        """Every stored entry, unordered."""
        return self._rows_of(self._parts("1", (), rows=True))

    def _rows_of(self, parts: list[tuple[bytes, Part]]) -> list[tuple[bytes, Row]]:
        """The entries of the newest copy of each part (older copies were rewritten since)."""
        newest: dict[tuple[bytes, bytes], Part] = {}
        for dir_key, part in parts:
            kept = newest.get((dir_key, part.lo))
            if kept is None or kept.snap < part.snap:
                newest[(dir_key, part.lo)] = part
        out: list[tuple[bytes, Row]] = []
        for (dir_key, _lo), part in newest.items():
            rows = rows_of(part)
            if rows is None:
                self.bad += 1
                continue
            out.extend((dir_key, row) for row in rows)
        return out

    def hold(self) -> None:
        """Keep the parts written from now on until :meth:`flush` (one transaction for a task's parts)."""
        self.held = []

    def drop(self) -> None:
        """Forget the held parts (the task failed: the snapshot fails with it)."""
        self.held = None

    def flush(self) -> None:
        """Store the held parts in one transaction (a task's directories are not read again before)."""
        held, self.held = self.held, None
        if held:
            self._store(held)

    def write(self, dir_key: bytes, part: Part, *, replace: bool, emptied: list[bytes], entries: int) -> None:
        """Store one part (in one transaction, or with the others held: :meth:`hold`).

        ``replace``: the part is the whole directory, every other part of it goes. ``emptied``: directories
        (keys) that are gone, with everything below them. A part with no ``entries`` is not worth creating
        a store for.
        """
        if self.held is not None:
            self.held.append((dir_key, part, replace, emptied, entries))
        else:
            self._store([(dir_key, part, replace, emptied, entries)])

    def _store(self, parts: list[tuple[bytes, Part, bool, list[bytes], int]]) -> None:
        conn = self._open(create=any(entries > 0 for *_rest, entries in parts))
        if conn is None:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for dir_key, part, replace, emptied, _entries in parts:
                for sub in emptied:
                    conn.execute("DELETE FROM parts WHERE dir = ? OR (dir >= ? AND dir < ?)", _below(sub))
                if replace:
                    conn.execute("DELETE FROM parts WHERE dir = ?", (dir_key,))
                else:
                    conn.execute(
                        "DELETE FROM parts WHERE dir = ? AND lo = ? AND snap = ?",
                        (dir_key, part.lo, part.snap),
                    )
                blob = conn.execute("INSERT INTO payloads (payload) VALUES (?)", (part.payload,)).lastrowid
                conn.execute("INSERT INTO entries (id, rows) VALUES (?, ?)", (blob, part.rows))
                conn.execute(
                    "INSERT INTO parts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        dir_key,
                        part.lo,
                        part.snap,
                        part.hi,
                        part.fingerprint,
                        part.taken_ns,
                        _crc(dir_key, part),
                        _rows_crc(dir_key, part),
                        blob,
                    ),
                )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise

    def keep_parts(self, dir_key: bytes, los: list[bytes]) -> None:
        """After a split directory: keep the newest copy of each of its parts ``los``, drop the rest."""
        conn = self._open(create=False)
        if conn is None:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            newest: dict[bytes, int] = {}
            for lo, snap in conn.execute("SELECT lo, snap FROM parts WHERE dir = ?", (dir_key,)).fetchall():
                if lo in los:
                    newest[lo] = max(newest.get(lo, snap), snap)
            for lo, snap in conn.execute("SELECT lo, snap FROM parts WHERE dir = ?", (dir_key,)).fetchall():
                if newest.get(lo) != snap:
                    conn.execute(
                        "DELETE FROM parts WHERE dir = ? AND lo = ? AND snap = ?", (dir_key, lo, snap)
                    )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise

    def clear(self) -> None:
        """Delete every part (the domain is gone or is not a directory); the trigger takes their blobs."""
        conn = self._open(create=False)
        if conn is not None:
            conn.execute("DELETE FROM parts")

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


def _below(dir_key: bytes) -> tuple[bytes, bytes, bytes]:
    return dir_key, dir_key + b"/", dir_key + b"0"
