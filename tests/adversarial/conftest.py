"""Shared harness of the adversarial suite: a workspace, the real CLI in a subprocess, the tally.

Every test that produces a verdict calls :func:`tally` with its category, so the session ends with
the report the issue asks for (cases per category, false "restored" verdicts, tracebacks). Set
``CATALYTIC_ADVERSARIAL=full`` for the on-demand sizes (see docs/adversarial.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

FULL = os.environ.get("CATALYTIC_ADVERSARIAL", "") == "full"
RUNS = "CONTRACTS/_runs"
REPORT_ENV = "CATALYTIC_ADVERSARIAL_REPORT"


@dataclass
class Tally:
    cases: Counter[str] = field(default_factory=Counter)
    false_restored: Counter[str] = field(default_factory=Counter)
    tracebacks: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {
            "cases": dict(sorted(self.cases.items())),
            "false_restored": sum(self.false_restored.values()),
            "tracebacks": sum(self.tracebacks.values()),
            "false_restored_by_category": dict(self.false_restored),
            "tracebacks_by_category": dict(self.tracebacks),
        }


TALLY = Tally()


def tally(category: str, *, cases: int = 1, false_restored: int = 0, tracebacks: int = 0) -> None:
    """Count ``cases`` of ``category`` (and any bad verdicts among them) for the closing report."""
    TALLY.cases[category] += cases
    if false_restored:
        TALLY.false_restored[category] += false_restored
    if tracebacks:
        TALLY.tracebacks[category] += tracebacks


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLY.cases:
        return
    data = TALLY.as_json()
    terminalreporter.section("adversarial report")
    for name, count in data["cases"].items():
        terminalreporter.write_line(f"{name:<28}{count:>8} cases")
    terminalreporter.write_line(f"{'total':<28}{sum(data['cases'].values()):>8} cases")
    terminalreporter.write_line(f"false 'restored' verdicts: {data['false_restored']}")
    terminalreporter.write_line(f"tracebacks: {data['tracebacks']}")
    out = os.environ.get(REPORT_ENV)
    if out:
        Path(out).write_text(json.dumps(data, indent=2) + "\n")


def cli(
    ws: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m catalytic ARGS`` in ``ws`` and wait for it."""
    return subprocess.run(
        [sys.executable, "-m", "catalytic", *args],
        cwd=ws,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start(ws: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``python -m catalytic ARGS`` in ``ws`` without waiting."""
    return subprocess.Popen(
        [sys.executable, "-m", "catalytic", *args],
        cwd=ws,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_args(run_id: str, domains: Sequence[str] = ("scratch",), *command: str) -> list[str]:
    return ["run", "-q", "--run-id", run_id, "--catalytic-domains", *domains, "--", *(command or ("true",))]


class Paused:
    """A run stopped at a fault point (``CATALYTIC_FAULT=<point>:pause``) until :meth:`resume`."""

    def __init__(self, ws: Path, point: str, args: Sequence[str], tmp: Path) -> None:
        self.ready = tmp / f"ready-{time.monotonic_ns()}"
        self.proc = start(
            ws, *args, env={"CATALYTIC_FAULT": f"{point}:pause", "CATALYTIC_FAULT_READY": str(self.ready)}
        )
        deadline = time.monotonic() + 30
        while not self.ready.exists():
            if self.proc.poll() is not None:
                _out, err = self.proc.communicate()
                raise AssertionError(f"run ended before reaching {point}: {self.proc.returncode}\n{err}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"run never reached {point}")
            time.sleep(0.01)

    def resume(self) -> None:
        self.ready.unlink()

    def wait(self, timeout: float = 60) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Path]:
    """A workspace with one catalytic domain ``scratch`` holding a few files."""
    root = tmp_path / "ws"
    (root / "scratch" / "sub").mkdir(parents=True)
    (root / "CONTRACTS").mkdir()  # the seed's layout: ledgers in CONTRACTS/_runs (RUNS)
    for i in range(5):
        (root / "scratch" / f"f{i}.txt").write_text(f"file {i}\n" * 10)
    (root / "scratch" / "sub" / "deep.bin").write_bytes(bytes(range(256)) * 4)
    yield root


def tree_state(path: Path) -> dict[str, tuple[str, int, bytes]]:
    """Every entry below ``path`` (not following symlinks) with its type, mode and content."""
    state: dict[str, tuple[str, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            st = full.lstat()
            rel = str(full.relative_to(path))
            if full.is_symlink():
                state[rel] = ("link", 0, os.readlink(full).encode())
            elif full.is_dir():
                state[rel] = ("dir", st.st_mode, b"")
            elif full.is_file():
                state[rel] = ("file", st.st_mode, full.read_bytes())
            else:
                state[rel] = ("other", st.st_mode, b"")
    return state


def our_temp_files(root: Path) -> list[Path]:
    """Temporary files our atomic writer could leave (``.<name>.<random>.tmp``)."""
    return [p for p in root.rglob(".*.tmp")]


def ledger(ws: Path, run_id: str) -> Path:
    return ws / RUNS / run_id


def status(ws: Path, run_id: str) -> dict[str, Any] | None:
    path = ledger(ws, run_id) / "STATUS.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def has_traceback(text: str) -> bool:
    return "Traceback (most recent call last)" in text
