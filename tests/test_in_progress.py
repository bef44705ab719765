"""A run being written is reported as in progress by every reader of ledgers, never as a broken ledger."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

RUNS = ".catalytic/runs"


def _cli(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "catalytic", *args], cwd=ws, capture_output=True, text=True, check=False
    )


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Path]:
    """A workspace with a finished run r1 and a run r2 whose command waits until the test ends."""
    ws = tmp_path / "ws"
    (ws / "d").mkdir(parents=True)
    (ws / "d" / "a").write_text("a\n")
    assert _cli(ws, "run", "-q", "--catalytic-domains", "d", "--run-id", "r1", "--", "true").returncode == 0
    go = tmp_path / "go"
    command = f"while [ ! -e {go} ]; do sleep 0.02; done"
    argv = ["run", "-q", "--catalytic-domains", "d", "--run-id", "r2", "--", "sh", "-c", command]
    proc = subprocess.Popen(
        [sys.executable, "-m", "catalytic", *argv],
        cwd=ws,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not (ws / RUNS / "r2").is_dir():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    try:
        yield ws
    finally:
        go.touch()
        assert proc.wait(timeout=60) == 0


def test_runs_lists_it_as_running(running: Path) -> None:
    out = _cli(running, "runs", "--json")
    assert out.returncode == 0, out.stderr
    rows = {row["run_id"]: row["status"] for row in json.loads(out.stdout)}
    assert rows == {"r1": "restored", "r2": "running"}


@pytest.mark.parametrize(
    "args", [("show", "r2"), ("export", "r2", "--format", "in-toto", "--output", "out.json")]
)
def test_readers_say_it_is_in_progress(running: Path, args: tuple[str, ...]) -> None:
    out = _cli(running, *args)
    assert out.returncode == 1
    assert out.stderr.strip().endswith(
        "run 'r2' is in progress: its ledger is being written; look again when it ends"
    )
    assert "RUN_IN_PROGRESS" in out.stderr and not (running / "out.json").exists()


def test_a_finished_run_is_read_as_before(running: Path) -> None:
    out = _cli(running, "show", "r1")
    assert out.returncode == 0 and "restored" in out.stdout
