"""Declared durable outputs as they exist after the run: the records of ``OUTPUTS.json``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from catalytic import paths
from catalytic.ledger.format import OutputRecord
from catalytic.snapshot import snapshot_tree
from catalytic.snapshot.entry import DIR, SYMLINK_PREFIX, kind_of


def collect_outputs(root: Path, declared: Sequence[str]) -> tuple[list[OutputRecord], list[str]]:
    """Hash every declared output (sha256, always); return the records and the missing outputs.

    A declared directory is listed itself and then every entry below it. FIFOs, sockets and
    devices are not durable artifacts in the seed's format and are not listed (the snapshot of a
    domain is where such entries are tracked).
    """
    records: list[OutputRecord] = []
    missing: list[str] = []
    for out in declared:
        snap = snapshot_tree(root / out, "sha256")
        if snap.absent:
            missing.append(out)
            continue
        for entry in snap.entries:
            path = paths.join(out, entry.path)
            if entry.value == DIR:
                records.append({"path": path, "type": "directory"})
            elif entry.value.startswith(SYMLINK_PREFIX):
                records.append(
                    {"path": path, "type": "symlink", "target": entry.value[len(SYMLINK_PREFIX) :]}
                )
            elif kind_of(entry.value) == "file":
                records.append({"path": path, "type": "file", "sha256": entry.value})
    records.sort(key=lambda r: paths.sort_key(r["path"]))
    return records, missing
