"""The store, its restores and its maintenance against a hostile command and concurrent commands.

- a restore never follows a symlink (or a non-directory) in any component of a tree's path;
- ``gc`` and ``restore`` take the locks that make them safe beside any other catalytic command;
- a restore killed at any instant leaves nothing of ours in the domain once the next run, ``restore`` or
  ``gc`` has looked (they remove what a killed restore staged, and say so);
- ``gc`` and ``restore`` refuse a runs root that ``run`` refuses.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from .conftest import RUNS, Paused, cli, status, tally, tree_state

ROLLBACK = ("run", "-q", "--isolation", "rollback")


# --- a restore never follows a symlinked parent -------------------------------------------------------


@pytest.fixture
def nested(ws: Path, tmp_path: Path) -> Path:
    """``p/d`` a domain, ``q/o`` a declared output, and a directory outside the workspace."""
    for name in ("p/d/sub", "q/o"):
        (ws / name).mkdir(parents=True)
    (ws / "p/d/a.txt").write_text("alpha\n")
    (ws / "p/d/sub/b.txt").write_text("beta\n")
    (ws / "q/o/r.txt").write_text("result\n")
    (tmp_path / "outside").mkdir()
    return ws


@pytest.mark.parametrize(
    ("replaced", "by"),
    [("p", "symlink"), ("q", "symlink"), ("p", "file")],
)
def test_rollback_never_writes_through_a_replaced_parent(
    nested: Path, tmp_path: Path, replaced: str, by: str
) -> None:
    outside = tmp_path / "outside"
    swap = f"ln -s {outside} {replaced}" if by == "symlink" else f"echo x > {replaced}"
    script = f"echo dirty >> p/d/a.txt && rm -rf {replaced} && {swap}"
    args = [*ROLLBACK, "--run-id", "r1", "--catalytic-domains", "p/d"]
    args += ["--durable-outputs", "q/o", "--allowed-roots", "q", "--", "sh", "-c", script]
    proc = cli(nested, *args)
    st = status(nested, "r1")
    tally("restore_symlinked_parent", false_restored=int((st or {}).get("status") == "restored"))
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 4, proc.stderr
    assert st is not None and st["status"] == "dirty"
    assert list(outside.iterdir()) == [], "the rollback wrote outside the workspace"
    assert st["rollback"]["verified"] is False
    why = "is a symlink" if by == "symlink" else "is not a directory"
    assert f"cannot restore {replaced}/{'d' if replaced == 'p' else 'o'}: {replaced!r} {why}" in str(
        st["rollback"]["problems"]
    )

    # catalytic restore refuses the same way, and writes nothing outside either.
    back = cli(nested, "restore", "r1", "--outputs")
    assert back.returncode == 1, back.stdout + back.stderr
    assert "Traceback" not in back.stderr
    assert f"{replaced!r} {why}" in back.stderr
    assert list(outside.iterdir()) == []

    # Once the path is a directory again, restore puts everything back.
    os.unlink(nested / replaced)
    (nested / replaced).mkdir()
    again = cli(nested, "restore", "r1", "--outputs")
    assert again.returncode == 0, again.stdout + again.stderr
    assert (nested / "p/d/a.txt").read_text() == "alpha\n"
    assert (nested / "q/o/r.txt").read_text() == "result\n"


def test_a_domain_replaced_by_a_symlink_is_put_back_without_following_it(
    nested: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    script = f"rm -rf p/d && ln -s {outside} p/d"
    proc = cli(nested, *ROLLBACK, "--run-id", "r1", "--catalytic-domains", "p/d", "--", "sh", "-c", script)
    assert proc.returncode == 4, proc.stderr
    assert list(outside.iterdir()) == []
    assert not (nested / "p/d").is_symlink()
    assert (nested / "p/d/sub/b.txt").read_text() == "beta\n"


# --- locks: gc and restore beside a running rollback run ---------------------------------------------


def test_gc_cannot_collect_what_a_saving_run_needs(ws: Path, tmp_path: Path) -> None:
    """gc while a rollback run has stored its objects but not yet its state: gc must not drop them."""
    args = [*ROLLBACK, "--run-id", "r1", "--catalytic-domains", "scratch", "--"]
    args += ["sh", "-c", "rm -r scratch/sub && echo x > scratch/f0.txt"]
    before = tree_state(ws / "scratch")
    run = Paused(ws, "rollback.saved", args, tmp_path)
    try:
        gc = cli(ws, "gc", timeout=30)
    finally:
        run.resume()
    rc, _out, err = run.wait()
    assert "Traceback" not in gc.stderr + err
    assert gc.returncode == 2 and "LOCKED" in gc.stderr, gc.stdout + gc.stderr
    assert rc == 4, err
    st = status(ws, "r1")
    assert st is not None and st["status"] == "dirty"
    assert tree_state(ws / "scratch") == before, "the rollback lost saved files"
    assert cli(ws, "gc").returncode == 0  # once the run is over, gc works


def test_restore_is_refused_while_a_run_holds_the_domain(ws: Path, tmp_path: Path) -> None:
    first = cli(ws, *ROLLBACK, "--run-id", "r0", "--catalytic-domains", "scratch", "--", "true")
    assert first.returncode == 0, first.stderr
    args = [*ROLLBACK, "--run-id", "r1", "--catalytic-domains", "scratch", "--", "true"]
    run = Paused(ws, "execute.spawned", args, tmp_path)
    try:
        back = cli(ws, "restore", "r0", timeout=30)
    finally:
        run.resume()
    rc, _out, err = run.wait()
    assert rc == 0, err
    assert back.returncode == 2 and "LOCKED" in back.stderr, back.stdout + back.stderr


@pytest.mark.slow
def test_gc_in_a_loop_beside_rollback_runs_loses_nothing(ws: Path) -> None:
    """Real processes racing for a bounded time: every rollback puts every file back."""
    import subprocess
    import sys
    import time

    for i in range(400):
        (ws / "scratch" / f"many{i}.txt").write_text(f"{i}\n")
    before = tree_state(ws / "scratch")
    loop = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time\n"
         "end = time.monotonic() + 60\n"
         "while time.monotonic() < end:\n"
         "    subprocess.run([sys.executable, '-m', 'catalytic', 'gc', '-q'], capture_output=True)\n"],
        cwd=ws,
    )  # fmt: skip
    try:
        for n in range(3):
            proc = cli(ws, *ROLLBACK, "--run-id", f"r{n}", "--catalytic-domains", "scratch", "--",
                       "sh", "-c", "rm scratch/many*.txt")  # fmt: skip
            assert "Traceback" not in proc.stderr
            assert proc.returncode == 4, proc.stderr
            assert tree_state(ws / "scratch") == before, f"run r{n} lost files"
            time.sleep(0.1)
    finally:
        loop.kill()
        loop.wait()


# --- a killed restore leaves nothing of ours in the domain -------------------------------------------


def _leftovers(ws: Path) -> list[str]:
    return sorted(
        str(p.relative_to(ws))
        for p in ws.rglob("*.restore")
        if not str(p.relative_to(ws)).startswith(RUNS.split("/")[0])
    )


@pytest.mark.parametrize("nth", [1, 3])
@pytest.mark.parametrize("then", ["restore", "gc", "run"])
def test_a_restore_killed_while_staging_is_cleaned_up(ws: Path, nth: int, then: str) -> None:
    script = "for f in scratch/f*.txt scratch/sub/deep.bin; do echo dirty >> $f; done"
    args = [*ROLLBACK, "--run-id", "killed", "--catalytic-domains", "scratch", "--", "sh", "-c", script]
    proc = cli(ws, *args, env={"CATALYTIC_FAULT": f"rollback.staged@{nth}:kill"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(_leftovers(ws)) == 1  # killed with a staged file in the domain
    if then == "restore":
        after = cli(ws, "restore", "killed")
    elif then == "gc":
        after = cli(ws, "gc")
    else:
        after = cli(ws, "run", "--run-id", "next", "--catalytic-domains", "scratch", "--", "true")
    assert "Traceback" not in after.stderr
    assert after.returncode in (0, 1), after.stdout + after.stderr
    assert _leftovers(ws) == []
    assert "staged" in after.stdout + after.stderr  # and it says so
    tally("sigkill_rollback_staging")


# --- one runs-root rule for every command --------------------------------------------------------------


@pytest.mark.parametrize("command", [["gc"], ["restore", "r1"]])
def test_gc_and_restore_refuse_a_runs_root_outside_the_workspace(
    ws: Path, tmp_path: Path, command: list[str]
) -> None:
    outside = tmp_path / "elsewhere"
    (outside / "_store/objects/sha256/ab").mkdir(parents=True)
    victim = outside / "_store/objects/sha256/ab/cdef"
    victim.write_text("someone else's file\n")
    refused_run = cli(ws, "run", "--runs-root", str(outside), "--catalytic-domains", "scratch", "--", "true")
    assert refused_run.returncode == 2
    proc = cli(ws, *command, "--runs-root", str(outside))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "runs root" in proc.stderr and "Traceback" not in proc.stderr
    assert victim.exists()


def test_a_run_waits_for_a_gc_in_progress_instead_of_failing(ws: Path) -> None:
    """gc holds the store exclusively for a moment: a run that starts then waits for it (a CI loop that
    runs gc beside its builds must not fail a build for that), while gc itself never waits for a run."""
    import threading
    import time

    from catalytic import locks

    runs_root = ws / RUNS
    runs_root.mkdir(parents=True, exist_ok=True)
    held = threading.Event()
    release = threading.Event()

    def gc_like() -> None:
        with locks.store_lock(runs_root, exclusive=True, who="test gc"):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=gc_like)
    holder.start()
    try:
        assert held.wait(10)
        threading.Timer(1.0, release.set).start()
        started = time.monotonic()
        proc = cli(ws, *ROLLBACK, "--run-id", "waited", "--catalytic-domains", "scratch", "--", "true")
        waited = time.monotonic() - started
    finally:
        release.set()
        holder.join()
    assert proc.returncode == 0, proc.stderr
    assert waited >= 0.9, waited
    assert status(ws, "waited") is not None
