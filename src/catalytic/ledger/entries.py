"""The per-entry rules of a ledger, in one pass over the sorted entries of its four large documents.

:func:`entry_pass` reads ``PRE_MANIFEST``, ``PRE_MODES``, ``POST_MANIFEST`` and ``POST_MODES`` once each, as
batches of entries, domain by domain in byte order, and gathers what :mod:`catalytic.ledger.checks` needs to
report: the per-entry problems (unsafe paths, digests of the wrong length, MODES that do not describe their
manifest; capped at :data:`MAX_PER_KIND` per document), each domain's recomputed diff (counts, first path, and
whether it equals the one ``RESTORE_DIFF`` records) and the Merkle roots ``RUN_INFO`` records.

The batches come from :mod:`catalytic.ledger.stream`: a canonical document is read a block at a time
(:func:`~catalytic.ledger.stream.read_batches`), any other schema-valid one is parsed whole and cut into the
same batches (:func:`~catalytic.ledger.stream.document_batches`). These rules are the only ones; both give
the same report.

MANIFEST and MODES are joined by a merge on the path (one column per per-entry document,
:data:`catalytic.diff.SIDE_KEYS`), PRE and POST by :func:`catalytic.diff.batch_changes`; where batches line
up (the usual case: equal paths, equal values) whole slices are compared at once. On a streamed document
memory holds a few batches, never the document.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from catalytic import paths
from catalytic.diff import Change, Columns, batch_changes, change_record
from catalytic.errors import Problem
from catalytic.ledger import format as fmt
from catalytic.ledger.stream import Batch
from catalytic.paths import sort_key
from catalytic.snapshot.digest import ALGORITHMS
from catalytic.snapshot.entry import SYMLINK_PREFIX, kind_of

#: Hex digest length per manifest hash algorithm.
DIGEST_LENGTHS = {name: algorithm.hex_length for name, algorithm in ALGORITHMS.items()}
#: Problems of one kind listed in a report; the rest are counted.
MAX_PER_KIND = 100
#: The documents read entry by entry, in the order their problems are reported.
LARGE = (fmt.PRE_MANIFEST, fmt.PRE_MODES, fmt.POST_MANIFEST, fmt.POST_MODES)

_DRIVE = re.compile(r"^[A-Za-z]:")
#: What the newline-framed list of a batch's paths contains when one of them may break a rule of
#: :func:`path_problem` (empty, absolute, NUL, empty / ``.`` / ``..`` segment); a hit checks each path.
_SUSPECT = ("\n\n", "\n/", "//", "/\n", "\0", "/./", "/../", "\n./", "\n../", "/.\n", "/..\n", "\n..\n")
_SYMLINK_MARK = "\0" + SYMLINK_PREFIX
_MISSING = object()
#: Stands for a streamed domain in the domain-level checks (which only look at domain names).
STREAMED: Any = object()

#: The batches of one document (see :data:`catalytic.ledger.stream.Batch`), None when it is missing or
#: not schema-valid (its problem is reported already, and the rules that need it are skipped).
Source = Iterator[Batch] | None


def path_problem(path: str, *, workspace: bool) -> str | None:
    """Why ``path`` is unsafe as a ledger path, or None. ``workspace`` adds the output-path rules."""
    if not path:
        return "is empty"
    if "\0" in path:
        return "contains a NUL byte"
    if path.startswith("/") or (workspace and _DRIVE.match(path)):
        return "is absolute"
    if workspace and "\\" in path:
        return "contains a backslash"
    segments = path.split("/")
    if ".." in segments:
        return "goes through '..'"
    if path != paths.ROOT and any(s in ("", ".") for s in segments):
        return "is not normalised (empty or '.' segment)"
    return None


def summary(added: int, removed: int, changed: int, first: str | None) -> str:
    """How a recomputed diff is described in a problem: counts and its first path."""
    counts = f"{added} added, {removed} removed, {changed} changed"
    return counts + (f" (first: {first!r})" if first is not None else "")


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

    def emit(self, problems: list[Problem], what: str) -> None:
        """Report the problems kept, and how many more there were."""
        # One rewritten manifest can break a rule once per entry; list the first ones and count the rest.
        problems.extend(self.kept)
        if self.count > MAX_PER_KIND:
            more = self.count - MAX_PER_KIND
            problems.append(Problem(self.kept[0].code, f"{what}: {more} more not listed"))


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

    def see(self, change: Change) -> None:
        """Count one difference and compare it with the record of RESTORE_DIFF."""
        kind, path, before, after, *sides = change
        value: Any
        if kind == "added":
            self.added += 1
            value = after
        elif kind == "removed":
            self.removed += 1
            value = before
        else:
            assert before is not None and after is not None
            self.changed += 1
            value = change_record(before, after, *sides)
        if self.first is None:
            self.first = path
        if self.recorded is not None and self.matches:
            self.matches = self.recorded[kind].get(path, _MISSING) == value

    def finish(self) -> None:
        rec = self.recorded
        if rec is not None and self.matches:
            counts = (self.added, self.removed, self.changed)
            self.matches = (len(rec["added"]), len(rec["removed"]), len(rec["changed"])) == counts


@dataclass
class EntryFacts:
    """What one pass found; :mod:`catalytic.ledger.checks` turns it into problems."""

    domains: dict[str, list[str]] = field(default_factory=dict)
    entries: dict[str, Capped] = field(default_factory=dict)
    diffs: dict[str, DiffFacts] = field(default_factory=dict)
    roots: dict[tuple[str, str], str] = field(default_factory=dict)
    #: Whether the diff of every domain in both manifests was recomputed (``diffs``).
    recomputed: bool = False
    merkle_error: Exception | None = None

    def stand_in(self, name: str) -> dict[str, Any]:
        """A document with the domains of ``name`` and no entries (for the domain-level checks)."""
        return dict.fromkeys(self.domains[name], STREAMED)

    def emit_entries(self, problems: list[Problem]) -> None:
        """The per-entry problems, document by document."""
        for name in LARGE:
            self.entries[name].emit(problems, name)

    def root(self, phase: str, domain: str) -> str:
        if self.merkle_error is not None:
            raise self.merkle_error
        return self.roots[(phase, domain)]


class _Cursor:
    """Walks one document's batches domain by domain."""

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
    #: Whether the MODES document can be checked (present and schema-valid, with its manifest).
    has_modes: bool = True
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
    facts: EntryFacts,
) -> Iterator[Columns]:
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
                    if side.v1 and side.has_modes and not value.startswith(SYMLINK_PREFIX):
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


