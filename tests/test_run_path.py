"""One run path: ``catalytic run``, ``catalytic.run`` and ``catalytic.catalytic_domains`` all go through
runtime.session, so the block API takes the domain locks, watches the domains, notices processes left
running and records interrupts exactly as the command line does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import catalytic
from catalytic.errors import CatalyticError

PY = sys.executable


def _workspace(tmp_path: Path) -> Path:
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "f").write_text("f\n")
    return tmp_path


def test_block_is_refused_with_locked_while_a_cli_run_holds_the_domain(tmp_path: Path) -> None:
    root = _workspace(tmp_path)
    started = root / "started"
    cli = subprocess.Popen(
        [
            *(PY, "-m", "catalytic", "run", "-q", "--root", str(root), "--run-id", "holder"),
            *("--runs-root", "runs", "--allowed-roots", "runs", "--catalytic-domains", "scratch", "--"),
            *("sh", "-c", f"touch {started}; sleep 3"),
        ],
        cwd=root,
    )
    try:
        deadline = time.monotonic() + 20
        while not started.exists():
            assert time.monotonic() < deadline, "the CLI run did not start"
            assert cli.poll() is None, "the CLI run ended early"
            time.sleep(0.05)
        with (
            pytest.raises(CatalyticError) as info,
            catalytic.catalytic_domains(["scratch"], root=root, run_id="block", runs_root="runs"),
        ):
            pytest.fail("the block ran while another run held its domain")
        assert info.value.code == "LOCKED"
        assert not (root / "runs" / "block").exists()
    finally:
        assert cli.wait(30) == 0


def test_block_that_leaves_a_process_running_is_not_a_proof(tmp_path: Path) -> None:
    root = _workspace(tmp_path)
    with catalytic.catalytic_domains(["scratch"], root=root, run_id="linger", runs_root="runs") as check:
        left = subprocess.Popen(["sleep", "5"])
    try:
        assert not check.restored
        assert check.result.error is not None and check.result.error.code == "LINGERING"
        status = json.loads((root / "runs" / "linger" / "STATUS.json").read_text())
        assert status["status"] == "dirty"
    finally:
        left.kill()
        left.wait()


def test_block_whose_domain_is_moved_is_not_a_proof(tmp_path: Path) -> None:
    root = _workspace(tmp_path)
    with catalytic.catalytic_domains(["scratch"], root=root, run_id="moved", runs_root="runs") as check:
        os.rename(root / "scratch", root / "elsewhere")
        (root / "scratch").mkdir()
        (root / "scratch" / "f").write_text("f\n")
    assert not check.restored
    assert check.result.error is not None and check.result.error.code == "DOMAIN_MOVED"


def test_interrupt_in_a_block_is_recorded_and_raised(tmp_path: Path) -> None:
    root = _workspace(tmp_path)
    with (
        pytest.raises(KeyboardInterrupt),
        catalytic.catalytic_domains(["scratch"], root=root, run_id="intr", runs_root="runs") as check,
    ):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the signal arrives before this ends
    assert check.result.interrupted == "SIGINT"
    status = json.loads((root / "runs" / "intr" / "STATUS.json").read_text())
    assert status["interrupted"] is True and status["status"] == "dirty"


def test_exception_in_a_block_is_recorded_and_raised(tmp_path: Path) -> None:
    root = _workspace(tmp_path)
    with (
        pytest.raises(ValueError, match="boom"),
        catalytic.catalytic_domains(["scratch"], root=root, run_id="raised", runs_root="runs") as check,
    ):
        raise ValueError("boom")
    assert check.result.exit_code == 1 and check.restored
