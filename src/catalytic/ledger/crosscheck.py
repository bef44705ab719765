"""The entry-level cross-checks of a ledger in one streamed pass over its four large documents.

:func:`stream_pass` reads ``PRE_MANIFEST``, ``PRE_MODES``, ``POST_MANIFEST`` and ``POST_MODES`` once each,
through :func:`catalytic.ledger.stream.read_batches`, domain by domain in byte order, and gathers what
:mod:`catalytic.ledger.checks` needs to report: the per-entry problems of ``check_entries`` (capped, in
the order the whole-document checks find them), each domain's recomputed diff (counts, first path, and
whether it equals the one ``RESTORE_DIFF`` records) and the Merkle roots ``RUN_INFO`` records.

MANIFEST and MODES are joined by a merge on the path, PRE and POST by a merge per domain; where batches
line up (the usual case: equal paths, equal values) whole slices are compared at once. Memory holds a
few batches, never a whole document. Any file that is not exactly canonical raises
:class:`~catalytic.ledger.stream.NotStreamable` and the validator uses the whole-document path instead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from catalytic.errors import Problem
from catalytic.ledger import format as fmt
from catalytic.ledger.checks import DIGEST_LENGTHS, MAX_PER_KIND, emit_capped, path_problem, summary
from catalytic.ledger.stream import Batch, Kind, read_batches
from catalytic.paths import sort_key
from catalytic.snapshot.entry import SYMLINK_PREFIX, kind_of

#: What the newline-framed list of a batch's paths contains when one of them may break a rule of
#: :func:`path_problem` (empty, absolute, NUL, empty / ``.`` / ``..`` segment); a hit checks each path.
_SUSPECT = ("\n\n", "\n/", "//", "/\n", "\0", "/./", "/../", "\n./", "\n../", "/.\n", "/..\n", "\n..\n")
_SYMLINK_MARK = "\0" + SYMLINK_PREFIX
_MISSING = object()
#: Stands for a streamed domain in the domain-level checks (which only look at domain names).
STREAMED: Any = object()

Joined = tuple[list[str], list[str], list[str | None]]


class Capped:
    """The first :data:`MAX_PER_KIND` problems of one kind, and how many there were."""

    def __init__(self) -> None:
        self.kept: list[Problem] = []
        self.count = 0

    def add(self, problem: Problem) -> None:
        self.count += 1
        if len(self.kept) < MAX_PER_KIND:
            self.kept.append(problem)

    def merge(self, other: Capped) -> None:
        self.count += other.count
        self.kept += other.kept[: MAX_PER_KIND - len(self.kept)]


@dataclass
class DiffFacts:
    """One domain's recomputed diff, reduced to what the report says about it."""

    recorded: dict[str, Any] | None
    added: int = 0
    removed: int = 0
    changed: int = 0
    first: str | None = None
    matches: bool = True

    @property
    def clean(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def summary(self) -> str:
        return summary(self.added, self.removed, self.changed, self.first)

    def _see(self, path: str, kind: str, value: Any) -> None:
        if self.first is None:
            self.first = path
        if self.recorded is not None and self.matches:
            self.matches = self.recorded[kind].get(path, _MISSING) == value

    def add(self, path: str, value: str) -> None:
        self.added += 1
        self._see(path, "added", value)

    def remove(self, path: str, value: str) -> None:
        self.removed += 1
        self._see(path, "removed", value)

    def change(
        self, path: str, before: str, after: str, mode_before: str | None, mode_after: str | None
    ) -> None:
        record = {"before": before, "after": after}
        if mode_before != mode_after:
            record["mode_before"] = mode_before or ""
            record["mode_after"] = mode_after or ""
        self.changed += 1
        self._see(path, "changed", record)

    def finish(self) -> None:
        rec = self.recorded
        if rec is not None and self.matches:
            self.matches = (len(rec["added"]), len(rec["removed"]), len(rec["changed"])) == (
                self.added,
                self.removed,
                self.changed,
            )


@dataclass
class StreamFacts:
    """What one streamed pass found; :mod:`catalytic.ledger.checks` turns it into problems."""

    domains: dict[str, list[str]] = field(default_factory=dict)
    entries: dict[str, Capped] = field(default_factory=dict)
    diffs: dict[str, DiffFacts] = field(default_factory=dict)
    roots: dict[tuple[str, str], str] = field(default_factory=dict)
    merkle_error: Exception | None = None

    def stand_in(self, name: str) -> dict[str, Any]:
        """A document with the domains of ``name`` and no entries (for the domain-level checks)."""
        return dict.fromkeys(self.domains[name], STREAMED)

    def emit_entries(self, problems: list[Problem]) -> None:
        """The problems ``check_entries`` reports, in its order."""
        for name in (fmt.PRE_MANIFEST, fmt.PRE_MODES, fmt.POST_MANIFEST, fmt.POST_MODES):
            found = self.entries[name]
            emit_capped(found.kept, found.count, problems, name)

    def root(self, phase: str, domain: str) -> str:
        if self.merkle_error is not None:
            raise self.merkle_error
        return self.roots[(phase, domain)]


class _Cursor:
    """Walks one file's batches domain by domain."""

    def __init__(self, batches: Iterator[Batch]) -> None:
        self._it = batches
        self._head: Batch | None = next(batches, None)

    @property
    def domain(self) -> str | None:
        return self._head[0] if self._head is not None else None

    def take(self) -> Iterator[tuple[list[str], list[str]]]:
        """The batches of the current domain; must be exhausted before the cursor is used again."""
        assert self._head is not None
        domain = self._head[0]
        self._head = next(self._it, None)  # the domain's opening (empty) batch
        return self._rest(domain)

    def _rest(self, domain: str) -> Iterator[tuple[list[str], list[str]]]:
        while self._head is not None and self._head[0] == domain:
            _, keys, values = self._head
            self._head = next(self._it, None)
            yield keys, values


@dataclass
class _Side:
    """One phase (pre or post) of the pass: names, collectors and what the Merkle roots need."""

    phase: str
    manifest: str
    modes: str
    v1: bool
    algorithm: str
    entries: Capped = field(default_factory=Capped)
    domain_modes: Capped = field(default_factory=Capped)
    entry_modes: Capped = field(default_factory=Capped)


def _check_paths(side: _Side, domain: str, keys: list[str], values: list[str]) -> None:
    length = DIGEST_LENGTHS.get(side.algorithm, 64)
    framed = "\n" + "\n".join(keys) + "\n"
    if length == 64 and framed.count("\n") == len(keys) + 1 and not any(s in framed for s in _SUSPECT):
        return  # schema-valid file values are 64 hex digits: only the paths could be wrong
    for path, value in zip(keys, values, strict=True):
        why = path_problem(path, workspace=False)
        if why:
            side.entries.add(
                Problem("BAD_PATH", f"{side.manifest}: path {path!r} in domain {domain!r} {why}")
            )
        elif kind_of(value) == "file" and len(value) != length:
            side.entries.add(Problem("SCHEMA", f"{side.manifest}: {path!r} is not a {side.algorithm} digest"))


def _joined(
    side: _Side,
    domain: str,
    manifest: Iterator[tuple[list[str], list[str]]],
    modes: Iterator[tuple[list[str], list[str]]] | None,
    merkle: Any,
    facts: StreamFacts,
) -> Iterator[Joined]:
    """The entries of one domain with their modes (merge-joined), checked and fed to the Merkle builder."""
    not_entry, no_mode = Capped(), Capped()
    mk: list[str] = []
    mv: list[str] = []
    pos = 0
    done = modes is None

    def more() -> bool:
        nonlocal mk, mv, pos, done
        batch = None if done or modes is None else next(modes, None)
        if batch is None:
            done = True
            return False
        mk, mv = mk[pos:] + batch[0], mv[pos:] + batch[1]
        pos = 0
        return True

    def extra(path: str) -> None:
        not_entry.add(
            Problem("MODES_MISMATCH", f"{side.modes}: {path!r} in {domain!r} is not a {side.manifest} entry")
        )

    for keys, values in manifest:
        _check_paths(side, domain, keys, values)
        n = len(keys)
        while len(mk) - pos < n and more():
            pass
        joined: list[str | None] | None = None
        if _SYMLINK_MARK not in "\0" + "\0".join(values):
            if mk[pos : pos + n] == keys:
                joined = list(mv[pos : pos + n])
                pos += n
        else:
            with_mode = [k for k, v in zip(keys, values, strict=True) if not v.startswith(SYMLINK_PREFIX)]
            m = len(with_mode)
            if mk[pos : pos + m] == with_mode:
                it = iter(mv[pos : pos + m])
                joined = [None if v.startswith(SYMLINK_PREFIX) else next(it) for v in values]
                pos += m
        if joined is None:
            joined = []
            for path, value in zip(keys, values, strict=True):
                key: bytes | None = None
                while pos < len(mk) or more():
                    there = mk[pos]
                    if there == path:
                        break
                    key = key or sort_key(path)
                    if sort_key(there) >= key:
                        break
                    extra(there)
                    pos += 1
                if pos < len(mk) and mk[pos] == path:
                    joined.append(mv[pos])
                    pos += 1
                    if value.startswith(SYMLINK_PREFIX):
                        extra(path)
                else:
                    joined.append(None)
                    if side.v1 and not value.startswith(SYMLINK_PREFIX):
                        no_mode.add(
                            Problem(
                                "MODES_MISMATCH", f"{side.modes}: no mode for {path!r} in domain {domain!r}"
                            )
                        )
        if merkle is not None:
            add = merkle.add
            for path, value, mode in zip(keys, values, joined, strict=True):
                add(path, value, mode)
        yield keys, values, joined
    while pos < len(mk) or more():
        for path in mk[pos:]:
            extra(path)
        pos = len(mk)
    side.entry_modes.merge(not_entry)
    side.entry_modes.merge(no_mode)
    if merkle is not None:
        facts.roots[(side.phase, domain)] = merkle.root()


def _diff(pre: Iterator[Joined], post: Iterator[Joined], facts: DiffFacts) -> None:
    """Merge-join the two phases of a domain into ``facts`` (the rules of :mod:`catalytic.diff`)."""
    ak: list[str] = []
    av: list[str] = []
    am: list[str | None] = []
    bk: list[str] = []
    bv: list[str] = []
    bm: list[str | None] = []
    ai = bi = 0
    a_done = b_done = False
    while True:
        if ai == len(ak) and not a_done:
            batch = next(pre, None)
            if batch is None:
                a_done = True
            else:
                (ak, av, am), ai = batch, 0
                continue
        if bi == len(bk) and not b_done:
            batch = next(post, None)
            if batch is None:
                b_done = True
            else:
                (bk, bv, bm), bi = batch, 0
                continue
        if ai == len(ak) and bi == len(bk):
            break
        if ai == len(ak):
            for path, value in zip(bk[bi:], bv[bi:], strict=True):
                facts.add(path, value)
            bi = len(bk)
            continue
        if bi == len(bk):
            for path, value in zip(ak[ai:], av[ai:], strict=True):
                facts.remove(path, value)
            ai = len(ak)
            continue
        n = min(len(ak) - ai, len(bk) - bi)
        if (
            ak[ai : ai + n] == bk[bi : bi + n]
            and av[ai : ai + n] == bv[bi : bi + n]
            and am[ai : ai + n] == bm[bi : bi + n]
        ):
            ai += n
            bi += n
            continue
        while ai < len(ak) and bi < len(bk):
            a, b = ak[ai], bk[bi]
            if a == b:
                if av[ai] != bv[bi] or am[ai] != bm[bi]:
                    facts.change(a, av[ai], bv[bi], am[ai], bm[bi])
                ai += 1
                bi += 1
            elif sort_key(a) < sort_key(b):
                facts.remove(a, av[ai])
                ai += 1
            else:
                facts.add(b, bv[bi])
                bi += 1
    facts.finish()


def stream_pass(fds: dict[str, int], v1: bool, docs: dict[str, Any], max_bytes: int) -> StreamFacts:
    """Read the four large documents (open as ``fds``) once and gather :class:`StreamFacts`.

    ``docs`` holds the schema-valid small documents (RUN_INFO, RESTORE_DIFF). Raises
    :class:`~catalytic.ledger.stream.NotStreamable` when a file is not exactly canonical.
    """
    from catalytic.snapshot.merkle import MERKLE_FORMAT_V1, MERKLE_FORMATS, builder

    info: dict[str, Any] | None = docs.get(fmt.RUN_INFO)
    recorded: dict[str, Any] | None = docs.get(fmt.RESTORE_DIFF)
    algorithm = info.get("hash_algorithm", "sha256") if info is not None else "sha256"
    roots = info.get("merkle_roots") if info is not None else None
    tree = info.get("merkle_format", MERKLE_FORMAT_V1) if info is not None else MERKLE_FORMAT_V1
    facts = StreamFacts()
    if not isinstance(roots, dict) or tree not in MERKLE_FORMATS:
        roots = {}
    elif roots:
        try:
            builder(algorithm, tree)
        except Exception as exc:  # reported where check_merkle would meet it
            facts.merkle_error = exc
            roots = {}

    sides = (
        _Side("pre", fmt.PRE_MANIFEST, fmt.PRE_MODES, v1, algorithm),
        _Side("post", fmt.POST_MANIFEST, fmt.POST_MODES, v1, algorithm),
    )
    cursors: dict[str, _Cursor] = {}
    for name in (fmt.PRE_MANIFEST, fmt.PRE_MODES, fmt.POST_MANIFEST, fmt.POST_MODES):
        kind: Kind = "modes" if name in (fmt.PRE_MODES, fmt.POST_MODES) else "manifest"
        cursors[name] = _Cursor(read_batches(fds[name], kind, max_bytes))
        facts.domains[name] = []
    while True:
        heads = [c.domain for c in cursors.values() if c.domain is not None]
        if not heads:
            break
        domain = min(heads, key=sort_key)
        streams: list[Iterator[Joined] | None] = []
        for side in sides:
            manifest = _take(cursors[side.manifest], domain, facts.domains[side.manifest])
            modes = _take(cursors[side.modes], domain, facts.domains[side.modes])
            if manifest is None:
                if modes is not None:
                    side.domain_modes.add(
                        Problem(
                            "MODES_MISMATCH", f"{side.modes}: domain {domain!r} is not in {side.manifest}"
                        )
                    )
                    deque(modes, 0)
                streams.append(None)
                continue
            merkle = builder(algorithm, tree) if domain in roots else None
            streams.append(_joined(side, domain, manifest, modes, merkle, facts))
        pre, post = streams
        if pre is not None and post is not None:
            diff = DiffFacts(recorded.get(domain) if recorded is not None else None)
            _diff(pre, post, diff)
            facts.diffs[domain] = diff
        for stream in (pre, post):
            if stream is not None:
                deque(stream, 0)
    for side in sides:
        facts.entries[side.manifest] = side.entries
        side.domain_modes.merge(side.entry_modes)
        facts.entries[side.modes] = side.domain_modes
    return facts


def _take(cursor: _Cursor, domain: str, seen: list[str]) -> Iterator[tuple[list[str], list[str]]] | None:
    if cursor.domain != domain:
        return None
    seen.append(domain)
    return cursor.take()
