"""Phase 5: write a run ledger: reserve its directory first, write every file atomically, STATUS last."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from catalytic import faults
from catalytic.errors import DeclarationError, LedgerError, Problem
from catalytic.ledger.canonical import fsync_dir, write_atomic, write_json
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
    are written after the required ones and before ``STATUS.json``.
    """
    missing = [name for name in WRITE_ORDER if name not in documents]
    extra = sorted(set(documents) - set(WRITE_ORDER) - set(OPTIONAL_FILES))
    if missing or extra:
        raise LedgerError(f"ledger documents missing {missing} or unknown {extra}")
    optional = [name for name in OPTIONAL_FILES if name in documents]
    for name in (*WRITE_ORDER[:-1], *optional, STATUS):
        if name == STATUS:
            # Everything STATUS vouches for must be on disk before STATUS itself appears.
            fsync_dir(ledger_dir)
        faults.point("record.file")
        document = documents[name]
        if isinstance(document, Spooled):
            write_atomic(ledger_dir / name, document.chunks(), exclusive=True)
        elif isinstance(document, bytes):
            # Already canonical JSON (e.g. a large WRITE_LOG).
            write_atomic(ledger_dir / name, document, exclusive=True)
        else:
            write_json(ledger_dir / name, document, exclusive=True)
    fsync_dir(ledger_dir)


def remove_partial(ledger_dir: Path) -> None:
    """Remove our temporary files from a ledger directory after a failed write (never STATUS)."""
    try:
        names = os.listdir(ledger_dir)
    except OSError:
        return
    for name in names:
        if name.startswith(".") and name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.unlink(ledger_dir / name)
