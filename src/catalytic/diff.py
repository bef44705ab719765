"""Phase 4: compare two snapshots of a domain by a merge-join of their sorted entries.

The result has the shape of ``RESTORE_DIFF.json``: ``added`` and ``removed`` map a path to its manifest
value; ``changed`` maps a path to ``{"before": value, "after": value}`` and, when the permission bits
differ, also ``"mode_before"`` and ``"mode_after"``.

:func:`batch_changes` is the one merge that finds the differences: the runtime (:func:`diff_entries`),
``catalytic diff`` and the isolation backends (:func:`changes`) and the validator
(:mod:`catalytic.ledger.entries`) all go through it.

An entry is its path, its manifest value and one text per per-entry document joined to the manifest on
the path (today MODES: the permission bits, None for a symlink), in the order of :data:`SIDE_KEYS`.
A new per-entry document is one more line in :data:`SIDE_KEYS` and one more column where the entries
are joined; the merge, the records and the summaries follow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from operator import attrgetter
from typing import Any, TypeVar

from catalytic.paths import sort_key
from catalytic.snapshot.entry import Entry

T = TypeVar("T")
_PATH: Callable[[Any], str] = attrgetter("path")

#: For each per-entry document joined beside the manifest value, in column order: the keys of its text
#: before and after in a RESTORE_DIFF ``changed`` record, present when the two differ (an absent text is
#: recorded as ``""``).
SIDE_KEYS: tuple[tuple[str, str], ...] = (("mode_before", "mode_after"),)

#: One difference: (kind, path, value before, value after, then for each per-entry document of
#: :data:`SIDE_KEYS` its text before and after); kind: added | removed | changed. With MODES alone:
#: (kind, path, before, after, mode before, mode after), as the parallel snapshot's workers report it.
Change = tuple[str, str, str | None, str | None, *tuple[str | None, ...]]

#: One entry as a stream of a manifest gives it: (path, value, mode); mode None for symlinks.
Triple = tuple[str, str, str | None]

#: Entries of one domain in path order, as columns: paths, values, then one column per per-entry document
#: (:data:`SIDE_KEYS`). Batches keep the merge at C speed where the two sides agree.
Columns = tuple[list[str], list[str], *tuple[list[str | None], ...]]

#: Entries per batch when a stream of entries is cut into :data:`Columns` (a few hundred: memory stays small,
#: and long runs of equal entries are still compared a slice at a time).
BATCH = 256


@dataclass
class DomainDiff:
    """Differences found in one domain."""

    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    changed: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def paths(self) -> list[str]:
        return sorted([*self.added, *self.removed, *self.changed], key=sort_key)

    def to_json(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed, "changed": self.changed}

    def add(self, change: Change) -> None:
        """Record one difference (see :data:`Change`)."""
        kind, path, before, after, *sides = change
        if kind == "added":
            assert after is not None
            self.added[path] = after
        elif kind == "removed":
            assert before is not None
            self.removed[path] = before
        else:
            assert before is not None and after is not None
            record = change_record(before, after, *sides)
            if record is not None:
                self.changed[path] = record

    def sorted(self) -> DomainDiff:
        """The same differences, each kind in byte order of the path."""
        return DomainDiff(
            added={k: self.added[k] for k in sorted(self.added, key=sort_key)},
            removed={k: self.removed[k] for k in sorted(self.removed, key=sort_key)},
            changed={k: self.changed[k] for k in sorted(self.changed, key=sort_key)},
        )


def change_record(before: str, after: str, *sides: str | None) -> dict[str, str] | None:
    """The RESTORE_DIFF record of an entry whose value or per-entry texts changed; None when none did.

    ``sides``: for each per-entry document of :data:`SIDE_KEYS`, its text before and after.
    """
    record: dict[str, str] = {"before": before, "after": after}
    for (key_before, key_after), was, now in zip(SIDE_KEYS, sides[0::2], sides[1::2], strict=True):
        if was != now:
            record[key_before] = was or ""
            record[key_after] = now or ""
    if before == after and len(record) == 2:
        return None
    return record


def what_changed(record: dict[str, str]) -> str:
    """What a RESTORE_DIFF ``changed`` record says changed, in words: ``content``, ``type``, and what of
    the MODES value (:mod:`catalytic.snapshot.attrs`): ``mode 0644 -> 0600``, ``owner``, ``links``,
    ``xattrs``. Empty for a record that names no change."""
    from catalytic.snapshot.attrs import VALUE, parse
    from catalytic.snapshot.entry import kind_of

    words = []
    before, after = record.get("before", ""), record.get("after", "")
    if before != after:
        words.append("content" if kind_of(before) == kind_of(after) == "file" else "type")
    was, now = record.get("mode_before", ""), record.get("mode_after", "")
    if was != now and VALUE.fullmatch(was) and VALUE.fullmatch(now):
        a, b = parse(was), parse(now)
        if a.bits != b.bits:
            words.append(f"mode {was[:4]} -> {now[:4]}")
        if a.owner != b.owner:
            words.append("owner")
        if a.links != b.links:
            words.append(f"links {a.links} -> {b.links}")
        if a.xattrs != b.xattrs:
            words.append("xattrs")
    elif was != now:
        words.append("mode")
    return ", ".join(words)


def merge_join(
    pre: Iterable[T], post: Iterable[T], path: Callable[[T], str] = _PATH
) -> Iterator[tuple[T | None, T | None]]:
    """Pair entries of two streams sorted by path bytes: (pre, post), either side None if absent.

    ``path`` gives an entry's path (an :class:`Entry`'s by default; ``itemgetter(0)`` for triples). For
    the differences alone, :func:`batch_changes` is faster.
    """
    a_it, b_it = iter(pre), iter(post)
    a = next(a_it, None)
    b = next(b_it, None)
    while a is not None or b is not None:
        if a is not None and b is not None and path(a) == path(b):  # the common case: no key needed
            yield a, b
            a = next(a_it, None)
            b = next(b_it, None)
        elif b is None or (a is not None and sort_key(path(a)) < sort_key(path(b))):
            yield a, None
            a = next(a_it, None)
        elif a is None or sort_key(path(b)) < sort_key(path(a)):
            yield None, b
            b = next(b_it, None)
        else:
            yield a, b
            a = next(a_it, None)
            b = next(b_it, None)


def diff_entries(pre: Iterable[Entry], post: Iterable[Entry]) -> DomainDiff:
    """The differences between two sorted entry streams of the same domain."""
    result = DomainDiff()
    for change in changes(_triples(pre), _triples(post)):
        result.add(change)
    return result


def _triples(entries: Iterable[Entry]) -> Iterator[Triple]:
    return ((e.path, e.value, e.mode) for e in entries)


def columns(entries: Iterable[Sequence[Any]], size: int = BATCH) -> Iterator[Columns]:
    """Entries given one at a time ((path, value, mode, ...) in path order), cut into :data:`Columns`."""
    it = iter(entries)
    while chunk := list(islice(it, size)):
        cols = tuple(map(list, zip(*chunk, strict=True)))
        yield cols  # type: ignore[misc]


def changes(pre: Iterable[Triple], post: Iterable[Triple]) -> Iterator[Change]:
    """The differences between two streams of entries sorted by path bytes, in that order.

    A ``changed`` one whenever the value or the mode differs; one :data:`Change` at a time: nothing is kept
    but a batch of each side, whatever the number of entries.
    """
    return batch_changes(columns(pre), columns(post))


def batch_changes(pre: Iterable[Columns], post: Iterable[Columns]) -> Iterator[Change]:
    """The differences between two domains given as batches of entries in path order, in that order.

    A run of entries that is the same on both sides is skipped a batch slice at a time; elsewhere the
    entries are merged one by one on the byte order of their paths.
    """
    pre_it, post_it = iter(pre), iter(post)
    a: Columns = ([], [], [])
    b: Columns = ([], [], [])
    ai = bi = 0
    a_done = b_done = False
    while True:
        if ai == len(a[0]) and not a_done:
            batch = next(pre_it, None)
            if batch is None:
                a_done = True
            else:
                a, ai = batch, 0
                continue
        if bi == len(b[0]) and not b_done:
            batch = next(post_it, None)
            if batch is None:
                b_done = True
            else:
                b, bi = batch, 0
                continue
        a_len, b_len = len(a[0]), len(b[0])
        if ai == a_len and bi == b_len:
            return
        if ai == a_len:
            for i in range(bi, b_len):
                yield _added(b, i)
            bi = b_len
            continue
        if bi == b_len:
            for i in range(ai, a_len):
                yield _removed(a, i)
            ai = a_len
            continue
        n = min(a_len - ai, b_len - bi)
        a_cols: tuple[list[Any], ...] = a
        b_cols: tuple[list[Any], ...] = b
        if all(x[ai : ai + n] == y[bi : bi + n] for x, y in zip(a_cols, b_cols, strict=True)):
            ai += n
            bi += n
            continue
        a_paths, b_paths = a[0], b[0]
        while ai < a_len and bi < b_len:
            path, other = a_paths[ai], b_paths[bi]
            if path == other:
                if any(x[ai] != y[bi] for x, y in zip(a_cols[1:], b_cols[1:], strict=True)):
                    yield _changed(a, ai, b, bi)
                ai += 1
                bi += 1
            elif sort_key(path) < sort_key(other):
                yield _removed(a, ai)
                ai += 1
            else:
                yield _added(b, bi)
                bi += 1


def _added(b: Columns, i: int) -> Change:
    sides: list[str | None] = []
    for column in b[2:]:
        sides += (None, column[i])
    return ("added", b[0][i], None, b[1][i], *sides)


def _removed(a: Columns, i: int) -> Change:
    sides: list[str | None] = []
    for column in a[2:]:
        sides += (column[i], None)
    return ("removed", a[0][i], a[1][i], None, *sides)


def _changed(a: Columns, ai: int, b: Columns, bi: int) -> Change:
    sides: list[str | None] = []
    for was, now in zip(a[2:], b[2:], strict=True):
        sides += (was[ai], now[bi])
    return ("changed", a[0][ai], a[1][ai], b[1][bi], *sides)
