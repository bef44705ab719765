"""Phase 4: compare two snapshots of a domain by a merge-join of their sorted entries.

The result has the shape of ``RESTORE_DIFF.json``: ``added`` and ``removed`` map a path to its manifest
value; ``changed`` maps a path to ``{"before": value, "after": value}`` and, when the permission bits
differ, also ``"mode_before"`` and ``"mode_after"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import Any, TypeVar

from catalytic.paths import sort_key
from catalytic.snapshot.entry import Entry

T = TypeVar("T")
_PATH: Callable[[Any], str] = attrgetter("path")
_FIRST: Callable[[Any], str] = itemgetter(0)

#: One difference as the parallel snapshot's workers report it:
#: (kind, path, value before, value after, mode before, mode after); kind: added | removed | changed.
Change = tuple[str, str, str | None, str | None, str | None, str | None]

#: One entry as a stream of a manifest gives it: (path, value, mode); mode None for symlinks.
Triple = tuple[str, str, str | None]


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
        kind, path, before, after, mode_before, mode_after = change
        if kind == "added":
            assert after is not None
            self.added[path] = after
        elif kind == "removed":
            assert before is not None
            self.removed[path] = before
        else:
            assert before is not None and after is not None
            record = change_record(before, after, mode_before, mode_after)
            if record is not None:
                self.changed[path] = record

    def sorted(self) -> DomainDiff:
        """The same differences, each kind in byte order of the path."""
        return DomainDiff(
            added={k: self.added[k] for k in sorted(self.added, key=sort_key)},
            removed={k: self.removed[k] for k in sorted(self.removed, key=sort_key)},
            changed={k: self.changed[k] for k in sorted(self.changed, key=sort_key)},
        )


def change_record(
    before: str, after: str, mode_before: str | None, mode_after: str | None
) -> dict[str, str] | None:
    """The RESTORE_DIFF record of an entry whose value or mode changed; None when neither did."""
    if before == after and mode_before == mode_after:
        return None
    record = {"before": before, "after": after}
    if mode_before != mode_after:
        record["mode_before"] = mode_before or ""
        record["mode_after"] = mode_after or ""
    return record


def merge_join(
    pre: Iterable[T], post: Iterable[T], path: Callable[[T], str] = _PATH
) -> Iterator[tuple[T | None, T | None]]:
    """Pair entries of two streams sorted by path bytes: (pre, post), either side None if absent.

    ``path`` gives an entry's path (an :class:`Entry`'s by default; ``itemgetter(0)`` for triples).
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


def changes(pre: Iterable[Triple], post: Iterable[Triple]) -> Iterator[Change]:
    """The differences between two streams of entries sorted by path bytes, in that order.

    A ``changed`` one whenever the value or the mode differs; one :data:`Change` at a time: nothing is kept,
    whatever the number of entries.
    """
    for a, b in merge_join(pre, post, _FIRST):
        if b is None:
            assert a is not None
            yield ("removed", a[0], a[1], None, a[2], None)
        elif a is None:
            yield ("added", b[0], None, b[1], None, b[2])
        elif a[1] != b[1] or a[2] != b[2]:
            yield ("changed", a[0], a[1], b[1], a[2], b[2])
