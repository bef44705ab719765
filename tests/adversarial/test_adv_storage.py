"""The runs root fills up or turns read-only while the ledger is written: a clear error, no success."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Paused, cli, our_temp_files, run_args, status, tally

pytestmark = [pytest.mark.linux, pytest.mark.root]


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@pytest.fixture
def big_ws(ws: Path) -> Path:
    """A domain whose manifests are far larger than the tiny runs root below."""
    many = ws / "scratch" / "many"
    many.mkdir()
    for i in range(2000):
        (many / f"file-with-a-long-name-{i:05d}.txt").write_text(str(i))
    return ws


@pytest.fixture
def tiny_runs_root(big_ws: Path) -> Iterator[Path]:
    runs = big_ws / "CONTRACTS" / "_runs"
    runs.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    done = _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(runs))
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs refused: {done.stderr.strip()}")
    try:
        yield runs
    finally:
        _umount(runs)


@pytest.fixture
def bound_runs_root(ws: Path, tmp_path: Path) -> Iterator[Path]:
    """The runs root as a bind mount that the test can remount read-only."""
    runs = ws / "CONTRACTS" / "_runs"
    runs.mkdir(parents=True)
    backing = tmp_path / "backing"
    backing.mkdir()
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root (CI runs as root)")
    done = _mount("--bind", str(backing), str(runs))
    if done.returncode != 0:
        pytest.skip(f"mount --bind refused: {done.stderr.strip()}")
    try:
        yield runs
    finally:
        _umount(runs)


def _read_only(runs: Path) -> None:
    done = _mount("-o", "remount,bind,ro", str(runs))
    assert done.returncode == 0, done.stderr


def test_disk_full_while_writing_the_ledger(big_ws: Path, tiny_runs_root: Path) -> None:
    proc = cli(big_ws, *run_args("full"))
    st = status(big_ws, "full")
    tally("disk_full", false_restored=int(st is not None and st["status"] == "restored"))
    assert proc.returncode == 3, proc.stderr
    assert "LEDGER" in proc.stderr and "No space left on device" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert st is None
    assert our_temp_files(big_ws) == []


def test_read_only_runs_root_from_the_start(ws: Path, bound_runs_root: Path) -> None:
    _read_only(bound_runs_root)
    proc = cli(ws, *run_args("ro"))
    tally("read_only")
    assert proc.returncode == 3, proc.stderr
    assert "Read-only file system" in proc.stderr and "Traceback" not in proc.stderr
    assert not (bound_runs_root / "ro").exists()


@pytest.mark.parametrize("nth", [1, 4, 8])
def test_ledger_turns_read_only_between_ledger_files(ws: Path, tmp_path: Path, nth: int) -> None:
    # The runs root cannot be remounted read-only while the run holds its lock files open for
    # writing, so the ledger directory itself is covered by a read-only bind mount of itself.
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root (CI runs as root)")
    run = Paused(ws, f"record.file@{nth}", run_args("flip"), tmp_path)
    target = ws / "CONTRACTS" / "_runs" / "flip"
    try:
        done = _mount("--bind", str(target), str(target))
        if done.returncode != 0:
            run.resume()
            run.wait()
            pytest.skip(f"mount --bind refused: {done.stderr.strip()}")
        _read_only(target)
        run.resume()
        rc, _out, err = run.wait()
    finally:
        _umount(target)
    st = status(ws, "flip")
    tally("read_only", false_restored=int(st is not None and st["status"] == "restored"))
    assert rc == 3, err
    assert "Read-only file system" in err and "Traceback" not in err
    assert st is None
    assert our_temp_files(ws) == []
