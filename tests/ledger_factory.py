"""Build valid run ledgers on disk by hand, for the validator's tests.

Nothing here goes through the runtime: the documents are written out literally (with hashlib for the
digests), so a bug in the runtime cannot hide a bug in the validator. ``build_ledger`` makes a
``catalytic.ledger/1`` ledger; ``build_seed_ledger`` one shaped like the seed prototype's.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalytic.ledger.canonical import dumps

RUN_ID = "cortex-build-demo"
DOMAIN = "CORTEX/_generated/_tmp"
FILES = ("RUN_INFO.json", "PRE_MANIFEST.json", "PRE_MODES.json", "POST_MANIFEST.json")
FILES += ("POST_MODES.json", "RESTORE_DIFF.json", "OUTPUTS.json", "STATUS.json")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Ledger:
    """A ledger directory inside a workspace ``root``."""

    root: Path
    run_dir: Path
    run_id: str

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def read(self, name: str) -> Any:
        return json.loads(self.path(name).read_text("utf-8"))

    def write(self, name: str, document: Any) -> None:
        self.path(name).write_text(dumps(document), "utf-8")

    def edit(self, name: str, change: Callable[[Any], object]) -> None:
        """Apply ``change`` to a document in place (its return value is ignored) and write it back."""
        document = self.read(name)
        change(document)
        self.write(name, document)


def _domain_manifest() -> tuple[dict[str, str], dict[str, str]]:
    manifest = {
        ".": "dir",
        "a.txt": sha(b"alpha\n"),
        "link": "symlink:a.txt",
        "sub": "dir",
        "sub/b.bin": sha(b"\x00\x01"),
    }
    modes = {".": "0755", "a.txt": "0644", "sub": "0755", "sub/b.bin": "0600"}
    return manifest, modes


def build_ledger(root: Path, run_id: str = RUN_ID, *, runs_root: str = "CONTRACTS/_runs") -> Ledger:
    """A restored catalytic.ledger/1 run with a file, a directory and a symlink output on disk."""
    gen = root / "CORTEX" / "_generated"
    (gen / "pack").mkdir(parents=True, exist_ok=True)
    (gen / "cortex.json").write_bytes(b'{"index": 1}\n')
    (gen / "pack" / "x.txt").write_bytes(b"packed\n")
    os.symlink("cortex.json", gen / "latest")
    run_dir = root / runs_root / run_id
    run_dir.mkdir(parents=True)
    outputs_declared = ["CORTEX/_generated/cortex.json", "CORTEX/_generated/latest", "CORTEX/_generated/pack"]
    manifest, modes = _domain_manifest()
    docs: dict[str, Any] = {
        "RUN_INFO.json": {
            "run_id": run_id,
            "timestamp": "2026-11-24T07:23:01.123456Z",
            "finished_at": "2026-11-24T07:23:02.000000Z",
            "intent": "Build cortex index",
            "determinism": "deterministic",
            "exit_code": 0,
            "catalytic_domains": [DOMAIN],
            "durable_output_roots": outputs_declared,
            "durable_outputs": outputs_declared,
            "allowed_roots": ["CONTRACTS/_runs", "CORTEX/_generated"],
            "forbidden_paths": [".git"],
            "runs_root": runs_root,
            "absent_domains": [],
            "missing_outputs": [],
            "command": ["python", "build.py"],
            "cwd": str(root),
            "root": str(root),
            "tool": "catalytic",
            "tool_version": "1.0.0",
            "schema_version": "catalytic.ledger/1",
            "hash_algorithm": "sha256",
            "isolation": "none",
            "interrupted": False,
            "signal": None,
            "timings": {"execute": 0.5, "preflight": 0.001},
            "platform": {"python": "3.11.7", "system": "Linux"},
        },
        "PRE_MANIFEST.json": {DOMAIN: manifest},
        "PRE_MODES.json": {DOMAIN: modes},
        "POST_MANIFEST.json": {DOMAIN: dict(manifest)},
        "POST_MODES.json": {DOMAIN: dict(modes)},
        "RESTORE_DIFF.json": {DOMAIN: {"added": {}, "removed": {}, "changed": {}}},
        "OUTPUTS.json": [
            {"path": "CORTEX/_generated/cortex.json", "type": "file", "sha256": sha(b'{"index": 1}\n')},
            {"path": "CORTEX/_generated/latest", "type": "symlink", "target": "cortex.json"},
            {"path": "CORTEX/_generated/pack", "type": "directory"},
            {"path": "CORTEX/_generated/pack/x.txt", "type": "file", "sha256": sha(b"packed\n")},
        ],
        "STATUS.json": {
            "status": "restored",
            "restoration_verified": True,
            "run_id": run_id,
            "exit_code": 0,
            "interrupted": False,
            "reason": None,
            "error": None,
        },
    }
    ledger = Ledger(root, run_dir, run_id)
    for name, document in docs.items():
        ledger.write(name, document)
    return ledger


def build_seed_ledger(root: Path, run_id: str = RUN_ID) -> Ledger:
    """A ledger as the seed's prototype wrote it: six files, indented JSON, no extensions."""
    gen = root / "CORTEX" / "_generated"
    gen.mkdir(parents=True, exist_ok=True)
    (gen / "cortex.json").write_bytes(b"{}")
    (gen / "cortex.db").write_bytes(b"SQLite")
    run_dir = root / "CONTRACTS" / "_runs" / run_id
    run_dir.mkdir(parents=True)
    manifest = {DOMAIN: {"index_temp_001.json": sha(b"1"), "subdir/working_file.txt": sha(b"2")}}
    docs: dict[str, Any] = {
        "RUN_INFO.json": {
            "run_id": run_id,
            "timestamp": "2025-12-23T10:00:00.000000",
            "intent": "Build cortex index",
            "determinism": "deterministic",
            "exit_code": 0,
            "catalytic_domains": [DOMAIN],
            "durable_output_roots": ["CORTEX/_generated/cortex.json", "CORTEX/_generated/cortex.db"],
        },
        "PRE_MANIFEST.json": manifest,
        "POST_MANIFEST.json": manifest,
        "RESTORE_DIFF.json": {DOMAIN: {"added": {}, "removed": {}, "changed": {}}},
        # Declaration order, as the seed wrote it: not sorted.
        "OUTPUTS.json": [
            {"path": "CORTEX/_generated/cortex.json", "type": "file", "sha256": sha(b"{}")},
            {"path": "CORTEX/_generated/cortex.db", "type": "file", "sha256": sha(b"SQLite")},
        ],
        "STATUS.json": {"status": "restored", "restoration_verified": True},
    }
    for name, document in docs.items():
        (run_dir / name).write_text(json.dumps(document, indent=2), "utf-8")
    return Ledger(root, run_dir, run_id)
