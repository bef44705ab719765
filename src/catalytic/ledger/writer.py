"""Phase 5: write a run ledger: reserve its directory first, write every file atomically, STATUS last."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from catalytic import faults
from catalytic.errors import DeclarationError, LedgerError, Problem
from catalytic.ledger.canonical import StagedFile, fsync_dir, json_chunks, stage, sync_all
from catalytic.ledger.format import OPTIONAL_FILES, STATUS, WRITE_ORDER


def reserve(runs_root: Path, run_id: str) -> Path:
    """Create ``runs_root/run_id`` exclusively: of two runs with the same id, exactly one gets it."""
    try:
        runs_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LedgerError(f"cannot create the runs root {runs_root}: {exc.strerror or exc}") from exc
    ledger_dir = runs_root / run_id
    try:
        ledger_dir.mkdir()
    except FileExistsError:
        raise DeclarationError(
            [Problem("EXISTS", f"a ledger for run id {run_id!r} already exists at {ledger_dir}")]
        ) from None
    except OSError as exc:
        raise LedgerError(f"cannot create the ledger {ledger_dir}: {exc.strerror or exc}") from exc
    fsync_dir(runs_root)
    return ledger_dir


class Spooled:
    """A document whose objects were written ahead (one canonical JSON object text per key, in order).

    The parallel snapshot spools each domain's manifest as it goes; the ledger copies it from there.
    """

    def __init__(self, parts: list[tuple[str, Callable[[], Iterable[bytes]]]]) -> None:
        self.parts = parts

    def chunks(self) -> Iterator[bytes]:
        from catalytic.ledger.canonical import json_string

        yield b"{"
        for i, (key, text) in enumerate(self.parts):
            yield (("," if i else "") + json_string(key) + ":").encode("utf-8")
            yield from text()
        yield b"}\n"


def write_ledger(ledger_dir: Path, documents: Mapping[str, Any]) -> None:
    """Write every ledger document; ``STATUS.json`` last so a crash never leaves a false success.

    Optional documents (:data:`~catalytic.ledger.format.OPTIONAL_FILES`, e.g. ``WRITE_LOG.json``)
    are written after the required ones and before ``STATUS.json``. Every file is first written
    without a name (``O_TMPFILE``), then all are synced together (one journal commit instead of one
    per file), then named in order; ``STATUS.json`` is named only once the others' names are durable.
    """
    missing = [name for name in WRITE_ORDER if name not in documents]
    extra = sorted(set(documents) - set(WRITE_ORDER) - set(OPTIONAL_FILES))
    if missing or extra:
        raise LedgerError(f"ledger documents missing {missing} or unknown {extra}")
    optional = [name for name in OPTIONAL_FILES if name in documents]
    staged: list[StagedFile] = []
    # A document that is the very object of one written before it (a POST manifest equal to the PRE one):
    # one file under two names, not the same bytes twice.
    first: dict[int, str] = {}
    links: list[tuple[str, str]] = []
    try:
        for name in (*WRITE_ORDER[:-1], *optional, STATUS):
            faults.point("record.file")
            document = documents[name]
            if id(document) in first and name != STATUS:
                links.append((name, first[id(document)]))
                continue
            first.setdefault(id(document), name)
            chunks: Iterable[str] | Iterable[bytes] | bytes
            if isinstance(document, Spooled):
                chunks = document.chunks()
            elif isinstance(document, bytes):  # already canonical JSON (e.g. a large WRITE_LOG)
                chunks = document
            else:
                chunks = json_chunks(document)
            staged.append(stage(ledger_dir / name, chunks, exclusive=True))
        sync_all(staged)
        for file in staged[:-1]:
            file.publish()
        for name, source in links:
            try:
                os.link(ledger_dir / source, ledger_dir / name, follow_symlinks=False)
            except OSError as exc:
                raise LedgerError(f"cannot write {ledger_dir / name}: {exc.strerror or exc}") from exc
        # Everything STATUS vouches for must be on disk, under its name, before STATUS appears.
        fsync_dir(ledger_dir)
        faults.point("record.status")
        staged[-1].publish()
    finally:
        for file in staged:
            file.close()
    fsync_dir(ledger_dir)
