"""Tamper evidence: check a ledger's digest and signature, and a runs root's hash chain.

Every check returns :class:`~catalytic.errors.Problem` records with stable codes:

=====================  ==========================================================================
``DIGEST_MISSING``     a chained (or signed) ledger has no ``LEDGER_DIGEST.json``
``DIGEST_MALFORMED``   ``LEDGER_DIGEST.json`` is not a digest document
``DIGEST_FILE``        a file was added to or removed from the ledger after it was sealed
``DIGEST_MISMATCH``    a ledger file's bytes (or the recorded root) differ from the digest
``SIGNATURE_MISSING``  ``--trusted-key`` was given but the ledger is not signed
``SIGNATURE_INVALID``  the signature does not verify with a trusted key (or signs something else)
``CHAIN_MALFORMED``    a line of ``LEDGER.jsonl`` is not a chain entry (or is torn)
``CHAIN_BROKEN``       a line's ``prev`` is not the hash of the line before it (rewritten/removed line)
``CHAIN_ORDER``        ``seq`` numbers are not 0, 1, 2, ... (reordered or removed lines)
``CHAIN_DUPLICATE``    a run appears twice in the chain
``CHAIN_RUN_MISSING``  the chain names a run whose ledger is gone
``CHAIN_DIGEST``       the chain's digest for a run differs from the ledger's digest
``UNCHAINED``          a run in a runs root with a chain is not in it: catalytic did not seal it there
                       (a ledger the command planted, or one whose line was removed)
``CHAIN_ANCHOR``       the chain does not extend an earlier copy of it (history was rewritten)
=====================  ==========================================================================
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalytic.errors import LedgerError, Problem
from catalytic.ledger import chain, digest
from catalytic.ledger import format as fmt
from catalytic.ledger.canonical import loads
from catalytic.locks import in_progress

if TYPE_CHECKING:
    from catalytic.integrations.signing import PublicKey


def _load(path: Path) -> Any:
    data = digest.read_regular(path)
    if data is None:
        raise ValueError(f"{path.name} is not a regular file")
    return loads(data)


def recorded_root(ledger_dir: Path) -> str | None:
    """The root recorded in the ledger's ``LEDGER_DIGEST.json`` (None when absent or unreadable)."""
    try:
        doc = _load(ledger_dir / digest.DIGEST_FILE)
    except (OSError, ValueError, LedgerError):
        return None
    root = doc.get("root") if isinstance(doc, dict) else None
    return root if isinstance(root, str) else None


def check_seal(
    ledger_dir: Path,
    *,
    trusted_keys: Sequence[PublicKey] = (),
    require_digest: bool = False,
) -> list[Problem]:
    """Check ``LEDGER_DIGEST.json`` against the files, and ``SIGNATURE.json`` against trusted keys."""
    name = ledger_dir.name
    path = ledger_dir / digest.DIGEST_FILE
    if not os.path.lexists(path):
        if require_digest or trusted_keys:
            return [Problem("DIGEST_MISSING", f"no {digest.DIGEST_FILE}: the ledger is not sealed")]
        return []
    doc, problems = _seal_document(path, "ledger_digest.schema.json", "DIGEST_MALFORMED")
    if doc is None:
        return problems
    files = doc["files"]
    try:
        actual = digest.file_hashes(ledger_dir)
    except LedgerError as exc:
        return [Problem("DIGEST_MISMATCH", f"{exc.message}")]
    for file in sorted(set(files) | set(actual)):
        if file not in actual:
            problems.append(Problem("DIGEST_FILE", f"{file} was removed after the ledger was sealed"))
        elif file not in files:
            problems.append(Problem("DIGEST_FILE", f"{file} was added after the ledger was sealed"))
        elif files[file] != actual[file]:
            problems.append(Problem("DIGEST_MISMATCH", f"{file} was modified after the ledger was sealed"))
    root = digest.root_of(files)
    if doc["root"] != root:
        problems.append(
            Problem("DIGEST_MISMATCH", f"{digest.DIGEST_FILE}: root is not the Merkle root of its files")
        )
    if doc.get("run_id") != name:
        problems.append(
            Problem("DIGEST_MISMATCH", f"{digest.DIGEST_FILE} was made for run {doc.get('run_id')!r}")
        )
    if trusted_keys:
        problems.extend(_check_signature(ledger_dir, name, doc["root"], trusted_keys))
    return problems


def _check_signature(ledger_dir: Path, name: str, root: str, trusted: Sequence[PublicKey]) -> list[Problem]:
    from catalytic.integrations.signing import verify_ledger_signature

    path = ledger_dir / digest.SIGNATURE_FILE
    if not os.path.lexists(path):
        return [
            Problem(
                "SIGNATURE_MISSING",
                f"no {digest.SIGNATURE_FILE}: the ledger is not signed, but a trusted key was given",
            )
        ]
    doc, problems = _seal_document(path, "signature.schema.json", "SIGNATURE_INVALID")
    if doc is None:
        return problems
    why = verify_ledger_signature(doc, name, root, list(trusted))
    return [] if why is None else [Problem("SIGNATURE_INVALID", f"{digest.SIGNATURE_FILE}: {why}")]


def check_anchor(runs_root: Path, anchor: bytes) -> list[Problem]:
    """Check that ``LEDGER.jsonl`` extends ``anchor``, an earlier copy of it (e.g. from git or CI)."""
    try:
        lines = chain.read_lines(runs_root)
    except LedgerError as exc:
        return [Problem("CHAIN_ANCHOR", exc.message)]
    current = b"".join(line.raw + b"\n" for line in lines if line.complete)
    if current.startswith(anchor):
        return []
    kept = 0
    for old, new in zip(anchor.split(b"\n"), current.split(b"\n"), strict=False):
        if old != new:
            break
        kept += 1
    return [
        Problem(
            "CHAIN_ANCHOR",
            f"{fmt.CHAIN_FILE} does not extend the anchored copy: it differs from line {kept + 1} on "
            "(runs were rewritten or removed)",
        )
    ]


