"""SIGKILL at every phase boundary and inside each phase: never a false success, nothing left over."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from catalytic.faults import POINTS

from .conftest import cli, ledger, our_temp_files, run_args, status, tally, tree_state

LEDGER_FILES = 8
# A clean run writes its POST documents as links of the PRE ones: two files fewer are staged and synced.
STAGED_FILES = LEDGER_FILES - 2
# Every point, plus the n-th hit of the points reached more than once (walker entries, ledger files).
KILL_POINTS = [
    *(p for p in POINTS if p not in ("record.end",)),
    "snapshot_pre.entry@4",
    "snapshot_post.entry@4",
    *(f"record.file@{n}" for n in range(2, LEDGER_FILES + 1)),
    *(f"record.synced@{n}" for n in range(1, STAGED_FILES + 1)),
]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_leaves_no_false_success(ws: Path, point: str) -> None:
    before = tree_state(ws / "scratch")
    proc = cli(ws, *run_args("killed"), env={"CATALYTIC_FAULT": f"{point}:kill"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    st = status(ws, "killed")
    tally("sigkill", false_restored=int(st is not None and st.get("status") == "restored"))
    # STATUS.json is linked in last and whole: a run killed before that point has no STATUS at all.
    assert st is None
    assert our_temp_files(ws) == []
    assert tree_state(ws / "scratch") == before
    # The validator reports the broken run clearly (and nothing else under the runs root).
    check = cli(ws, "validate", "--all")
    assert "Traceback" not in check.stdout + check.stderr
    if ledger(ws, "killed").exists():
        assert check.returncode == 1, check.stdout + check.stderr
        assert "FAIL: killed" in check.stdout
        assert "INCOMPLETE" in check.stdout or "MISSING_FILE" in check.stdout
    else:  # killed before the ledger was reserved: there is no run to report
        assert check.returncode == 2 and ("NOT_FOUND" in check.stderr or "NO_RUNS" in check.stderr)
    # The next run, with a new id, works and is not blocked by the dead run's locks.
    again = cli(ws, *run_args("after"))
    assert again.returncode == 0, again.stderr
    assert (status(ws, "after") or {}).get("status") == "restored"


def test_sigkill_after_status_keeps_the_complete_ledger(ws: Path) -> None:
    proc = cli(ws, *run_args("done"), env={"CATALYTIC_FAULT": "record.end:kill"})
    assert proc.returncode == -signal.SIGKILL
    st = status(ws, "done")
    assert st is not None and st["status"] == "restored"
    assert sorted(p.name for p in ledger(ws, "done").iterdir()) == sorted(
        [
            "OUTPUTS.json",
            "POST_MANIFEST.json",
            "POST_MODES.json",
            "PRE_MANIFEST.json",
            "PRE_MODES.json",
            "RESTORE_DIFF.json",
            "RUN_INFO.json",
            "STATUS.json",
        ]
    )
    tally("sigkill")


def test_sigkill_of_a_dirty_run_never_says_restored(ws: Path) -> None:
    for n in range(1, LEDGER_FILES + 1):
        run_id = f"dirty{n}"
        proc = cli(
            ws,
            *run_args(run_id, ("scratch",), "sh", "-c", f"echo {n} >> scratch/f0.txt"),
            env={"CATALYTIC_FAULT": f"record.file@{n}:kill"},
        )
        assert proc.returncode == -signal.SIGKILL
        st = status(ws, run_id)
        tally("sigkill", false_restored=int(st is not None and st.get("status") == "restored"))
        assert st is None
