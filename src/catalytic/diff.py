"""Phase 4: compare two snapshots of a domain by a merge-join of their sorted entries.

The result has the shape of ``RESTORE_DIFF.json``: ``added`` and ``removed`` map a path to its manifest
value; ``changed`` maps a path to ``{"before": value, "after": value}`` and, when the permission bits
differ, also ``"mode_before"`` and ``"mode_after"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from catalytic.paths import sort_key
from catalytic.snapshot.entry import Entry

_END = object()

#: One difference as the parallel snapshot's workers report it:
#: (kind, path, value before, value after, mode before, mode after); kind: added | removed | changed.
Change = tuple[str, str, str | None, str | None, str | None, str | None]


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


def merge_join(pre: Iterable[Entry], post: Iterable[Entry]) -> Iterator[tuple[Entry | None, Entry | None]]:
    """Pair entries of two streams sorted by path bytes: (pre, post), either side None if absent."""
    a_it, b_it = iter(pre), iter(post)
    a = next(a_it, None)
    b = next(b_it, None)
    while a is not None or b is not None:
        if a is not None and b is not None and a.path == b.path:  # the common case: no key needed
            yield a, b
            a = next(a_it, None)
            b = next(b_it, None)
        elif b is None or (a is not None and sort_key(a.path) < sort_key(b.path)):
            yield a, None
            a = next(a_it, None)
        elif a is None or sort_key(b.path) < sort_key(a.path):
            yield None, b
            b = next(b_it, None)
        else:
            yield a, b
            a = next(a_it, None)
            b = next(b_it, None)


def diff_entries(pre: Iterable[Entry], post: Iterable[Entry]) -> DomainDiff:
    """The differences between two sorted entry streams of the same domain."""
    result = DomainDiff()
    for before, after in merge_join(pre, post):
        if after is None and before is not None:
            result.removed[before.path] = before.value
        elif before is None and after is not None:
            result.added[after.path] = after.value
        elif before is not None and after is not None:
            record = change_record(before.value, after.value, before.mode, after.mode)
            if record is not None:
                result.changed[before.path] = record
    return result


#: One entry as a stream of a manifest gives it: (path, value, mode); mode None for symlinks.
Triple = tuple[str, str, str | None]


def changes(pre: Iterable[Triple], post: Iterable[Triple]) -> Iterator[Change]:
    """The differences between two streams of entries sorted by path bytes, in that order.

    The same differences as :func:`diff_entries` (a ``changed`` one whenever the value or the mode
    differs), one :data:`Change` at a time: nothing is kept, whatever the number of entries.
    """
    a_it, b_it = iter(pre), iter(post)
    a = next(a_it, None)
    b = next(b_it, None)
    while a is not None and b is not None:
        if a[0] == b[0]:  # the common case: no key needed
            if a[1] != b[1] or a[2] != b[2]:
                yield ("changed", a[0], a[1], b[1], a[2], b[2])
            a = next(a_it, None)
            b = next(b_it, None)
        elif (ka := sort_key(a[0])) < (kb := sort_key(b[0])):
            yield ("removed", a[0], a[1], None, a[2], None)
            a = next(a_it, None)
        elif kb < ka:
            yield ("added", b[0], None, b[1], None, b[2])
            b = next(b_it, None)
        else:  # the same bytes (as merge_join, paired)
            if a[1] != b[1] or a[2] != b[2]:
                yield ("changed", a[0], a[1], b[1], a[2], b[2])
            a = next(a_it, None)
            b = next(b_it, None)
    while a is not None:
        yield ("removed", a[0], a[1], None, a[2], None)
        a = next(a_it, None)
    while b is not None:
        yield ("added", b[0], None, b[1], None, b[2])
        b = next(b_it, None)
