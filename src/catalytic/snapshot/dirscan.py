"""One directory of a parallel snapshot: list it, describe every entry, compare, encode (runs in a worker).

A task names a directory of the domain (by its path and the device and inode its parent listed) and a range
of walk keys. The worker opens the directory with ``O_NOFOLLOW`` and checks it is the very directory that
was listed, lists it, describes every entry exactly as :mod:`catalytic.snapshot.walker` does (files hashed
with the same race checks, unless a trusted row of the store stands for them), and returns the directory's
part of the manifest and MODES documents as canonical JSON text, its Merkle records, the subdirectories to
visit next, and, when comparing with the pre-run snapshot, what was added, removed or changed. It then
brings the directory's rows in the store up to date.

A directory with more entries than :data:`SPLIT`, or more than :data:`PART_BYTES` of files, is answered
with split points instead, and the parts are listed again as separate tasks (by walk key: an entry by its
name, a subdirectory's contents by its name followed by ``/``), so one huge directory still keeps every
worker busy.
"""

from __future__ import annotations

import errno
import hashlib
import marshal
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalytic import faults
from catalytic.diff import Change
from catalytic.errors import SnapshotError
from catalytic.excludes import NONE, Excludes
from catalytic.ledger.canonical import json_string
from catalytic.paths import ROOT, to_bytes
from catalytic.snapshot.attrs import usual, value_of
from catalytic.snapshot.digest import HasherFactory, hasher_factory
from catalytic.snapshot.entry import DIR, mode_string
from catalytic.snapshot.listing import (
    STAMP,
    Item,
    fingerprint,
    listed,
    racy,
    size_points,
    split_points,
    walk_items,
    with_root_mark,
)
from catalytic.snapshot.merkle import listing_hasher, listing_record
from catalytic.snapshot.rowstore import Part, Row, Rows, store_failure, trusted
from catalytic.snapshot.walker import (
    Hashed,
    WalkStats,
    describe_stat,
    hash_files,
    listed_reading,
    open_directory,
)

#: Directories with more entries than this are split into parts of about this size.
SPLIT = 2048
#: Directories holding more bytes of files than this are split into parts of about this many bytes.
PART_BYTES = 32 << 20
#: The item of a top directory's answer where the domain's own entry ``.`` belongs in byte order.
ROOT_HERE = ("r",)

# (path of the directory relative to the domain, "" for the domain itself; its device; its inode;
#  lowest walk key of the part, or None; walk key the part stops before, or None)
Task = tuple[str, int, int, bytes | None, bytes | None]


@dataclass(frozen=True)
class ScanConfig:
    """What every task of one snapshot shares (set before the workers are forked)."""

    top: bytes  # absolute path of the domain directory
    algorithm: str
    store: Path | None  # None: no store (nothing trusted, nothing kept)
    trust: bool  # may rows stand for unchanged files (False: --no-cache)
    compare: bool  # compare with the rows (the post-run snapshot)
    snap: int  # this snapshot's mark on the parts it writes
    # What is left out, with everything below it, as if it did not exist (never even lstat-ed).
    leave_out: Excludes = NONE


class DirResult:
    """What a task found (pickled from the worker back to the snapshot)."""

    __slots__ = ("below", "counts", "diff", "items", "listing", "records", "split")

    def __init__(self) -> None:
        # ("t", manifest text, modes text) and ("d", subdirectory path, device, inode), in walk order (or
        # ("D", path, device, inode, its answer) for one the task answered too, see :func:`scan`, and
        # ("F", path, device, inode, the flattened subtree) for one it answered whole: :func:`_flatten`); in
        # the top directory also ROOT_HERE, before its first name not below b"." (once per part that has
        # one: the walk writes the domain's own entry at the first it meets, or at the end).
        self.items: list[tuple[Any, ...]] = []
        # The Merkle records of the part's entries, in order; for a whole directory with entries, its
        # listing hash instead (``listing``: hashed here, in the worker, and kept with the stored answer).
        self.records = b""
        self.listing: bytes | None = None
        # files, dirs, other, bytes hashed, rows used, files hashed
        self.counts = (0, 0, 0, 0, 0, 0)
        self.diff: list[Change] = []
        self.split: list[bytes] | None = None
        # About how many entries the subdirectories found here hold (from their sizes): lets the snapshot
        # start its workers before it has described many entries itself.
        self.below = 0


