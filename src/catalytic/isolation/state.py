"""A ``rollback`` run's saved pre-state: written as one canonical JSON document, read back tree by tree.

The document (:data:`~catalytic.isolation.store.STATE_VERSION`, ``<store>/states/<run_id>.json``)::

    {"algorithm": "sha256",
     "domains": {"<domain>": {"absent": false, "manifest": {path: value}, "modes": {path: mode}}},
     "excludes": ["__pycache__/", ...],  # only when the run had exclude patterns
     "outputs": {"<output>": {...the same...}},
     "run_id": "...", "version": "catalytic.state/1"}

Beside it, ``<run_id>.json.index`` gives the document's size, its algorithm and the byte range of every
tree's manifest and modes objects, so a restore reads one tree's entries at a time, in path order and a
block at a time: memory does not grow with the number of files. A state without an index (saved by an
older version), or whose index does not match it, is read whole, as it always could be. ``excludes`` (in
both) are the run's exclude patterns: the trees were saved without what they match, and a restore leaves
it alone.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalytic import paths
from catalytic.isolation.store import STATE_VERSION, Store, StoreError
from catalytic.ledger.canonical import dumps, encode, json_string, loads
from catalytic.snapshot import attrs
from catalytic.snapshot.entry import kind_of

if TYPE_CHECKING:
    from catalytic.diff import Triple

SECTIONS = ("domains", "outputs")

#: Where a tree's objects lie in the state document: (section, name, manifest range, modes range).
IndexRow = tuple[str, str, tuple[int, int], tuple[int, int]]


def _no_times() -> Iterator[tuple[str, int]]:
    return iter(())


@dataclass(frozen=True)
class SavedTree:
    """One domain or declared output of a saved pre-state."""

    section: str  # "domains" or "outputs"
    name: str
    entries: Callable[[], Iterator[Triple]]  # its entries in path order, read again at every call
    # (path, modification time in ns) of its entries in path order (see :class:`Times`); none when the
    # state was saved without them
    times: Callable[[], Iterator[tuple[str, int]]] = _no_times


class Times:
    """The modification times of a run's saved trees, written beside its state (``<run_id>.json.times``)
    as they are saved: JSON lines, for each tree a line ``["tree", section, name]`` and then ``[path,
    mtime_ns]`` for each of its entries in path order. A restore sets back the times of what it wrote; no
    verdict reads them, so a file that is missing or damaged only leaves times as the restore made them."""

    def __init__(self, directory: Path) -> None:
        from catalytic.snapshot.spool import Spool

        self.spool = Spool(directory)

    def tree(self, section: str, name: str) -> None:
        self.spool.write(dumps(["tree", section, name]))

    def entry(self, rel: str, mtime_ns: int) -> None:
        self.spool.write(f"[{json_string(rel)},{mtime_ns}]\n")

    def text(self) -> Iterator[bytes]:
        return self.spool.read(0, self.spool.size)

    def close(self) -> None:
        self.spool.close()


def read_times(path: str, section: str, name: str) -> Iterator[tuple[str, int]]:
    """The times :class:`Times` recorded for one tree, in path order (nothing past a damaged line)."""
    try:
        lines = open(path, "rb")  # noqa: SIM115 (closed below, also when the reader stops early)
    except OSError:
        return
    with lines:
        inside = False
        for line in lines:
            try:
                item = loads(line)
            except ValueError:
                return
            if not isinstance(item, list):
                return
            if len(item) == 3 and item[0] == "tree":
                if inside:
                    return
                inside = item[1:] == [section, name]
            elif not inside:
                continue
            elif len(item) == 2 and isinstance(item[0], str) and type(item[1]) is int:
                yield item[0], item[1]
            else:
                return


@dataclass(frozen=True)
class SavedState:
    algorithm: str
    trees: tuple[SavedTree, ...]
    excludes: tuple[str, ...] = ()

    def names(self, section: str) -> list[str]:
        return [tree.name for tree in self.trees if tree.section == section]


def tree_doc(entries: Sequence[Any], absent: bool) -> dict[str, Any]:
    """The saved form of a tree held in memory (entries with ``path``, ``value``, ``mode``)."""
    return {
        "absent": absent,
        "manifest": {e.path: e.value for e in entries},
        "modes": {e.path: e.mode for e in entries if e.mode is not None},
    }


def state_text(
    algorithm: str,
    trees: Sequence[tuple[str, str, Any]],
    run_id: str,
    index: list[IndexRow],
    excludes: Sequence[str] = (),
) -> Iterator[bytes]:
    """The canonical JSON of a pre-state document, in pieces; ``index`` receives where each tree's objects
    are. ``trees``: (section, name, snapshot) of every domain and declared output; a streamed snapshot's
    manifest and modes are copied from its spools (never held in memory), an in-memory one's (with
    ``entries``) encoded. Keys in canonical order."""
    at = 0

    def piece(data: bytes) -> bytes:
        nonlocal at
        at += len(data)
        return data

    def tree(section: str, name: str, snap: Any) -> Iterator[bytes]:
        if hasattr(snap, "entries"):
            doc = tree_doc(snap.entries, snap.absent)
            manifest, modes = _encoded(doc["manifest"]), _encoded(doc["modes"])
        else:
            manifest, modes = snap.manifest.chunks(), snap.modes.chunks()
        yield piece(b'{"absent":' + (b"true" if snap.absent else b"false") + b',"manifest":')
        start = at
        yield from map(piece, manifest)
        manifest_range = (start, at)
        yield piece(b',"modes":')
        start = at
        yield from map(piece, modes)
        index.append((section, name, manifest_range, (start, at)))
        yield piece(b"}")

    yield piece(b'{"algorithm":' + json_string(algorithm).encode())
    for section in SECTIONS:
        yield piece(b"," + json_string(section).encode() + b":{")
        named = sorted(
            ((n, snap) for s, n, snap in trees if s == section), key=lambda item: paths.sort_key(item[0])
        )
        for i, (name, snap) in enumerate(named):
            yield piece((b"," if i else b"") + json_string(name).encode() + b":")
            yield from tree(section, name, snap)
        yield piece(b"}")
        if section == "domains" and excludes:
            yield piece(b',"excludes":' + _encoded(list(excludes))[0])
    yield piece(b',"run_id":' + json_string(run_id).encode() + b',"version":')
    yield piece(json_string(STATE_VERSION).encode() + b"}\n")


def _encoded(obj: Any) -> list[bytes]:
    return [encode(obj).rstrip(b"\n")]


def index_text(algorithm: str, size: int, rows: list[IndexRow], excludes: Sequence[str] = ()) -> bytes:
    doc = {"algorithm": algorithm, "size": size, "trees": [list(row) for row in rows]}
    return encode({**doc, "excludes": list(excludes)} if excludes else doc)


def open_state(store: Store, run_id: str) -> SavedState:
    """The saved pre-state of ``run_id``, read tree by tree through its index, else whole."""
    state = _read_state(store, run_id)
    times = str(store.times_path(run_id))
    trees = tuple(
        replace(t, times=functools.partial(read_times, times, t.section, t.name)) for t in state.trees
    )
    return replace(state, trees=trees)


def _read_state(store: Store, run_id: str) -> SavedState:
    indexed = _indexed(str(store.state_path(run_id)), store.index_path(run_id))
    if indexed is not None:
        return indexed
    from catalytic.snapshot.manifest_stream import sorted_entries

    state = store.load_state(run_id)
    trees: list[SavedTree] = []
    for section in SECTIONS:
        for name, doc in sorted(state.get(section, {}).items()):
            whole = functools.partial(sorted_entries, doc.get("manifest", {}), doc.get("modes", {}))
            trees.append(SavedTree(section, name, whole))
    return SavedState(str(state.get("algorithm", "sha256")), tuple(trees), _patterns(state))


def _indexed(path: str, index_path: Path) -> SavedState | None:
    """The state through its index; None when there is none or it does not describe the document."""
    try:
        index = loads(index_path.read_bytes())
        size = os.stat(path).st_size
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("size") != size or not isinstance(index.get("trees"), list):
        return None
    trees: list[SavedTree] = []
    try:
        for section, name, (m0, m1), (d0, d1) in index["trees"]:
            if section not in SECTIONS or not isinstance(name, str) or not (0 < m0 < m1 < d0 < d1 <= size):
                return None
            trees.append(SavedTree(section, name, functools.partial(_tree_entries, path, (m0, m1), (d0, d1))))
    except (TypeError, ValueError):
        return None
    return SavedState(str(index.get("algorithm")), tuple(trees), _patterns(index))


def _patterns(doc: dict[str, Any]) -> tuple[str, ...]:
    """The exclude patterns a state (or its index) records; none in one saved before excludes existed."""
    found = doc.get("excludes", [])
    if not isinstance(found, list) or not all(isinstance(p, str) for p in found):
        from catalytic.isolation.store import StoreError

        raise StoreError("the saved pre-state's excludes are not a list of patterns")
    return tuple(found)


def _tree_entries(path: str, manifest: tuple[int, int], modes: tuple[int, int]) -> Iterator[Triple]:
    """A tree's entries read from the document's byte ranges (checked to be canonical on the way)."""
    from catalytic.ledger.stream import NotStreamable
    from catalytic.snapshot.manifest_stream import file_entries

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield from file_entries(fd, manifest, modes)
    except NotStreamable as exc:
        raise StoreError(f"the saved pre-state {path} is damaged ({exc})") from exc
    finally:
        os.close(fd)


def collect_garbage(
    store: Store, keep: Iterable[str], *, dry_run: bool = False
) -> tuple[list[str], list[Path]]:
    """Drop the saved states of runs not in ``keep`` and every stored object no kept state references.

    Returns the dropped run ids and object paths (nothing is removed with ``dry_run``).
    """
    keep_set = set(keep)
    dropped = [r for r in store.states() if r not in keep_set]
    referenced: set[str] = set()  # object paths: one per distinct file the kept states hold
    for run_id in store.states():
        if run_id in dropped:
            continue
        state = open_state(store, run_id)  # tree by tree, a block at a time
        for tree in state.trees:
            for _path, value, mode in tree.entries():
                if kind_of(value) == "file":
                    referenced.add(store.object_name(state.algorithm, value))
                xattrs = attrs.xattrs_named(mode)
                if xattrs is not None:
                    referenced.add(store.object_name(attrs.BLOB_ALGORITHM, xattrs))
    removed: list[Path] = []
    objects = store.path / "objects"
    if objects.is_dir():
        for dirpath, _dirs, files in os.walk(objects):
            for name in files:
                found = os.path.join(dirpath, name)
                if found not in referenced:
                    removed.append(Path(found))
    if not dry_run:
        for run_id in dropped:
            for doc in (store.state_path(run_id), store.index_path(run_id), store.times_path(run_id)):
                with contextlib.suppress(FileNotFoundError):
                    doc.unlink()
        for path in removed:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return dropped, sorted(removed)
