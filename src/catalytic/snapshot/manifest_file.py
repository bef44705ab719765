"""Stand-alone manifest files (``catalytic snapshot --output``), written as a stream.

Shape (canonical JSON, ``catalytic.manifest/1``)::

    {"format": "catalytic.manifest/1", "hash_algorithm": "sha256", "merkle_root": "<hex>",
     "manifest": {path: value}, "modes": {path: "0644"}}

``manifest`` and ``modes`` have the shapes of one domain of PRE_MANIFEST.json / PRE_MODES.json. The file is
written either from entries in memory (:func:`write_manifest`) or straight from the parallel snapshot's
spooled documents (:func:`write_spooled_manifest`), byte for byte the same;
:mod:`catalytic.snapshot.manifest_stream` reads it back as a stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalytic.errors import UsageError
from catalytic.ledger.canonical import json_string, loads, write_output
from catalytic.snapshot.entry import Entry

if TYPE_CHECKING:
    from catalytic.snapshot.spool import Span

FORMAT = "catalytic.manifest/1"


def iter_domain_object(entries: Iterable[Entry], *, modes: bool = False) -> Iterator[str]:
    """Canonical JSON of ``{path: value}`` (or ``{path: mode}``) from entries already in byte order."""
    yield "{"
    first = True
    for entry in entries:
        item = entry.mode if modes else entry.value
        if item is None:
            continue
        yield ("" if first else ",") + json_string(entry.path) + ":" + json_string(item)
        first = False
    yield "}"


def write_manifest(path: Path, entries: Iterable[Entry], algorithm: str, root: str) -> None:
    """Write a manifest file atomically (keys in canonical order: format, hash_algorithm, ...)."""
    items = list(entries) if not isinstance(entries, list | tuple) else entries

    def chunks() -> Iterator[str]:
        yield head(algorithm)
        yield from iter_domain_object(items)
        yield middle(root)
        yield from iter_domain_object(items, modes=True)
        yield TAIL

    write_output(path, chunks())


def write_spooled_manifest(path: Path, manifest: Span, modes: Span, algorithm: str, root: str) -> None:
    """Write a manifest file atomically from a streamed snapshot's spooled MANIFEST and MODES objects.

    The bytes are those :func:`write_manifest` writes for the same entries; memory stays one spool block.
    """

    def chunks() -> Iterator[bytes]:
        yield head(algorithm).encode()
        yield from manifest.chunks()
        yield middle(root).encode()
        yield from modes.chunks()
        yield TAIL.encode()

    write_output(path, chunks())


def head(algorithm: str) -> str:
    """The text of a manifest file up to its ``manifest`` object."""
    return '{"format":' + json_string(FORMAT) + ',"hash_algorithm":' + json_string(algorithm) + ',"manifest":'


def middle(root: str) -> str:
    """The text of a manifest file between its ``manifest`` and ``modes`` objects."""
    return ',"merkle_root":' + json_string(root) + ',"modes":'


#: The text of a manifest file after its ``modes`` object.
TAIL = "}\n"


def read_manifest(path: Path) -> tuple[dict[str, str], dict[str, str], str, dict[str, Any]]:
    """(manifest, modes, algorithm, whole document) of a manifest file."""
    try:
        doc = loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable manifest: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UsageError(f"{path}: not a catalytic manifest (format {FORMAT})")
    return doc["manifest"], doc.get("modes", {}), doc.get("hash_algorithm", "sha256"), doc
