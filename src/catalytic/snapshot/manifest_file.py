"""Stand-alone manifest files (``catalytic snapshot --output``), written as a stream.

Shape (canonical JSON, ``catalytic.manifest/1``)::

    {"format": "catalytic.manifest/1", "hash_algorithm": "sha256", "merkle_root": "<hex>",
     "manifest": {path: value}, "modes": {path: "0644"}}

``manifest`` and ``modes`` have the shapes of one domain of PRE_MANIFEST.json / PRE_MODES.json.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from catalytic.errors import UsageError
from catalytic.ledger.canonical import _string, loads, write_atomic
from catalytic.snapshot.entry import Entry

FORMAT = "catalytic.manifest/1"


def iter_domain_object(entries: Iterable[Entry], *, modes: bool = False) -> Iterator[str]:
    """Canonical JSON of ``{path: value}`` (or ``{path: mode}``) from entries already in byte order."""
    yield "{"
    first = True
    for entry in entries:
        item = entry.mode if modes else entry.value
        if item is None:
            continue
        yield ("" if first else ",") + _string(entry.path) + ":" + _string(item)
        first = False
    yield "}"


def write_manifest(path: Path, entries: Iterable[Entry], algorithm: str, root: str) -> None:
    """Write a manifest file atomically (keys in canonical order: format, hash_algorithm, ...)."""
    items = list(entries) if not isinstance(entries, list | tuple) else entries

    def chunks() -> Iterator[str]:
        yield '{"format":' + _string(FORMAT) + ',"hash_algorithm":' + _string(algorithm)
        yield ',"manifest":'
        yield from iter_domain_object(items)
        yield ',"merkle_root":' + _string(root) + ',"modes":'
        yield from iter_domain_object(items, modes=True)
        yield "}\n"

    write_atomic(path, chunks())


def read_manifest(path: Path) -> tuple[dict[str, str], dict[str, str], str, dict[str, Any]]:
    """(manifest, modes, algorithm, whole document) of a manifest file."""
    try:
        doc = loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable manifest: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UsageError(f"{path}: not a catalytic manifest (format {FORMAT})")
    return doc["manifest"], doc.get("modes", {}), doc.get("hash_algorithm", "sha256"), doc
