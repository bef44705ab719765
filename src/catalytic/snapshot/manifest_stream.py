"""Stand-alone manifests as streams: a tree scanned into spools, a manifest file read back entry by entry.

``catalytic snapshot`` and ``catalytic diff`` use these so that nothing they hold grows with the number of
files: :func:`scanned` takes the parallel snapshot of a tree into spools (with no store at all unless a
cache directory is given), :func:`spooled_entries` reads the spooled documents back as sorted
``(path, value, mode)`` triples, and :class:`ManifestReader` does the same for a manifest file written by
``catalytic snapshot --output`` (:mod:`catalytic.snapshot.manifest_file`).

A manifest file is read in blocks and checked on the way to be exactly what catalytic writes (canonical
JSON, schema-valid values, paths strictly increasing), with the checks of the ledger's stream reader
(:mod:`catalytic.ledger.stream`). A file that is not (edited by hand, written by another tool) raises
:class:`~catalytic.ledger.stream.NotStreamable`, and the caller reads it whole instead
(:func:`sorted_entries` of :func:`~catalytic.snapshot.manifest_file.read_manifest`), as it always could.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from catalytic.diff import DomainDiff, Triple, changes
from catalytic.excludes import NONE, Excludes
from catalytic.ledger.stream import Kind, NotStreamable, parse_blocks
from catalytic.paths import ROOT, sort_key
from catalytic.snapshot.manifest_file import FORMAT, TAIL

if TYPE_CHECKING:
    from catalytic.snapshot.spool import Span, Spool
    from catalytic.snapshot.stream import DomainScan

#: Text parsed at a time: every entry of a block is a few Python objects at once, so a block of 1 MiB
#: costs ~20 MiB of memory, one of 64 KiB ~1 MiB (and parses no slower).
_BLOCK = 1 << 16
#: Entries written to a spool at a time by :func:`spool_changes`.
_BATCH = 4096
_HEAD = re.compile(
    rb'\{"format":"' + re.escape(FORMAT.encode()) + rb'","hash_algorithm":"([a-z0-9]+)","manifest":'
)
_MARK = b'},"merkle_root":"'
_MIDDLE = re.compile(rb'\},"merkle_root":"[0-9a-f]+","modes":')


@contextmanager
def scanned(
    path: Path,
    algorithm: str,
    *,
    store_dir: Path | None = None,
    jobs: int = 0,
    progress: Callable[[int, int], None] | None = None,
    leave_out: Excludes = NONE,
) -> Iterator[DomainScan]:
    """The parallel snapshot of the tree at ``path``, its documents in spools while the block runs
    (``leave_out``: what it leaves out, :mod:`catalytic.excludes`).

    The row store lives in ``store_dir`` (a stat cache); without one there is no store
    at all (every file is hashed, nothing is kept) and the spools are unnamed files of the temp directory.
    ``skip``: paths (relative to ``path``) left out with everything below them.
    """
    from catalytic.snapshot.spool import Spool
    from catalytic.snapshot.stream import scan_domain

    with ExitStack() as stack:
        if store_dir is None:
            import tempfile

            spools = Path(tempfile.gettempdir())
        else:
            store_dir.mkdir(parents=True, exist_ok=True)
            spools = store_dir
        manifest, modes = Spool(spools), Spool(spools)
        stack.callback(modes.close)
        stack.callback(manifest.close)
        yield scan_domain(
            path,
            ROOT,
            algorithm,
            store_dir=store_dir,
            manifest=manifest,
            modes=modes,
            jobs=jobs,
            progress=progress,
            leave_out=leave_out,
        )


def object_batches(chunks: Iterable[bytes], kind: Kind) -> Iterator[tuple[list[str], list[str]]]:
    """The (paths, values) batches of one canonical ``{path: value}`` object given in pieces.

    Raises :class:`NotStreamable` as soon as the text is not exactly canonical and schema-valid.
    """
    domains = 0
    # The object is read as the only domain of a ledger document: '{".":' + object + '}\n'.
    for _domain, keys, values in parse_blocks(_framed(chunks), kind):
        if not keys:  # the batch that opens a domain
            domains += 1
            if domains > 1:
                raise NotStreamable("more than one object")
            continue
        yield keys, values


def _framed(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``{".":`` + the chunks + ``}\\n``, in blocks of at most :data:`_BLOCK` bytes."""
    yield b'{".":'
    for chunk in chunks:
        for start in range(0, len(chunk), _BLOCK):  # a spool gives larger pieces
            yield chunk[start : start + _BLOCK]
    yield b"}\n"


