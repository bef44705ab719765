"""Shared helpers of the isolation tests: a small workspace and a way to read a run's ledger."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from catalytic.cli import main
from catalytic.isolation.overlay import unavailable_reason
from catalytic.snapshot import snapshot_tree

RUNS = "CONTRACTS/_runs"
DOMAIN = "CORTEX/_generated/_tmp"
OUT = "CORTEX/_generated/out.json"
OUT_DIR = "CORTEX/_generated/pack"


def overlay_skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "overlayfs is Linux-only"
    import tempfile

    with tempfile.TemporaryDirectory(dir=Path.home() if os.access(Path.home(), os.W_OK) else None) as d:
        return unavailable_reason(Path(d))


def make_workspace(root: Path) -> Path:
    (root / DOMAIN / "sub").mkdir(parents=True)
    (root / DOMAIN / "a.txt").write_text("alpha\n")
    (root / DOMAIN / "sub" / "b.txt").write_text("beta\n")
    (root / DOMAIN / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(root / DOMAIN / "run.sh", 0o755)
    os.symlink("a.txt", root / DOMAIN / "link")
    (root / "src").mkdir()
    (root / "src" / "m.py").write_text("print('code')\n")
    return root


def tree(path: Path) -> list[tuple[str, str, str | None]]:
    return [(e.path, e.value, e.mode) for e in snapshot_tree(path).entries]


def run(root: Path, *args: str, command: str, run_id: str = "r1", isolation: str = "overlay") -> int:
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return main(
            [
                "run",
                "-q",
                "--root",
                str(root),
                "--run-id",
                run_id,
                "--isolation",
                isolation,
                "--catalytic-domains",
                DOMAIN,
                *args,
                "--",
                "sh",
                "-c",
                command,
            ]
        )
    finally:
        os.chdir(cwd)


def ledger(root: Path, run_id: str = "r1") -> dict[str, Any]:
    d = root / RUNS / run_id
    return {p.name: json.loads(p.read_text()) for p in d.glob("*.json")}


def refuse(monkeypatch: Any, target: object, name: str, what: str) -> None:
    """Make ``target.name`` fail the test if it is called (``what``: what calling it would mean)."""

    def refused(*args: object, **kwargs: object) -> object:
        raise AssertionError(what)

    monkeypatch.setattr(target, name, refused)


def never_in_memory(monkeypatch: Any) -> None:
    """Fail the test if the run keeps its documents in memory (the fallback when the disk is full)."""
    from catalytic.snapshot import domains

    refuse(monkeypatch, domains.Spools, "to_memory", "the run's documents went to memory")
