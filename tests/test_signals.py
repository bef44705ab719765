"""SIGINT/SIGTERM during a run: the child gets the signal, the ledger says interrupted, exit 130/143."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Workspaces laid out like the seed's project: ledgers in CONTRACTS/_runs (see conftest.seed_layout).
pytestmark = pytest.mark.usefixtures("seed_layout")

PY = sys.executable

CHILD = """
import os, signal, sys, time
from pathlib import Path

got = []
def handler(signum, frame):
    Path("child-got").write_text(signal.Signals(signum).name)
    sys.exit(0)
signal.signal(signal.SIGTERM, handler)
signal.signal(signal.SIGINT, handler)
Path("child-ready").write_text(str(os.getpid()))
for _ in range(600):
    time.sleep(0.05)
"""


def _start(tmp_path: Path, **kwargs: object) -> subprocess.Popen[str]:
    (tmp_path / "scratch").mkdir()
    return subprocess.Popen(
        [
            PY,
            "-m",
            "catalytic",
            "run",
            "--run-id",
            "r1",
            "--catalytic-domains",
            "scratch",
            "--",
            PY,
            "-c",
            CHILD,
        ],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


def _wait_ready(tmp_path: Path) -> None:
    deadline = time.monotonic() + 30
    while not (tmp_path / "child-ready").exists():
        assert time.monotonic() < deadline, "child never started"
        time.sleep(0.02)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_to_runtime_is_forwarded(tmp_path: Path, signum: int, code: int) -> None:
    proc = _start(tmp_path)
    _wait_ready(tmp_path)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert (tmp_path / "child-got").read_text() == signal.Signals(signum).name
    ledger = tmp_path / "CONTRACTS/_runs/r1"
    info = json.loads((ledger / "RUN_INFO.json").read_text())
    status = json.loads((ledger / "STATUS.json").read_text())
    assert info["interrupted"] is True and info["signal"] == signal.Signals(signum).name
    assert info["exit_code"] == 0, "the child's own exit status is still recorded"
    assert status["interrupted"] is True
    assert status["status"] == "dirty" and status["restoration_verified"] is False


def test_sigint_to_process_group_like_a_terminal(tmp_path: Path) -> None:
    proc = _start(tmp_path, start_new_session=True)
    _wait_ready(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert (tmp_path / "child-got").read_text() == "SIGINT"
    status = json.loads((tmp_path / "CONTRACTS/_runs/r1/STATUS.json").read_text())
    assert status["interrupted"] is True and status["status"] == "dirty"


def test_signal_handlers_restored_after_api_run(tmp_path: Path) -> None:
    import catalytic

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    mask_before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    catalytic.run(["true"], root=tmp_path, run_id="r1", allow_no_domains=True)
    assert {s: signal.getsignal(s) for s in before} == before
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == mask_before
