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

from .conftest import RUNS, cli, run_args, tally


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


@pytest.mark.slow
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


def _private_userns_works() -> bool:
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-U", "-r", "sh", "-c", "echo 0 > /proc/sys/user/max_inotify_instances"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


@pytest.mark.linux
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify limits are Linux sysctls")
def test_inotify_out_of_instances_is_recorded_in_the_ledger(ws: Path) -> None:
    import json
    import subprocess

    if not _private_userns_works():
        pytest.skip("cannot lower max_inotify_instances in a private user namespace here")
    # In a private user namespace with no inotify instance allowed, the domain-move check cannot start:
    # the run still works, and both its progress and RUN_INFO say the check was off, and why.
    script = 'echo 0 > /proc/sys/user/max_inotify_instances && exec "$@"'
    argv = [sys.executable, "-m", "catalytic", "run", "--run-id", "noinotify"]
    proc = subprocess.run(
        [
            "unshare",
            "-U",
            "-r",
            "sh",
            "-c",
            script,
            "sh",
            *argv,
            "--catalytic-domains",
            "scratch",
            "--",
            "true",
        ],
        cwd=ws,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "WARNING: domain-move check off: inotify could not be started" in proc.stderr
    info = json.loads((ws / RUNS / "noinotify" / "RUN_INFO.json").read_text())
    check = info["domain_move_check"]
    assert check["active"] is False and "max_user_instances" in check["reason"]
    tally("hostile")
    # A normal run has the check on.
    ok = cli(ws, *run_args("withinotify"))
    assert ok.returncode == 0, ok.stderr
    info = json.loads((ws / RUNS / "withinotify" / "RUN_INFO.json").read_text())
    assert info["domain_move_check"] == {"active": True, "reason": None}
    # The validator accepts both ledgers (the new key is in the schema).
    check_all = cli(ws, "validate", "--all")
    assert check_all.returncode == 0, check_all.stdout + check_all.stderr


def test_commit_journal_recovery_is_idempotent(tmp_path: Path) -> None:
    from catalytic.isolation import journal

    root, runs = tmp_path / "ws", tmp_path / "ws" / RUNS
    stage = runs / "r1" / "commit"
    stage.mkdir(parents=True)
    (root / "a").mkdir()
    (root / "a" / "old.txt").write_text("old")
    # Output a: old tree already moved aside, new one still staged (killed between the two renames).
    (stage / "0").mkdir()
    (stage / "0" / "new.txt").write_text("new a")
    os.rename(root / "a", stage / "0.old")
    # Output b: not swapped at all. Output c: to be deleted.
    (stage / "1").mkdir()
    (stage / "1" / "b.txt").write_text("new b")
    (root / "c").write_text("gone")
    entries = [
        {"path": "a", "action": "committed", "staged": str(stage / "0")},
        {"path": "b", "action": "committed", "staged": str(stage / "1")},
        {"path": "c", "action": "deleted", "staged": str(stage / "2")},
    ]
    path = journal.write(runs, "r1", "swapping", root, entries)
    # A journal whose process is alive is left alone.
    doc = path.read_text().replace(f'"pid":{os.getpid()}', f'"pid":{os.getppid()}')
    path.write_text(doc)
    assert journal.recover(runs) == []
    path.write_text(doc.replace(f'"pid":{os.getppid()}', '"pid":999999999'))
    assert journal.recover(runs) == [{"run_id": "r1", "what": "output commit", "action": "completed"}]
    assert (root / "a" / "new.txt").read_text() == "new a" and not (root / "a" / "old.txt").exists()
    assert (root / "b" / "b.txt").read_text() == "new b"
    assert not (root / "c").exists()
    assert not path.exists() and sorted(os.listdir(stage)) == []
    assert journal.recover(runs) == []
    # A journal still 'staging' is undone: the real tree is not touched.
    (stage / "0").mkdir()
    (stage / "0" / "x").write_text("x")
    path = journal.write(runs, "r2", "staging", root, entries[:1])
    path.write_text(path.read_text().replace(f'"pid":{os.getpid()}', '"pid":999999999'))
    assert journal.recover(runs) == [{"run_id": "r2", "what": "output commit", "action": "undone"}]
    assert (root / "a" / "new.txt").read_text() == "new a"
    assert not (stage / "0").exists() and not path.exists()