def check_chained(ledger_dir: Path) -> list[Problem]:
    """A run that the chain beside it (``LEDGER.jsonl`` in its runs root) records as sealed must still carry
    that seal: without this, deleting ``LEDGER_DIGEST.json`` would turn a sealed ledger into an unsealed
    one that ``validate --run-dir`` accepts. A run copied out of its runs root has no chain beside it (use
    ``--require-seal`` there). A run the chain does not name at all is :func:`unchained`. The chain's own
    problems are :func:`check_chain`'s."""
    runs_root = ledger_dir.parent
    if not os.path.lexists(runs_root / fmt.CHAIN_FILE):
        return []
    try:
        lines = chain.read_lines(runs_root)
    except LedgerError:
        return []
    recorded = [
        line.value["ledger_digest"]
        for line in lines
        if line.value is not None
        and line.value.get("run_id") == ledger_dir.name
        and isinstance(line.value.get("ledger_digest"), str)
    ]
    return _as_chained(ledger_dir, recorded[-1]) if recorded else [unchained(ledger_dir.name)]


def unchained(run_id: str) -> Problem:
    """The problem of a run that a runs root with a chain does not know."""
    return Problem(
        "UNCHAINED",
        f"{run_id}: not in {fmt.CHAIN_FILE} of its runs root: catalytic did not seal this ledger there "
        "(it was planted, copied in, or its line was removed)",
    )


def _as_chained(ledger_dir: Path, chained_root: str) -> list[Problem]:
    """A chained run's seal against the root its chain line records."""
    root = recorded_root(ledger_dir)
    if root is None:
        return [Problem("DIGEST_MISSING", f"{ledger_dir.name}: chained but has no {digest.DIGEST_FILE}")]
    if root != chained_root:
        return [Problem("CHAIN_DIGEST", f"{ledger_dir.name}: the ledger digest differs from the chain's")]
    return []


def check_chain(runs_root: Path) -> list[Problem]:
    """Check ``LEDGER.jsonl`` line by line and against the ledgers in ``runs_root``.

    Holds the chain lock shared, so runs sealing at the same time never show up half-sealed.
    """
    with chain.locked(runs_root, shared=True):
        return _check_chain(runs_root)


def _check_chain(runs_root: Path) -> list[Problem]:
    try:
        lines = chain.read_lines(runs_root)
    except LedgerError as exc:
        return [Problem("CHAIN_MALFORMED", exc.message)]
    from catalytic.ledger.reader import schema_problems

    problems: list[Problem] = []
    where = fmt.CHAIN_FILE
    prev = chain.GENESIS
    seen: set[str] = set()
    for index, line in enumerate(lines):
        value = line.value
        if not line.complete:
            problems.append(Problem("CHAIN_MALFORMED", f"{where}:{line.number}: torn line (no newline)"))
        # An empty object is a line too (it fails the schema): only a line that is not JSON has no value.
        shape = (
            schema_problems(value, "chain_line.schema.json", f"{where}:{line.number}")
            if value is not None
            else []
        )
        if value is None or shape:
            detail = f": {shape[0].message}" if shape else ": not a JSON object"
            problems.append(Problem("CHAIN_MALFORMED", f"{where}:{line.number} is not a chain entry{detail}"))
            prev = line.hash
            continue
        run_id = value["run_id"]
        if value.get("prev") != prev:
            problems.append(
                Problem(
                    "CHAIN_BROKEN",
                    f"{where}:{line.number} ({run_id}): prev is not the hash of the line before "
                    "(a line was rewritten, removed or inserted)",
                )
            )
        if value.get("seq") != index:
            problems.append(
                Problem(
                    "CHAIN_ORDER",
                    f"{where}:{line.number} ({run_id}): seq {value.get('seq')!r}, expected {index}",
                )
            )
        if run_id in seen:
            problems.append(Problem("CHAIN_DUPLICATE", f"{where}:{line.number}: run {run_id} appears twice"))
        seen.add(run_id)
        ledger_dir = runs_root / run_id
        if os.sep in run_id or run_id in {"", ".", ".."} or not ledger_dir.is_dir():
            problems.append(
                Problem("CHAIN_RUN_MISSING", f"{where}:{line.number}: the ledger of run {run_id} is gone")
            )
        else:
            problems.extend(_as_chained(ledger_dir, value["ledger_digest"]))
        prev = line.hash
    # With a chain, every run must be in it; without one, a sealed run means the chain was deleted.
    has_chain = os.path.lexists(runs_root / fmt.CHAIN_FILE)
    for name in sorted(os.listdir(runs_root)) if runs_root.is_dir() else []:
        if not chain.is_run_name(name) or name in seen:
            continue
        if in_progress(runs_root, name):  # chained when it ends; its own report says it is in progress
            continue
        if has_chain or os.path.lexists(runs_root / name / digest.DIGEST_FILE):
            problems.append(unchained(name))
    return problems


def _seal_document(path: Path, schema: str, code: str) -> tuple[Any, list[Problem]]:
    """A seal file read and checked against its schema; (None, problems with ``code``) when it is not."""
    try:
        doc = _load(path)
    except (OSError, ValueError, LedgerError) as exc:
        return None, [Problem(code, f"cannot read {path.name}: {exc}")]
    from catalytic.ledger.reader import schema_problems

    found = schema_problems(doc, schema, path.name)
    if found:
        return None, [Problem(code, p.message) for p in found]
    return doc, []
