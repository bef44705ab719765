"""Seal a finished ledger: ``LEDGER_DIGEST.json``, optional ``SIGNATURE.json``, then the chain line.

Called after ``STATUS.json`` is on disk (STATUS stays the marker of a finished run); the seal is the
marker of a ledger nobody can edit unnoticed. Order: digest, signature, fsync, chain append.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from catalytic.ledger import chain, digest
from catalytic.ledger.canonical import fsync_dir, write_json

if TYPE_CHECKING:
    from catalytic.integrations.signing import SigningKey


def seal(ledger_dir: Path, runs_root: Path, run_id: str, status: str, key: SigningKey | None = None) -> str:
    """Write the digest (and signature), append the run to the chain; returns the ledger digest."""
    doc = digest.compute(ledger_dir, run_id)
    signature = None
    if key is not None:
        from catalytic.integrations.signing import sign_ledger

        signature = sign_ledger(key, run_id, doc["root"])
    # The seal and the chain line appear together under the lock, so a validator holding the shared
    # lock never sees a sealed ledger that is not chained yet.
    with chain.locked(runs_root):
        write_json(ledger_dir / digest.DIGEST_FILE, doc)
        if signature is not None:
            write_json(ledger_dir / digest.SIGNATURE_FILE, signature)
        fsync_dir(ledger_dir)
        chain.append(runs_root, run_id, doc["root"], status)
    return doc["root"]