def entry_pass(sources: Mapping[str, Source], v1: bool, docs: dict[str, Any]) -> EntryFacts:
    """Read the four large documents' batches (``sources``, by file name) once and gather :class:`EntryFacts`.

    ``docs`` holds the schema-valid small documents (RUN_INFO, RESTORE_DIFF). The rules that need a
    missing document are skipped, as are the MODES rules of a phase whose manifest is missing; the diff is
    recomputed when both manifests are there and, from ``catalytic.ledger/1`` on, both MODES (mode changes
    are in it). Raises :class:`~catalytic.ledger.stream.NotStreamable` when a streamed document turns out
    not to be exactly canonical.
    """
    from catalytic.snapshot.merkle import MERKLE_FORMAT_V1, MERKLE_FORMATS, builder

    info: dict[str, Any] | None = docs.get(fmt.RUN_INFO)
    recorded: dict[str, Any] | None = docs.get(fmt.RESTORE_DIFF)
    algorithm = info.get("hash_algorithm", "sha256") if info is not None else "sha256"
    roots = info.get("merkle_roots") if info is not None else None
    tree = info.get("merkle_format", MERKLE_FORMAT_V1) if info is not None else MERKLE_FORMAT_V1
    facts = EntryFacts()
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
    for side in sides:
        manifest, modes = sources[side.manifest], sources[side.modes]
        if manifest is None:
            modes = None  # MODES are checked against their manifest, or not at all
        side.has_modes = modes is not None
        cursors[side.manifest] = _Cursor(manifest or iter(()))
        cursors[side.modes] = _Cursor(modes or iter(()))
    for name in LARGE:
        facts.domains[name] = []
    both = sources[fmt.PRE_MANIFEST] is not None and sources[fmt.POST_MANIFEST] is not None
    facts.recomputed = recompute = both and (not v1 or all(side.has_modes for side in sides))
    while True:
        heads = [c.domain for c in cursors.values() if c.domain is not None]
        if not heads:
            break
        domain = min(heads, key=sort_key)
        streams: list[Iterator[Columns] | None] = []
        for side in sides:
            manifest_batches = _take(cursors[side.manifest], domain, facts.domains[side.manifest])
            mode_batches = _take(cursors[side.modes], domain, facts.domains[side.modes])
            if manifest_batches is None:
                if mode_batches is not None:
                    side.domain_modes.add(
                        Problem(
                            "MODES_MISMATCH", f"{side.modes}: domain {domain!r} is not in {side.manifest}"
                        )
                    )
                    deque(mode_batches, 0)
                streams.append(None)
                continue
            merkle = builder(algorithm, tree) if domain in roots else None
            streams.append(_joined(side, domain, manifest_batches, mode_batches, merkle, facts))
        pre, post = streams
        if recompute and pre is not None and post is not None:
            diff = DiffFacts(recorded.get(domain) if recorded is not None else None)
            for change in batch_changes(pre, post):
                diff.see(change)
            diff.finish()
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