def join_modes(
    manifest: Iterable[tuple[list[str], list[str]]], modes: Iterable[tuple[list[str], list[str]]]
) -> Iterator[Triple]:
    """Entries from the batches of a MANIFEST object and of its MODES object (both in path order).

    A path without a mode (a symlink) gets None; a mode without its path is ignored, as
    :func:`catalytic.snapshot.entries_from_documents` ignores it.
    """
    mode_items = ((p, m) for paths, values in modes for p, m in zip(paths, values, strict=True))
    mode_path, mode = next(mode_items, (None, None))
    for paths, values in manifest:
        for path, value in zip(paths, values, strict=True):
            if mode_path == path:
                yield path, value, mode
                mode_path, mode = next(mode_items, (None, None))
                continue
            while mode_path is not None and sort_key(mode_path) < sort_key(path):
                mode_path, mode = next(mode_items, (None, None))
            if mode_path == path:
                yield path, value, mode
                mode_path, mode = next(mode_items, (None, None))
            else:
                yield path, value, None


def documents_diff(before: DomainScan, after: DomainScan) -> DomainDiff:
    """The differences of two snapshots of a domain, from their documents (a merge, a batch at a time):
    for a post-run snapshot taken without the store the pre-run one wrote."""
    diff = DomainDiff()
    pre = spooled_entries(before.manifest, before.modes)
    for change in changes(pre, spooled_entries(after.manifest, after.modes)):
        diff.add(change)
    return diff


def spooled_entries(manifest: Span, modes: Span) -> Iterator[Triple]:
    """The entries of a streamed snapshot, read back from its spools in path order."""
    return join_modes(object_batches(manifest.chunks(), "manifest"), object_batches(modes.chunks(), "modes"))


def spool_changes(
    domain: str,
    pairs: Iterable[tuple[Triple | None, Triple | None]],
    algorithm: str,
    manifest: Spool,
    modes: Spool,
) -> DomainScan:
    """A streamed snapshot of ``domain`` given as its entries before and after, pair by pair in path order
    (``before`` None: added; ``after`` None: removed): the ``after`` entries' documents are written into the
    spools, their Merkle root and counts computed on the way, and the differences collected. Nothing is
    kept per entry.

    An overlay run's post-run snapshot is made this way from the pre-run one merged with the upper layer.
    """
    from catalytic.diff import DomainDiff
    from catalytic.ledger.canonical import json_string
    from catalytic.snapshot.entry import DIR, kind_of
    from catalytic.snapshot.merkle import MerkleBuilder
    from catalytic.snapshot.spool import ObjectWriter
    from catalytic.snapshot.stream import DomainScan
    from catalytic.snapshot.walker import WalkStats

    stats = WalkStats()
    builder = MerkleBuilder(algorithm)
    body, mode_body = ObjectWriter(manifest), ObjectWriter(modes)
    diff = DomainDiff()
    add = builder.add
    count = 0
    texts: list[str] = []  # written to the spools a few thousand entries at a time
    mode_texts: list[str] = []
    for before, after in pairs:
        if after is None:
            assert before is not None
            diff.add(("removed", before[0], before[1], None, before[2], None))
            continue
        path, value, mode = after
        if before is None:
            diff.add(("added", path, None, value, None, mode))
        elif before[1] != value or before[2] != mode:
            diff.add(("changed", path, before[1], value, before[2], mode))
        count += 1
        key = json_string(path)
        texts.append(key + ":" + json_string(value))
        if mode is not None:
            mode_texts.append(key + ':"' + mode + '"')
        add(path, value, mode)
        if value == DIR:
            stats.dirs += 1
        elif kind_of(value) == "file":
            stats.files += 1
        if len(texts) >= _BATCH:
            body.add(",".join(texts))
            mode_body.add(",".join(mode_texts))
            texts.clear()
            mode_texts.clear()
    body.add(",".join(texts))
    mode_body.add(",".join(mode_texts))
    stats.absent = count == 0
    return DomainScan(domain, stats, builder.root(), body.close(), mode_body.close(), diff)


