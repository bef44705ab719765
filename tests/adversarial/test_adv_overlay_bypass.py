"""--isolation overlay against a command that reaches the real tree past the overlay.

The command inherits descriptors opened by the shell before catalytic started (``>> d/log``,
``> build.log``, ``3< .``) and can name the real tree through ``/proc/<pid>/root`` or
``/proc/<pid>/cwd`` of catalytic itself. Descriptors that can write the real workspace are refused
before anything runs (exit 2); whatever still reaches a real domain makes the run dirty.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import pytest
from tests.isolation_helpers import overlay_skip_reason

from .conftest import RUNS, cli, status, tally, tree_state

_WHY = overlay_skip_reason()
pytestmark = [
    pytest.mark.linux,
    pytest.mark.skipif(_WHY is not None, reason=f"overlay mounts unavailable here: {_WHY}"),
]

CATEGORY = "overlay_bypass"


def _overlay_args(run_id: str, *command: str, isolation: str = "overlay") -> list[str]:
    return [
        "run",
        "-q",
        "--isolation",
        isolation,
        "--run-id",
        run_id,
        "--catalytic-domains",
        "scratch",
        "--",
        *command,
    ]


def _spawn(
    ws: Path, args: list[str], *, stdout: IO[Any] | int = subprocess.PIPE, pass_fds: tuple[int, ...] = ()
) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "catalytic", *args],
        cwd=ws,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        pass_fds=pass_fds,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stderr


def _refused(ws: Path, run_id: str, rc: int, err: str, marker: Path) -> None:
    """Preflight refused the run: exit 2, one line naming the descriptor, nothing run or written."""
    tally(CATEGORY, false_restored=int(rc == 0), tracebacks=int("Traceback" in err))
    assert "Traceback" not in err, err
    assert rc == 2, err
    assert "INHERITED_DESCRIPTOR" in err and "--isolation rollback" in err, err
    assert not marker.exists()  # the command never ran
    assert not (ws / RUNS / run_id).exists()


def _dirty(ws: Path, run_id: str, rc: int, err: str) -> dict[str, Any]:
    st = status(ws, run_id)
    tally(
        CATEGORY,
        false_restored=int(st is not None and st["status"] == "restored") or int(rc == 0),
        tracebacks=int("Traceback" in err),
    )
    assert "Traceback" not in err, err
    assert rc == 4, err
    assert st is not None and st["status"] == "dirty" and st["restoration_verified"] is False, st
    check = cli(ws, "validate", "--run-dir", f"{RUNS}/{run_id}")
    assert check.returncode == 1, check.stdout
    return st


@pytest.mark.parametrize("target", ["scratch/f0.txt", "build.log"], ids=["domain", "workspace"])
def test_stdout_appending_to_a_workspace_file_is_refused(ws: Path, tmp_path: Path, target: str) -> None:
    """``catalytic run --isolation overlay ... -- echo x >> scratch/f0.txt`` (or ``> build.log``): the
    shell opened the file on the real tree; the overlay cannot stop the command writing it."""
    before = tree_state(ws / "scratch")
    marker = tmp_path / "ran"
    with open(ws / target, "ab") as out:
        rc, err = _spawn(ws, _overlay_args("fdout", "sh", "-c", f"touch {marker}; echo x"), stdout=out)
    _refused(ws, "fdout", rc, err, marker)
    assert tree_state(ws / "scratch") == before
    assert target == "scratch/f0.txt" or (ws / target).read_bytes() == b""


def test_inherited_directory_descriptor_is_refused(ws: Path, tmp_path: Path) -> None:
    """A directory descriptor on the workspace (or above it) reaches any real file with openat."""
    marker = tmp_path / "ran"
    fd = os.open(ws, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.set_inheritable(fd, True)
        script = (
            f"import os; open({str(marker)!r}, 'w'); "
            f"os.open('scratch/x', os.O_CREAT | os.O_WRONLY, dir_fd={fd})"
        )
        rc, err = _spawn(ws, _overlay_args("fddir", sys.executable, "-c", script), pass_fds=(fd,))
    finally:
        os.close(fd)
    _refused(ws, "fddir", rc, err, marker)
    assert f"fd {fd}" in err
    assert not (ws / "scratch" / "x").exists()


def test_auto_falls_back_to_rollback_for_such_a_descriptor(ws: Path) -> None:
    """``--isolation auto`` means overlay where it can isolate: here it cannot, so rollback, which verifies
    the real tree (and says why it was chosen)."""
    with open(ws / "scratch" / "f0.txt", "ab") as out:
        rc, err = _spawn(ws, _overlay_args("fdauto", "echo", "x", isolation="auto"), stdout=out)
    st = _dirty(ws, "fdauto", rc, err)
    info = json.loads((ws / RUNS / "fdauto" / "RUN_INFO.json").read_text())
    assert info["isolation"] == "rollback" and "stdout (fd 1)" in info["isolation_reason"], info
    assert "1 changed" in str(st["reason"])
    assert "f0.txt" in (ws / RUNS / "fdauto" / "RESTORE_DIFF.json").read_text()


def test_read_only_stdin_from_the_workspace_is_allowed(ws: Path) -> None:
    """A file opened for reading cannot change the tree through its descriptor: ``sort < data`` runs."""
    with open(ws / "scratch" / "f0.txt", "rb") as data:
        proc = subprocess.run(
            [sys.executable, "-m", "catalytic", *_overlay_args("fdin", "wc", "-l")],
            cwd=ws,
            stdin=data,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "10"
    st = status(ws, "fdin")
    assert st is not None and st["status"] == "restored"
    tally(CATEGORY)


@pytest.mark.parametrize("via", ["root", "cwd"])
def test_proc_paths_into_the_real_domain_make_the_run_dirty(ws: Path, via: str) -> None:
    """``/proc/<catalytic pid>/root`` + the workspace path and ``/proc/<catalytic pid>/cwd`` are the real
    tree, not the overlay: a write there is found by the check of the real domains after the run."""
    prefix = f"/proc/$PPID/root{ws}" if via == "root" else "/proc/$PPID/cwd"
    script = f"echo evil >> {prefix}/scratch/f0.txt; echo new > {prefix}/scratch/planted"
    rc, err = _spawn(ws, _overlay_args(f"proc-{via}", "sh", "-c", script))
    st = _dirty(ws, f"proc-{via}", rc, err)
    assert "real tree" in str(st["reason"]), st
    assert (ws / "scratch" / "planted").exists()  # it did reach the real tree: the verdict is right
    diff = (ws / RUNS / f"proc-{via}" / "RESTORE_DIFF.json").read_text()
    assert "planted" in diff and "f0.txt" in diff


def test_proc_write_to_the_real_domain_undone_by_the_command_is_restored(ws: Path, tmp_path: Path) -> None:
    """The real check compares content: a real file put back as it was is not a change."""
    keep = tmp_path / "keep"
    real = "/proc/$PPID/cwd/scratch/f0.txt"
    script = f"cp {real} {keep}; echo evil >> {real}; cat {keep} > {real}"
    rc, err = _spawn(ws, _overlay_args("proc-undone", "sh", "-c", script))
    assert rc == 0, err
    st = status(ws, "proc-undone")
    assert st is not None and st["status"] == "restored"
    tally(CATEGORY)
