"""The pieces behind the suite's fixes, tested in-process: fault specs, lingering processes, watches."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from catalytic import faults
from catalytic.rootwatch import start, watched_dirs
from catalytic.runner import ChildResult, run_child


def test_fault_spec_parsing() -> None:
    assert faults._parse("record.file@3:kill") == ("record.file", 3, "kill")
    assert faults._parse("execute.spawned:pause") == ("execute.spawned", 1, "pause")
    assert faults._parse("x:explode") is None
    assert faults._parse("x@two:kill") is None
    assert faults._parse("") is None
    # Without the variable (as in normal runs) nothing is armed and every hook is a no-op.
    if os.environ.get(faults.ENV):
        pytest.skip(f"{faults.ENV} is set in this environment")
    assert faults.ACTIVE is False and faults._TARGET is None


def test_every_point_is_reached_in_a_run(tmp_path: Path) -> None:
    """Each documented point is really on a run's path (pausing there proves it)."""
    from .conftest import Paused, run_args

    ws = tmp_path / "ws"
    (ws / "scratch").mkdir(parents=True)
    (ws / "scratch" / "f").write_text("x")
    for n, point in enumerate(faults.POINTS):
        run = Paused(ws, point, run_args(f"p{n}"), tmp_path)
        run.resume()
        rc, _out, err = run.wait()
        assert rc == 0, (point, err)


@pytest.mark.linux
def test_lingering_processes_are_reported(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = (
        "import subprocess, sys\n"
        "sleeper = [sys.executable, '-c', 'import time; time.sleep(30)']\n"
        "p = subprocess.Popen(sleeper, start_new_session=True)\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
    )
    result = run_child([sys.executable, "-c", script])
    pid = int(pidfile.read_text())
    try:
        assert result.lingering == (pid,)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


@pytest.mark.linux
def test_finished_descendants_are_reaped_not_lingering() -> None:
    result = run_child(["sh", "-c", "(true &) ; sleep 0.2"])
    assert result.exit_code == 0 and result.lingering == ()


@pytest.mark.linux
def test_runs_in_threads_do_not_blame_each_other() -> None:
    results: dict[str, ChildResult] = {}

    def go(name: str, command: list[str]) -> None:
        results[name] = run_child(command)

    long = threading.Thread(target=go, args=("long", ["sleep", "1"]))
    long.start()
    time.sleep(0.3)
    go("short", ["true"])
    long.join()
    assert results["short"].lingering == () and results["long"].lingering == ()


def test_watched_dirs_cover_domains_and_parents() -> None:
    assert watched_dirs(["a/b", "c"]) == [".", "a", "a/b", "c"]


@pytest.mark.linux
def test_root_watch_sees_a_swap_and_back(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    roots = start(tmp_path, ["a/b"])
    try:
        assert roots.active
        assert roots.moved() == []
        (tmp_path / "a" / "b" / "file").write_text("inside changes are not moves")
        assert roots.moved() == []
        (tmp_path / "a").rename(tmp_path / "a2")
        (tmp_path / "a2").rename(tmp_path / "a")
        assert roots.moved() == ["a"]
    finally:
        roots.close()


@pytest.mark.linux
def test_root_watch_descriptors_are_reused_without_stale_events(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    first = start(tmp_path, ["a"])
    fd = first.fd
    (tmp_path / "a").rename(tmp_path / "a2")
    first.close()
    (tmp_path / "a2").rename(tmp_path / "a")  # after close: nobody is told
    second = start(tmp_path, ["a"])
    try:
        assert second.fd == fd
        assert second.moved() == []
    finally:
        second.close()