def sorted_entries(manifest: dict[str, str], modes: dict[str, str]) -> Iterator[Triple]:
    """The entries of manifest and modes objects read whole (any valid manifest), sorted by path bytes."""
    for key in sorted(manifest, key=sort_key):
        yield key, manifest[key], modes.get(key)


class ManifestReader:
    """A manifest file, open for streaming: its hash algorithm, then its entries in path order.

    :meth:`open` returns None when the file does not even start as catalytic writes it; the caller then
    reads it whole (:func:`read_manifest` reports what is wrong with it, if anything).
    """

    def __init__(self, path: Path, fd: int, algorithm: str, start: int) -> None:
        self.path = path
        self.fd = fd
        self.algorithm = algorithm
        self._start = start

    @classmethod
    def open(cls, path: Path) -> ManifestReader | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            # Only a regular file can be read at offsets (a pipe, e.g. ``<(cat m.json)``, is read whole).
            match = _HEAD.match(os.pread(fd, 4096, 0)) if stat.S_ISREG(os.fstat(fd).st_mode) else None
        except OSError:
            match = None
        if match is None:
            os.close(fd)
            return None
        return cls(path, fd, match.group(1).decode(), match.end())

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def entries(self) -> Iterator[Triple]:
        """The entries, checked on the way (:class:`NotStreamable` when the file is not canonical)."""
        manifest_end, modes_start, modes_end = self._layout()
        return file_entries(self.fd, (self._start, manifest_end), (modes_start, modes_end))

    def _layout(self) -> tuple[int, int, int]:
        """Where the manifest object ends and the modes object starts and ends.

        ``},"merkle_root":"`` occurs once in a canonical manifest file: inside a JSON string every quote is
        escaped, so ``,"`` is always structure, and the only ``}`` followed by a comma outside a string
        ends the manifest object. It is searched from the end, over the (shorter) modes object.
        """
        size = os.fstat(self.fd).st_size
        tail = len(TAIL)
        if size < self._start + tail or os.pread(self.fd, tail, size - tail) != TAIL.encode():
            raise NotStreamable("bad end of file")
        end = size - tail
        overlap = len(_MARK) - 1
        while end > self._start:
            begin = max(self._start, end - (_BLOCK << 4))
            block = os.pread(self.fd, end - begin + overlap, begin)
            found = block.rfind(_MARK)
            if found >= 0:
                at = begin + found
                middle = _MIDDLE.match(os.pread(self.fd, 4096, at))
                if middle is None:
                    raise NotStreamable("bad merkle_root")
                return at + 1, at + middle.end(), size - tail
            end = begin
        raise NotStreamable("no merkle_root")


def file_entries(fd: int, manifest: tuple[int, int], modes: tuple[int, int]) -> Iterator[Triple]:
    """The entries of a MANIFEST object and a MODES object that lie at byte ranges of an open file, read a
    block at a time and checked on the way (:class:`NotStreamable` when they are not canonical)."""
    return join_modes(
        object_batches(_read(fd, *manifest), "manifest"), object_batches(_read(fd, *modes), "modes")
    )


def _read(fd: int, start: int, end: int) -> Iterator[bytes]:
    while start < end:
        chunk = os.pread(fd, min(end - start, _BLOCK), start)
        if not chunk:
            raise NotStreamable("file shorter than it was")
        yield chunk
        start += len(chunk)
