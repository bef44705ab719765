"""SIGINT/SIGTERM to the runtime in every phase: the child gets it, the ledger says interrupted."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from .conftest import Paused, cli, our_temp_files, run_args, status, tally

# Where the runtime can be stopped while it is in each phase (the record phase is checked apart).
PHASE_POINTS = [
    "ledger.reserved",
    "snapshot_pre.entry@2",
    "execute.begin",
    "execute.spawned",
    "snapshot_post.entry@2",
    "verify.end",
]
SIGNALS = [(signal.SIGINT, 130), (signal.SIGTERM, 143)]


@pytest.mark.parametrize(("signum", "code"), SIGNALS, ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("point", PHASE_POINTS)
def test_signal_in_each_phase_is_recorded(
    ws: Path, tmp_path: Path, point: str, signum: signal.Signals, code: int
) -> None:
    run = Paused(ws, point, run_args("sig"), tmp_path)
    os.kill(run.proc.pid, signum)
    run.resume()
    rc, _out, err = run.wait()
    st = status(ws, "sig")
    tally("signals", false_restored=int(bool(st and st["status"] == "restored")))
    assert rc == code, err
    assert st is not None, err
    assert st["status"] == "dirty"
    assert st["restoration_verified"] is False
    assert st["interrupted"] is True
    assert our_temp_files(ws) == []


@pytest.mark.parametrize(("signum", "code"), SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_signal_reaches_the_child(ws: Path, tmp_path: Path, signum: signal.Signals, code: int) -> None:
    marker = tmp_path / "child-got"
    script = (
        "import signal, sys, time, pathlib\n"
        f"def h(n, f): pathlib.Path({str(marker)!r}).write_text(str(n)); sys.exit(0)\n"
        "signal.signal(signal.SIGINT, h); signal.signal(signal.SIGTERM, h)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    run = Paused(
        ws, "execute.spawned", run_args("child", ("scratch",), sys.executable, "-c", script), tmp_path
    )
    run.resume()
    time.sleep(0.5)  # let the child install its handlers
    os.kill(run.proc.pid, signum)
    rc, _out, err = run.wait()
    st = status(ws, "child")
    tally("signals", false_restored=int(bool(st and st["status"] == "restored")))
    assert marker.read_text() == str(int(signum))
    assert rc == code, err
    assert st is not None and st["interrupted"] is True and st["status"] == "dirty"


@pytest.mark.parametrize(("signum", "code"), SIGNALS, ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("point", ["record.begin", "record.file@4"])
def test_signal_while_the_ledger_is_written(
    ws: Path, tmp_path: Path, point: str, signum: signal.Signals, code: int
) -> None:
    """Signals wait while the ledger is written; the ledger is finished and the exit says interrupted.

    Both points are after the documents were built: the signal is delivered once STATUS is on
    disk, with its default action (exit 130, or death by SIGTERM, which a shell reports as 143).
    """
    run = Paused(ws, point, run_args("rec"), tmp_path)
    os.kill(run.proc.pid, signum)
    run.resume()
    rc, _out, err = run.wait()
    st = status(ws, "rec")
    assert st is not None, err
    assert rc in (code, -signum), err
    assert our_temp_files(ws) == []
    # The proof was complete before the signal: the ledger may say restored, but only truthfully.
    assert cli(ws, *run_args("next")).returncode == 0
    tally("signals")
