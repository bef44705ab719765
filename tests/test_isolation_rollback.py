"""--isolation rollback: pre-state in the content-addressed store, byte-for-byte restoration, restore, gc."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catalytic.cli import main
from isolation_helpers import DOMAIN, OUT, RUNS, ledger, make_workspace, never_in_memory, refuse, run, tree

CATALYTIC_RUN = [sys.executable, "-m", "catalytic", "run", "-q", "--isolation", "rollback", "--run-id", "r1"]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "ws")


def rb(root: Path, *args: str, command: str, run_id: str = "r1") -> int:
    return run(root, *args, command=command, run_id=run_id, isolation="rollback")


def test_rollback_restores_content_mode_symlink_and_new_empty_dir(ws: Path) -> None:
    before = tree(ws / DOMAIN)
    cmd = (
        f"cd {DOMAIN} && echo changed > a.txt && chmod 600 run.sh && rm link && ln -s sub link && "
        "mkdir emptydir && rm sub/b.txt && chmod 500 sub && mkfifo pipe"
    )
    assert rb(ws, command=cmd) == 4
    assert tree(ws / DOMAIN) == before
    docs = ledger(ws)
    status = docs["STATUS.json"]
    # The command broke the contract...
    assert status["status"] == "dirty" and status["restoration_verified"] is False
    diff = docs["RESTORE_DIFF.json"][DOMAIN]
    assert {"emptydir", "pipe"} <= set(diff["added"]) and "sub/b.txt" in diff["removed"]
    assert {"a.txt", "run.sh", "link", "sub"} <= set(diff["changed"])
    # ...and the runtime put everything back, with the proof.
    rollback = status["rollback"]
    assert rollback["performed"] is True and rollback["verified"] is True
    assert rollback["remaining"] == {} and rollback["problems"] == []


def test_clean_run_is_not_rolled_back_and_keeps_outputs(ws: Path) -> None:
    assert rb(ws, "--durable-outputs", OUT, command=f"echo r > {OUT}") == 0
    assert (ws / OUT).read_text() == "r\n"
    status = ledger(ws)["STATUS.json"]
    assert status["status"] == "restored" and status["rollback"]["performed"] is False
    assert status["rollback"]["saved"]["files"] == 3


def test_dirty_run_puts_outputs_back(ws: Path) -> None:
    (ws / "CORTEX/_generated/old.json").write_text("old\n")
    cmd = f"echo new > CORTEX/_generated/old.json; echo r > {OUT}; echo junk > {DOMAIN}/junk"
    code = rb(ws, "--durable-outputs", OUT, "CORTEX/_generated/old.json", command=cmd)
    assert code == 4
    assert (ws / "CORTEX/_generated/old.json").read_text() == "old\n"
    assert not (ws / OUT).exists()
    assert not (ws / DOMAIN / "junk").exists()
    assert ledger(ws)["STATUS.json"]["rollback"]["verified"] is True


def test_rollback_on_failure_puts_back_a_command_killed_mid_write(ws: Path) -> None:
    (ws / OUT).write_text("previous\n")
    before = tree(ws / DOMAIN)
    cmd = f"printf partial > {OUT}; echo half > {DOMAIN}/a.txt; kill -KILL $$"
    assert rb(ws, "--durable-outputs", OUT, "--rollback-on-failure", command=cmd) == 4
    assert (ws / OUT).read_text() == "previous\n"
    assert tree(ws / DOMAIN) == before
    assert ledger(ws)["STATUS.json"]["rollback"]["trigger"] == "the run is dirty"


def test_rollback_on_failure_with_clean_domains(ws: Path) -> None:
    (ws / OUT).write_text("previous\n")
    code = rb(ws, "--durable-outputs", OUT, "--rollback-on-failure", command=f"echo bad > {OUT}; exit 5")
    assert code == 5
    assert (ws / OUT).read_text() == "previous\n"
    rollback = ledger(ws)["STATUS.json"]["rollback"]
    assert rollback["performed"] is True and "exit 5" in rollback["trigger"]
    # Without the flag a failed command keeps what it wrote.
    assert rb(ws, "--durable-outputs", OUT, run_id="r2", command=f"echo bad > {OUT}; exit 5") == 5
    assert (ws / OUT).read_text() == "bad\n"


def test_store_deduplicates_across_runs(ws: Path) -> None:
    assert rb(ws, command="true") == 0
    first = ledger(ws)["STATUS.json"]["rollback"]["saved"]
    assert rb(ws, command="true", run_id="r2") == 0
    second = ledger(ws, "r2")["STATUS.json"]["rollback"]["saved"]
    # a.txt, sub/b.txt, run.sh: run.sh and a.txt differ, so three objects the first time, none after.
    assert first["new_objects"] == 3 and second["new_objects"] == 0
    objects = list((ws / RUNS / "_store" / "objects" / "sha256").rglob("*"))
    assert len([p for p in objects if p.is_file()]) == 3


def test_unrestorable_entry_is_quarantined_and_stops_the_run(ws: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(ws / DOMAIN / "sock"))
    finally:
        sock.close()
    assert rb(ws, command=f"rm {DOMAIN}/sock; echo junk > {DOMAIN}/junk") == 4
    status = ledger(ws)["STATUS.json"]
    assert status["rollback"]["verified"] is False
    assert any("sock" in p for p in status["rollback"]["problems"])
    assert status["quarantine"] and "human" in status["reason"]
    assert not (ws / DOMAIN / "junk").exists()  # the rest was still put back


def test_restore_command_puts_a_domain_back_with_dry_run(
    ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree(ws / DOMAIN)
    assert rb(ws, command="true") == 0
    (ws / DOMAIN / "a.txt").write_text("edited later\n")
    (ws / DOMAIN / "extra").mkdir()
    os.unlink(ws / DOMAIN / "link")
    edited = tree(ws / DOMAIN)
    assert main(["restore", "r1", "--root", str(ws), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "would remove" in err and "extra" in err and "would create" in err
    assert tree(ws / DOMAIN) == edited
    assert main(["restore", "r1", "--root", str(ws)]) == 0
    assert tree(ws / DOMAIN) == before
    assert main(["restore", "nope", "--root", str(ws)]) == 1
    assert main(["restore", "r1", "--root", str(ws), "--domain", "other"]) == 2


def test_restore_after_the_runtime_was_killed(ws: Path) -> None:
    before = tree(ws / DOMAIN)
    marker = ws.parent / "started"
    cmd = f"rm -r {DOMAIN}/sub; echo x > {DOMAIN}/a.txt; touch {marker}; sleep 30"
    proc = subprocess.Popen(
        [*CATALYTIC_RUN, "--catalytic-domains", DOMAIN, "--", "sh", "-c", cmd],
        cwd=ws,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert not (ws / RUNS / "r1" / "STATUS.json").exists()
    assert tree(ws / DOMAIN) != before
    assert main(["restore", "r1", "--root", str(ws), "-q"]) == 0
    assert tree(ws / DOMAIN) == before


def test_interrupted_runtime_rolls_back(ws: Path) -> None:
    before = tree(ws / DOMAIN)
    marker = ws.parent / "started"
    cmd = f"echo x > {DOMAIN}/x; touch {marker}; sleep 30"
    proc = subprocess.Popen(
        [*CATALYTIC_RUN, "--catalytic-domains", DOMAIN, "--", "sh", "-c", cmd],
        cwd=ws,
    )
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert tree(ws / DOMAIN) == before
    rollback = ledger(ws)["STATUS.json"]["rollback"]
    assert rollback["performed"] is True and rollback["verified"] is True


def test_gc_drops_states_and_objects_of_removed_ledgers(ws: Path) -> None:
    assert rb(ws, command="true") == 0
    (ws / DOMAIN / "a.txt").write_text("only in r2\n")
    assert rb(ws, command="true", run_id="r2") == 0
    store = ws / RUNS / "_store"
    objects = lambda: {p.name for p in (store / "objects").rglob("*") if p.is_file()}  # noqa: E731
    assert len(objects()) == 4
    shutil.rmtree(ws / RUNS / "r1")
    assert main(["gc", "--root", str(ws), "--dry-run", "-q"]) == 0
    assert len(objects()) == 4 and (store / "states" / "r1.json").exists()
    assert main(["gc", "--root", str(ws), "-q"]) == 0
    assert not (store / "states" / "r1.json").exists() and (store / "states" / "r2.json").exists()
    assert len(objects()) == 3
    assert main(["restore", "r2", "--root", str(ws), "-q"]) == 0


def test_none_stays_the_default_and_writes_no_isolation_extensions(ws: Path) -> None:
    code = main(
        ["run", "-q", "--root", str(ws), "--run-id", "r1", "--catalytic-domains", DOMAIN, "--", "true"]
    )
    assert code == 0
    docs = ledger(ws)
    assert docs["RUN_INFO.json"]["isolation"] == "none"
    assert "isolation_requested" not in docs["RUN_INFO.json"]
    assert "rollback" not in docs["STATUS.json"]
    assert not (ws / RUNS / "_store").exists()


def test_validator_skips_the_store_and_accepts_rollback_ledgers(ws: Path) -> None:
    assert rb(ws, command="true") == 0
    assert (ws / RUNS / "_store").is_dir()
    assert main(["validate", "--all", "--root", str(ws), "-q"]) == 0


def test_restore_outputs_on_request(ws: Path) -> None:
    (ws / OUT).write_text("v1\n")
    assert rb(ws, "--durable-outputs", OUT, command=f"echo v2 > {OUT}") == 0
    assert (ws / OUT).read_text() == "v2\n"
    assert main(["restore", "r1", "--root", str(ws), "-q"]) == 0
    assert (ws / OUT).read_text() == "v2\n"  # domains only by default
    assert main(["restore", "r1", "--root", str(ws), "--outputs", "-q"]) == 0
    assert (ws / OUT).read_text() == "v1\n"


def test_rollback_snapshots_go_through_the_row_store(ws: Path) -> None:
    """rollback takes its snapshots with the parallel streaming engine (the row store of the domain is
    written, and the next run answers from it) and still works on whole manifests: the ledger's manifest is
    the reference walk's, and a dirty run is put back."""
    from catalytic.snapshot import reference_walk
    from catalytic.snapshot.rowstore import store_path

    expected = {e.path: e.value for e in reference_walk(ws / DOMAIN)}
    assert rb(ws, "--jobs", "2", command="true", run_id="r1") == 0
    store = store_path(ws / RUNS / "_cache", os.fspath(ws / DOMAIN), "sha256")
    assert store.is_file()
    assert ledger(ws, "r1")["PRE_MANIFEST.json"][DOMAIN] == expected
    assert rb(ws, "--jobs", "2", command="true", run_id="r2") == 0
    assert ledger(ws, "r2")["RUN_INFO.json"]["cache"] == "used"
    before = tree(ws / DOMAIN)
    assert rb(ws, command=f"echo changed > {DOMAIN}/a.txt", run_id="r3") == 4
    assert tree(ws / DOMAIN) == before
    assert ledger(ws, "r3")["POST_MANIFEST.json"][DOMAIN] != expected