# This process's connection to the store: {"rows": Rows}; one inherited across fork is never used.
_OPEN: dict[str, Rows] = {}


def _rows(config: ScanConfig) -> Rows:
    rows = _OPEN.get("rows")
    if rows is None or rows.pid != os.getpid() or rows.path != config.store:
        rows = _OPEN["rows"] = Rows(config.store, os.fsdecode(config.top), config.algorithm)
    return rows


def close_rows() -> None:
    rows = _OPEN.pop("rows", None)
    if rows is not None and rows.pid == os.getpid():
        rows.close()


def _open(config: ScanConfig, rel: str, dev: int, ino: int) -> int:
    path = config.top if not rel else config.top + b"/" + to_bytes(rel)
    try:
        fd = open_directory(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            raise SnapshotError(
                "was replaced while the snapshot was taken", path=rel, code="VANISHED"
            ) from exc
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise SnapshotError("cannot be read (permission denied)", path=rel, code="UNREADABLE") from exc
        raise SnapshotError(f"I/O error: {exc.strerror or exc}", path=rel, code="IO_ERROR") from exc
    st = os.fstat(fd)
    if st.st_dev != dev or st.st_ino != ino:
        os.close(fd)
        raise SnapshotError("was replaced while the snapshot was taken", path=rel, code="VANISHED")
    return fd


def _list(fd: int, rel: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(fd) as it:
            return list(it)
    except OSError as exc:
        raise SnapshotError(
            f"cannot be listed: {exc.strerror or exc}", path=rel or ".", code="IO_ERROR"
        ) from exc


def scan_many(config: ScanConfig, tasks: list[Task], budget: int = 0) -> list[DirResult]:
    """Run several tasks in one go (one message to a worker), sharing one ``budget`` (see :func:`scan`):
    the first task is always answered, the next ones while the budget lasts; the answers are those of the
    first tasks, in order (the caller sends the others again)."""
    store = _rows(config)
    try:
        store.hold()
        try:
            left = [budget]
            results: list[DirResult] = []
            for task in tasks:
                if results and left[0] <= 0:
                    break
                result = _scan(config, task)
                if result.split is None and task[3] is None and task[4] is None:
                    left[0] -= cost(result)
                    if budget > 0 and left[0] > 0:
                        _go_on(config, result, left)
                        _flatten(result)
                results.append(result)
        except BaseException:
            store.drop()
            raise
        store.flush()
        return results
    except Exception as exc:
        failure = store_failure(config.store, exc)
        if failure is not None:
            raise failure from exc
        raise


def scan(config: ScanConfig, task: Task, budget: int = 0) -> DirResult:
    """Run one task (see the module docstring); raises :class:`SnapshotError` for what cannot be read.

    With a ``budget`` (in :func:`cost` units), a whole directory's task goes on into the subdirectories it
    finds, depth first, until it has spent about that much: each one it answers replaces its ``("d", ...)``
    item by ``("D", path, device, inode, answer)``. The work handed to a worker is then an amount of work,
    not one directory, so a tree of many small directories is not bound by one round trip per directory.
    Their rows are written in one transaction at the end.

    A store that cannot be read or written (a full disk, a damaged file) is the error code ``STORE``.
    """
    return scan_many(config, [task], budget)[0]


def cost(result: DirResult) -> int:
    """What describing a part cost, about: an entry, or 64 KiB hashed (a cold file costs ~10 us)."""
    files, dirs, other, nbytes, _hits, _hashed = result.counts
    return 1 + files + dirs + other + (nbytes >> 16)


#: How many levels below its own directory a task answers (answers nest: pickling them recurses).
DEPTH = 32


def _go_on(config: ScanConfig, result: DirResult, left: list[int], depth: int = 1) -> None:
    """Answer ``result``'s subdirectories in place while ``left[0]`` lasts (depth first, in walk order)."""
    if depth > DEPTH:
        return
    items = result.items
    for index, item in enumerate(items):
        if item[0] != "d":
            continue
        if left[0] <= 0:
            return
        _tag, rel, dev, ino = item
        sub = _scan(config, (rel, dev, ino, None, None))
        if sub.split is not None:  # a huge directory: its parts go to every worker
            left[0] -= 1
            continue
        left[0] -= cost(sub)
        items[index] = ("D", rel, dev, ino, sub)
        _go_on(config, sub, left, depth + 1)


def _flatten(result: DirResult) -> bool:
    """Turn every ``("D", ...)`` item of ``result`` whose whole subtree is answered into ``("F", path,
    device, inode, (manifest text, MODES text, Merkle listing records, counts, differences))``: a subtree
    is contiguous in the documents, so the snapshot writes it in one piece instead of putting each of its
    directories in order itself. True when ``result`` is itself answered whole (nothing left to send)."""
    whole = True
    items = result.items
    for index, item in enumerate(items):
        kind = item[0]
        if kind == "D":
            sub: DirResult = item[4]
            if _flatten(sub):
                items[index] = ("F", item[1], item[2], item[3], _flat(item[1], sub))
            else:
                whole = False
        elif kind != "t":
            whole = False
    return whole


def _flat(rel: str, result: DirResult) -> tuple[str, str, bytes, tuple[int, ...], list[Change]]:
    """A subtree answered whole (its items only text and flattened subtrees) as one piece."""
    manifest: list[str] = []
    modes: list[str] = []
    listings: list[bytes] = []
    counts = list(result.counts)
    diff = list(result.diff)
    for item in result.items:
        if item[0] == "t":
            text, mode_text = item[1], item[2]
        else:
            text, mode_text, records, sub_counts, sub_diff = item[4]
            listings.append(records)
            counts = [a + b for a, b in zip(counts, sub_counts, strict=True)]
            diff.extend(sub_diff)
        if text:
            manifest.append(text)
        if mode_text:
            modes.append(mode_text)
    if result.listing is not None:  # post-order: the directory after everything below it
        listings.append(listing_record(rel or ROOT, result.listing))
    return ",".join(manifest), ",".join(modes), b"".join(listings), tuple(counts), diff


def _scan(config: ScanConfig, task: Task) -> DirResult:
    rel, dev, ino, lo, hi = task
    taken = time.time_ns()
    fd = _open(config, rel, dev, ino)
    try:
        listing = _list(fd, rel)
        whole = lo is None and hi is None
        if whole and len(listing) > SPLIT:
            return _split(split_points(listing, SPLIT))
        if config.leave_out:
            listing = config.leave_out.listing(rel, listing)
        store = _rows(config)
        stored = store.parts_at(to_bytes(rel), lo) if config.trust else []
        answered: dict[str, Hashed] = {}
        if whole and not stored and not faults.ACTIVE:
            # Nothing stored can stand for a file here: hash the small ones while listing.
            names, stats, answered = listed_reading(
                fd, listing, rel, hasher_factory(config.algorithm), PART_BYTES
            )
        else:
            names, stats = listed(listing, rel, lo, hi)
            # The part is as the store last saw it: its answer is the stored one.
            cached = next((part for part in stored if part.hi == hi), None)
            if cached is not None:
                found = _unchanged(cached, *_fingerprint(config, names, list(map(STAMP, stats))))
                if found is not None:
                    return found
        items = walk_items(names, stats, lo, hi)
        points = size_points(items, PART_BYTES) if whole else None
        if points:  # big files: one part per PART_BYTES of them, so every worker hashes some
            return _split(points)
        return _describe(config, fd, rel, items, lo, hi, taken, store, (names, stats), answered)
    finally:
        os.close(fd)


def _fingerprint(config: ScanConfig, names: list[str], stamps: list[tuple[int, ...]]) -> tuple[bytes, int]:
    """A part's :func:`~catalytic.snapshot.listing.fingerprint`, bound to what the snapshot leaves out: a
    stored answer is the answer of a listing filtered by the same excludes, never of other ones."""
    seen, newest = fingerprint(names, stamps)
    if config.leave_out:
        seen = hashlib.sha256(seen + config.leave_out.identity).digest()
    return seen, newest


def _split(points: list[bytes]) -> DirResult:
    """The answer "list these parts (split at ``points``) as tasks of their own"."""
    result = DirResult()
    result.split = points
    return result


def _unchanged(cached: Part, seen: bytes, newest: int) -> DirResult | None:
    """The stored answer of a part whose fingerprint is ``seen`` (None when it differs or is racy)."""
    if cached.fingerprint != seen or racy(newest, newest, cached.taken_ns):
        return None
    return _from_payload(cached.payload)


def _payload(result: DirResult, counts: tuple[int, int, int]) -> bytes:
    return marshal.dumps((result.items, result.records, counts, result.below, result.listing))


def _from_payload(payload: bytes) -> DirResult | None:
    try:
        items, records, counts, below, listing = marshal.loads(payload)
        files, dirs, other = counts
    except (ValueError, EOFError, TypeError):
        return None
    if (
        not isinstance(items, list)
        or not isinstance(records, bytes)
        or not (listing is None or isinstance(listing, bytes))
    ):
        return None
    result = DirResult()
    result.items = items
    result.records = records
    result.listing = listing
    result.counts = (files, dirs, other, 0, files, 0)
    result.below = below
    return result


def _files(
    config: ScanConfig,
    fd: int,
    items: list[Item],
    rows: dict[bytes, Row],
    answered: dict[str, Hashed],
    new_hasher: HasherFactory,
) -> tuple[dict[bytes, Row], Iterator[Hashed]]:
    """The part's regular files a trusted row stands for (by walk key), and the answers for the others,
    hashed in one go (or already by :func:`~catalytic.snapshot.walker.listed_reading`), in walk order."""
    kept: dict[bytes, Row] = {}
    if config.trust and rows:
        todo: list[tuple[str, os.stat_result]] = []
        for key, is_sub, name, st in items:
            if not is_sub and st.st_mode & _FMT == _REG:
                row = rows.get(key)
                if row is not None and trusted(row, st):
                    kept[key] = row
                else:
                    todo.append((name, st))
    else:
        todo = [(name, st) for _key, is_sub, name, st in items if not is_sub and st.st_mode & _FMT == _REG]
    if not answered:
        return kept, iter(hash_files(fd, todo, new_hasher))
    rest = [(name, st) for name, st in todo if name not in answered]
    if rest:
        answered.update(zip([name for name, _st in rest], hash_files(fd, rest, new_hasher), strict=True))
    return kept, iter([answered[name] for name, _st in todo])


def _describe(
    config: ScanConfig,
    fd: int,
    rel: str,
    items: list[Item],
    lo: bytes | None,
    hi: bytes | None,
    taken: int,
    store: Rows,
    names_stats: tuple[list[str], list[os.stat_result]],
    answered: dict[str, Hashed],
) -> DirResult:
    """Describe the part's entries, compare them with the rows, and store the part (``names_stats``: what
    :func:`~catalytic.snapshot.listing.listed` gave, for the part's fingerprint; ``answered``: the files
    :func:`~catalytic.snapshot.walker.listed_reading` already hashed)."""
    prefix = rel + "/" if rel else ""
    dir_key = to_bytes(rel)
    bad_before = store.bad
    rows = store.entries(dir_key, lo, hi, config.snap)
    if config.compare and store.bad != bad_before:
        raise SnapshotError(
            "the store of the pre-run snapshot was damaged during the run", path=rel or ".", code="STORE"
        )
    new_hasher = hasher_factory(config.algorithm)
    compare = config.compare

    kept, hashed_now = _files(config, fd, items, rows, answered, new_hasher)

    counts = WalkStats()  # what the careful path (describe_stat) saw
    files = nbytes = hits = hashed = 0
    result = DirResult()
    out = result.items
    manifest: list[str] = []
    modes: list[str] = []
    record_texts: list[str] = []
    now: list[tuple[Any, ...]] = []  # the rows (:class:`Row`) to store, as the plain tuples marshal writes
    # Entries whose final lstat is not the one listed (described again on the careful path), by name: the
    # fingerprint takes them as they were at the end.
    moved: dict[str, tuple[int, ...]] = {}
    mode_of: dict[int, str] = {}  # mode_string by st_mode: a directory's files mostly share a few
    # When no name needs escaping in JSON (the common case, checked in one call), a path's JSON text is the
    # path in quotes.
    joined = prefix + "/".join(names_stats[0])
    plain = json_string(joined) == f'"{joined}"'
    below = 0
    dirs_now: set[bytes] = set()
    diff = result.diff
    if not rel:
        items = with_root_mark(items, os.fstat(fd))
    for key, is_sub, name, st in items:
        if is_sub:
            if manifest or modes:
                out.append(("t", ",".join(manifest), ",".join(modes)))
                manifest, modes = [], []
            if not name:  # the mark of with_root_mark
                out.append(ROOT_HERE)
                continue
            out.append(("d", prefix + name, st.st_dev, st.st_ino))
            below += max(0, st.st_size - _SMALL_DIR) // _DIR_ENTRY
            continue
        path = prefix + name
        bits = st.st_mode
        regular = bits & _FMT == _REG
        row = kept.get(key) if regular and kept else None
        # hash_files answered the regular files no row stands for, in this order.
        quick = next(hashed_now) if regular and row is None else None
        if row is not None:
            # The digest is as old as the row.
            value, observed, mode, stamp = row.value, STAMP(st), row.mode, row.taken_ns
            hits += 1
            files += 1
        elif quick is not None:
            value, observed, xattrs = quick
            mode = mode_of.get(bits)
            if mode is None:
                mode = mode_of[bits] = mode_string(bits)
            if xattrs is not None or not usual(st):
                mode = value_of(st, xattrs, mode)
            stamp = taken
            nbytes += st.st_size
            hashed += 1
            files += 1
        else:
            entry, final = describe_stat(fd, name, path, st, new_hasher, counts)
            value, mode, observed = entry.value, entry.mode, STAMP(final)
            if final is not st:
                moved[name] = observed
            regular = final.st_mode & _FMT == _REG
            stamp = taken if regular else 0
            hashed += regular
        jpath = f'"{path}"' if plain else json_string(path)
        manifest.append(f'{jpath}:"{value}"' if regular else jpath + ":" + json_string(value))
        if mode is not None:
            modes.append(f'{jpath}:"{mode}"')
        record_texts.append(f"{name}\0{value}\0{mode or ''}\0")
        now.append((key, *observed, stamp, value, mode))
        if value == DIR:
            dirs_now.add(key)
        if compare:
            row = rows.get(key)
            if row is None:
                diff.append(("added", path, None, value, None, mode))
            elif row.value != value or row.mode != mode:
                diff.append(("changed", path, row.value, value, row.mode, mode))
    if manifest or modes:
        out.append(("t", ",".join(manifest), ",".join(modes)))

    emptied: list[bytes] = []
    if rows:
        seen = {item[0] for item in items if not item[1]}
        for key, row in rows.items():
            if key not in seen and compare:
                name = row.name.decode("utf-8", "surrogateescape")
                diff.append(("removed", prefix + name, row.value, None, row.mode, None))
            if row.value == DIR and key not in dirs_now:
                sub = dir_key + b"/" + key if dir_key else key
                emptied.append(sub)
                if compare:
                    _removed_below(store, sub, diff)
    records = "".join(record_texts).encode("utf-8", "surrogateescape")
    if lo is None and hi is None and records:
        hasher = listing_hasher(new_hasher)
        hasher.update(records)
        result.listing = hasher.digest()
    else:
        result.records = records
    result.below = below
    files += counts.files
    result.counts = (files, counts.dirs, counts.other, nbytes + counts.bytes_hashed, hits, hashed)
    # An entry described here counts with its final lstat; one only whose contents are in the part, as listed.
    names, stats = names_stats
    stamps = list(map(STAMP, stats))
    if moved:
        stamps = [moved.get(name) or stamp for name, stamp in zip(names, stamps, strict=True)]
    part = Part(
        lo or b"",
        hi,
        config.snap,
        _fingerprint(config, names, stamps)[0],
        taken,
        _payload(result, (files, counts.dirs, counts.other)),
        marshal.dumps(now, 2),
    )
    store.write(dir_key, part, replace=lo is None and hi is None, emptied=emptied, entries=len(now))
    return result


_FMT = 0o170000
# A directory's size hints at its entry count: ext4 gives one 4 KiB block to up to ~100 short names, then
# about 32 bytes each (tmpfs and btrfs count fewer bytes per name: their hint is low, never high).
_SMALL_DIR, _DIR_ENTRY = 4096, 32
_REG = stat.S_IFREG


def _removed_below(store: Rows, sub: bytes, diff: list[Any]) -> None:
    before = store.bad
    for dir_key, row in store.below(sub):
        path = (dir_key + b"/" + row.name).decode("utf-8", "surrogateescape")
        diff.append(("removed", path, row.value, None, row.mode, None))
    if store.bad != before:
        raise SnapshotError(
            "the store of the pre-run snapshot was damaged during the run",
            path=sub.decode("utf-8", "surrogateescape"),
            code="STORE",
        )
