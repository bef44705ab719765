"""Two runs at once: the same run id, or catalytic domains that overlap."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from catalytic.locks import lock_plan

from .conftest import Paused, cli, run_args, start, status, tally


@pytest.fixture
def nested(ws: Path) -> Path:
    for name in ("a/b", "a/x", "a/y", "c"):
        (ws / name).mkdir(parents=True, exist_ok=True)
        (ws / name / "f").write_text(name)
    return ws


def test_lock_plan_is_hierarchical() -> None:
    assert lock_plan(["a/b/c", "d"]) == {".": False, "a": False, "a/b": False, "a/b/c": True, "d": True}


@pytest.mark.parametrize(
    ("first", "second", "conflict"),
    [
        ("a", "a", True),
        ("a", "a/b", True),
        ("a/b", "a", True),
        ("a/x", "a/y", False),
        ("a", "c", False),
    ],
)
def test_overlapping_domains_are_refused(
    nested: Path, tmp_path: Path, first: str, second: str, conflict: bool
) -> None:
    run = Paused(nested, "snapshot_pre.begin", run_args("first", (first,)), tmp_path)
    try:
        other = cli(nested, *run_args("second", (second,)))
    finally:
        run.resume()
    rc, _out, err = run.wait()
    assert rc == 0, err
    tally("concurrency")
    if conflict:
        assert other.returncode == 2
        assert (
            "LOCKED" in other.stderr and repr(first if len(first) <= len(second) else second) in other.stderr
        )
        assert "Traceback" not in other.stderr
        # Refused before anything was written: no ledger for the second run.
        assert not (nested / "CONTRACTS/_runs/second").exists()
    else:
        assert other.returncode == 0, other.stderr


def test_same_run_id_at_the_same_time_exactly_one_proceeds(nested: Path, tmp_path: Path) -> None:
    run = Paused(nested, "ledger.reserved", run_args("same", ("a",)), tmp_path)
    try:
        same_domains = cli(nested, *run_args("same", ("a",)))
        other_domains = cli(nested, *run_args("same", ("c",)))
    finally:
        run.resume()
    rc, _out, err = run.wait()
    assert rc == 0, err
    assert same_domains.returncode == 2
    assert "EXISTS" in same_domains.stderr or "LOCKED" in same_domains.stderr
    assert other_domains.returncode == 2 and "EXISTS" in other_domains.stderr
    assert (status(nested, "same") or {}).get("status") == "restored"
    tally("concurrency", cases=2)


@pytest.mark.slow
@pytest.mark.parametrize("domains", [("a", "a"), ("a", "c")], ids=["same-domains", "other-domains"])
def test_same_run_id_racing(nested: Path, domains: tuple[str, str]) -> None:
    for attempt in range(5):
        run_id = f"race{attempt}"
        procs = [start(nested, *run_args(run_id, (d,), "sleep", "0.2")) for d in domains]
        codes = sorted(p.wait(timeout=60) for p in procs)
        for p in procs:
            p.communicate()
        assert codes == [0, 2], codes
        tally("concurrency")


def test_a_killed_run_leaves_no_stale_lock(nested: Path, tmp_path: Path) -> None:
    run = Paused(nested, "execute.spawned", run_args("dies", ("a",)), tmp_path)
    run.proc.send_signal(signal.SIGKILL)
    run.wait()
    again = cli(nested, *run_args("lives", ("a",)))
    assert again.returncode == 0, again.stderr
    tally("concurrency")