def test_rollback_streams_its_pre_state(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clean rollback run never reads a manifest back into memory: the files are stored from the spooled
    manifest and the pre-state document is copied from the spools; that document is byte for byte the
    canonical JSON of the pre-state (domain manifest and modes, outputs, run id, version)."""
    from catalytic.isolation.state import tree_doc
    from catalytic.isolation.store import STATE_VERSION
    from catalytic.ledger.canonical import encode
    from catalytic.snapshot import reference_walk, snapshot_tree

    (ws / OUT).write_text("{}\n")
    never_in_memory(monkeypatch)
    entries = list(reference_walk(ws / DOMAIN))
    assert rb(ws, "--durable-outputs", OUT, command="true", run_id="r1") == 0
    state = ws / RUNS / "_store" / "states" / "r1.json"
    expected = {
        "algorithm": "sha256",
        "domains": {DOMAIN: tree_doc(entries, False)},
        "outputs": {OUT: tree_doc(list(snapshot_tree(ws / OUT).entries), False)},
        "run_id": "r1",
        "version": STATE_VERSION,
    }
    assert state.read_bytes() == encode(expected)
    before = tree(ws / DOMAIN)
    assert rb(ws, command=f"rm -r {DOMAIN}/sub && echo x > {DOMAIN}/new", run_id="r2") == 4
    assert tree(ws / DOMAIN) == before


DIRTY = (
    f"cd {DOMAIN} && echo changed > a.txt && chmod 600 run.sh && rm link && ln -s sub link && "
    "mkdir -p emptydir/deeper && rm sub/b.txt && chmod 500 sub && echo new > sub2"
)


def test_dirty_run_restores_from_the_streamed_state(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dirty run's restore reads the saved state tree by tree through its index and compares it with
    streamed snapshots: the state document is never loaded whole, no snapshot is taken in memory."""
    from catalytic.isolation import rollback
    from catalytic.isolation.store import Store

    refuse(monkeypatch, Store, "load_state", "the state was loaded whole")
    # No declared output: prepare needs no snapshot in memory either.
    refuse(monkeypatch, rollback, "snapshot_tree", "a snapshot was taken in memory")
    before = tree(ws / DOMAIN)
    assert rb(ws, command=DIRTY) == 4
    assert tree(ws / DOMAIN) == before
    rollback_facts = ledger(ws)["STATUS.json"]["rollback"]
    assert rollback_facts["performed"] is True and rollback_facts["verified"] is True
    assert rollback_facts["actions"] == 8 and rollback_facts["problems"] == []
    assert (ws / RUNS / "_store" / "states" / "r1.json.index").is_file()


@pytest.mark.parametrize("index", ["missing", "stale", "garbage", "damaged"])
def test_restore_without_a_usable_index(ws: Path, capsys: pytest.CaptureFixture[str], index: str) -> None:
    """A state saved without an index (an older version) or with one that does not describe it is read
    whole; a state whose indexed text is not what catalytic writes is refused, with the tree untouched."""
    before = tree(ws / DOMAIN)
    assert rb(ws, command="true") == 0
    state = ws / RUNS / "_store" / "states" / "r1.json"
    index_file = Path(f"{state}.index")
    if index == "missing":
        index_file.unlink()
    elif index == "stale":
        index_file.write_bytes(index_file.read_bytes().replace(b'"size":', b'"size":1'))
    elif index == "garbage":
        index_file.write_bytes(b'{"size": "\xff')
    else:  # the domain's own entry renamed "z": valid JSON of the same size, no longer in path order
        text = state.read_bytes()
        assert b'"manifest":{".":"dir",' in text
        state.write_bytes(text.replace(b'"manifest":{".":"dir",', b'"manifest":{"z":"dir",', 1))
    (ws / DOMAIN / "a.txt").write_text("edited later\n")
    edited = tree(ws / DOMAIN)
    code = main(["restore", "r1", "--root", str(ws), "-q"])
    if index == "damaged":
        assert code == 1 and "is damaged" in capsys.readouterr().err
        assert tree(ws / DOMAIN) == edited
    else:
        assert code == 0 and tree(ws / DOMAIN) == before


def test_gc_drops_a_state_with_its_index_and_reads_the_kept_ones_tree_by_tree(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from catalytic.isolation.store import Store

    assert rb(ws, command="true") == 0
    (ws / DOMAIN / "a.txt").write_text("only in r2\n")
    assert rb(ws, command="true", run_id="r2") == 0
    states = ws / RUNS / "_store" / "states"
    assert sorted(p.name for p in states.iterdir()) == [
        "r1.json",
        "r1.json.index",
        "r1.json.times",
        "r2.json",
        "r2.json.index",
        "r2.json.times",
    ]
    shutil.rmtree(ws / RUNS / "r1")

    refuse(monkeypatch, Store, "load_state", "a state was loaded whole")
    assert main(["gc", "--root", str(ws), "-q"]) == 0
    assert sorted(p.name for p in states.iterdir()) == ["r2.json", "r2.json.index", "r2.json.times"]
    objects = [p for p in (ws / RUNS / "_store" / "objects").rglob("*") if p.is_file()]
    assert len(objects) == 3  # a.txt of r2, sub/b.txt, run.sh
    (ws / DOMAIN / "a.txt").write_text("edited\n")
    assert main(["restore", "r2", "--root", str(ws), "-q"]) == 0
    assert (ws / DOMAIN / "a.txt").read_text() == "only in r2\n"


def test_a_tree_deeper_than_the_recursion_limit_is_put_back(ws: Path, past_recursion_limit: int) -> None:
    """Removing a directory chain deeper than Python's recursion limit, and putting it back."""
    from catalytic.isolation.restore import remove_tree
    from trees import build_deep

    depth = past_recursion_limit
    build_deep(ws / DOMAIN / "deep", depth)
    before = tree(ws / DOMAIN)
    assert rb(ws, command=f"rm -r {DOMAIN}/deep") == 4
    assert tree(ws / DOMAIN) == before
    assert ledger(ws)["STATUS.json"]["rollback"]["verified"] is True
    bottom = f"deep/{'a/' * depth}bottom"
    assert rb(ws, command=f"echo changed > {DOMAIN}/{bottom}", run_id="r2") == 4
    assert list(ledger(ws, "r2")["RESTORE_DIFF.json"][DOMAIN]["changed"]) == [bottom]
    assert (ws / DOMAIN / bottom).read_text() == "" and tree(ws / DOMAIN) == before
    remove_tree(ws / DOMAIN / "deep")  # pytest's clean-up of old temporary directories recurses
