"""The runs root's append-only hash chain ``LEDGER.jsonl``: one line per sealed run.

Each line is canonical JSON (without the trailing newline inside the hash)::

    {"chain":"catalytic.chain/1","ledger_digest":ROOT,"prev":HASH,"run_id":ID,"seq":N,"status":S}

``prev`` is the sha256 (hex) of the previous line's bytes (without its newline); the first line's
``prev`` is 64 zeros. Appends hold an exclusive ``flock`` on ``.LEDGER.lock`` in the runs root, so two
runs finishing together never interleave or fork the chain.

A runs root with a chain knows every run catalytic sealed there: a ledger directory it does not name
was not written (or no longer is vouched for) by catalytic, and neither ``catalytic validate`` nor
``catalytic runs`` takes it for a run (see :func:`known_runs`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from catalytic.errors import LedgerError
from catalytic.ledger.canonical import dumps, loads
from catalytic.ledger.format import CHAIN_FILE, CHAIN_LOCK, reserved

CHAIN_SCHEMA = "catalytic.chain/1"
GENESIS = "0" * 64


def is_run_name(name: str) -> bool:
    """Whether an entry of a runs root is, by its name, a run's ledger (``_`` and ``.`` names are
    catalytic's own: caches, the store, spools, locks; the chain is the chain)."""
    return not reserved(name)


def known_runs(runs_root: Path) -> dict[str, str] | None:
    """``{run id: status}`` of the runs the chain records (its last line for each); None without a chain.

    A chain that cannot be read knows no run (``catalytic validate --all`` reports why).
    """
    if not os.path.lexists(runs_root / CHAIN_FILE):
        return None
    try:
        lines = read_lines(runs_root)
    except LedgerError:
        return {}
    known: dict[str, str] = {}
    for line in lines:
        value = line.value
        if value is not None and isinstance(value.get("run_id"), str):
            status = value.get("status")
            known[value["run_id"]] = status if isinstance(status, str) else ""
    return known


def line_hash(line: bytes) -> str:
    """The hash a following line names in ``prev`` (``line`` without its newline)."""
    return hashlib.sha256(line).hexdigest()


class ChainLine(NamedTuple):
    """One parsed line of ``LEDGER.jsonl`` (``raw`` without the newline)."""

    number: int
    raw: bytes
    value: dict[str, Any] | None
    complete: bool

    @property
    def hash(self) -> str:
        return line_hash(self.raw)


@contextlib.contextmanager
def locked(runs_root: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold the runs root's chain lock: exclusive to seal and append, shared to read a consistent chain.

    A reader that cannot create or open the lock file (a read-only checkout) goes on without it.
    """
    try:
        fd = os.open(runs_root / CHAIN_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if shared:
            yield
            return
        raise LedgerError(f"cannot open the chain lock in {runs_root}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def read_lines(runs_root: Path) -> list[ChainLine]:
    """Every line of the chain (an empty list when there is no chain yet)."""
    from catalytic.ledger.digest import read_regular

    path = runs_root / CHAIN_FILE
    data = read_regular(path)
    if data is None:
        if os.path.lexists(path):
            raise LedgerError(f"{path} is not a regular file")
        return []
    lines: list[ChainLine] = []
    parts = data.split(b"\n")
    for number, raw in enumerate(parts, start=1):
        complete = number < len(parts)
        if not complete and raw == b"":
            break
        value: dict[str, Any] | None
        try:
            parsed = loads(raw)
            value = parsed if isinstance(parsed, dict) else None
        except (ValueError, UnicodeDecodeError):
            value = None
        lines.append(ChainLine(number, raw, value, complete))
    return lines


def append(runs_root: Path, run_id: str, ledger_digest: str, status: str) -> dict[str, Any]:
    """Append the line of a sealed run; the caller holds :func:`locked`. Returns the line written.

    A torn last line (a crash mid-append: no newline) is cut off first; the run it named is then
    reported by ``catalytic validate`` as not chained.
    """
    from catalytic.ledger.digest import read_regular

    path = runs_root / CHAIN_FILE
    # Only the number of lines and the last one matter here: no line is parsed, so an append costs
    # the same however long the chain is.
    data = read_regular(path)
    if data is None:
        if os.path.lexists(path):
            raise LedgerError(f"{path} is not a regular file")
        data = b""
    end = data.rfind(b"\n") + 1
    if end < len(data):
        try:
            os.truncate(path, end)
        except OSError as exc:
            raise LedgerError(f"cannot cut the torn last line of {path}: {exc.strerror or exc}") from exc
    count = data.count(b"\n", 0, end)
    prev = line_hash(data[data.rfind(b"\n", 0, end - 1) + 1 : end - 1]) if count else GENESIS
    entry = {
        "chain": CHAIN_SCHEMA,
        "ledger_digest": ledger_digest,
        "prev": prev,
        "run_id": run_id,
        "seq": count,
        "status": status,
    }
    data = dumps(entry).encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise LedgerError(f"cannot append to {path}: {exc.strerror or exc}") from exc
    return entry
