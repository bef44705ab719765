"""--isolation overlay: real overlay mounts in a private mount namespace (root on Linux; CI is root)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from catalytic.cli import main
from isolation_helpers import (
    DOMAIN,
    OUT,
    OUT_DIR,
    RUNS,
    ledger,
    make_workspace,
    never_in_memory,
    overlay_skip_reason,
    run,
    tree,
)

_WHY = overlay_skip_reason()
pytestmark = [
    pytest.mark.linux,
    pytest.mark.skipif(_WHY is not None, reason=f"overlay mounts unavailable here: {_WHY}"),
]


OVERLAY_RUN = [sys.executable, "-m", "catalytic", "run", "-q", "--isolation", "overlay", "--run-id", "r1"]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "ws")


def test_clean_run_commits_file_and_directory_outputs(ws: Path) -> None:
    before = tree(ws / DOMAIN)
    (ws / OUT_DIR).mkdir(parents=True)
    (ws / OUT_DIR / "old.txt").write_text("old\n")
    (ws / OUT_DIR / "keep.txt").write_text("keep\n")
    cmd = (
        f"echo result > {OUT}; rm {OUT_DIR}/old.txt; mkdir {OUT_DIR}/d; echo n > {OUT_DIR}/d/new; "
        f"echo scratch > {DOMAIN}/scratch; rm {DOMAIN}/scratch"
    )
    assert run(ws, "--durable-outputs", OUT, OUT_DIR, command=cmd) == 0
    assert (ws / OUT).read_text() == "result\n"
    assert sorted(os.listdir(ws / OUT_DIR)) == ["d", "keep.txt"]
    assert (ws / OUT_DIR / "d" / "new").read_text() == "n\n"
    assert tree(ws / DOMAIN) == before
    docs = ledger(ws)
    status = docs["STATUS.json"]
    assert status["status"] == "restored" and status["committed"] is True
    assert status["undeclared_writes"] == []
    assert docs["RUN_INFO.json"]["isolation"] == "overlay"
    outputs = {o["path"]: o for o in docs["OUTPUTS.json"]}
    import hashlib

    assert outputs[OUT]["sha256"] == hashlib.sha256(b"result\n").hexdigest()
    assert f"{OUT_DIR}/old.txt" not in outputs
    commits = docs["RUN_INFO.json"]["isolation_details"]["commits"]
    assert all(c["verified"] for c in commits if c["action"] == "committed")


def test_real_tree_is_untouched_while_the_command_runs(ws: Path) -> None:
    # The command checks, from outside its namespace's view... it cannot; so check afterwards that a
    # write the command saw never existed in the real tree: the command records what it sees.
    cmd = f"echo x > {DOMAIN}/left; cat {DOMAIN}/left > /dev/null"
    assert run(ws, command=cmd) == 4
    assert not (ws / DOMAIN / "left").exists()


def test_dirty_domain_commits_nothing_and_keeps_the_write_set(ws: Path) -> None:
    before = tree(ws / DOMAIN)
    cmd = f"echo result > {OUT}; echo junk > {DOMAIN}/leftover; echo changed > {DOMAIN}/a.txt"
    assert run(ws, "--durable-outputs", OUT, command=cmd) == 4
    assert not (ws / OUT).exists()
    assert tree(ws / DOMAIN) == before
    docs = ledger(ws)
    assert docs["STATUS.json"]["status"] == "dirty"
    assert docs["STATUS.json"]["committed"] is False
    diff = docs["RESTORE_DIFF.json"][DOMAIN]
    assert set(diff["added"]) == {"leftover"} and set(diff["changed"]) == {"a.txt"}
    q = ws / RUNS / "r1" / "quarantine"
    assert (q / "upper" / DOMAIN / "leftover").read_text() == "junk\n"
    assert (q / "upper" / OUT).read_text() == "result\n"
    listing = json.loads((q / "WRITE_SET.json").read_text())
    assert {"path": f"{DOMAIN}/leftover", "kind": "file", "opaque": False} in listing


def test_undeclared_write_outside_every_root_fails_and_is_quarantined(ws: Path) -> None:
    cmd = f"echo result > {OUT}; echo evil > src/evil.py; mkdir -p newdir/x; rm src/m.py"
    assert run(ws, "--durable-outputs", OUT, command=cmd) == 4
    assert not (ws / "src" / "evil.py").exists() and not (ws / "newdir").exists()
    assert (ws / "src" / "m.py").exists() and not (ws / OUT).exists()
    status = ledger(ws)["STATUS.json"]
    assert status["status"] == "dirty" and status["restoration_verified"] is False
    assert all(not any(d.values()) for d in ledger(ws)["RESTORE_DIFF.json"].values())
    writes = {w["path"]: w["kind"] for w in status["undeclared_writes"]}
    assert writes == {"newdir": "dir", "newdir/x": "dir", "src/evil.py": "file", "src/m.py": "whiteout"}
    assert "undeclared" in status["reason"]
    assert (ws / RUNS / "r1" / "quarantine" / "upper" / "src" / "evil.py").read_text() == "evil\n"


def test_mode_change_of_a_directory_outside_the_domains_is_undeclared(ws: Path) -> None:
    assert run(ws, command="chmod 700 src") == 4
    status = ledger(ws)["STATUS.json"]
    assert status["undeclared_writes"] == [{"kind": "dir", "path": "src"}]
    assert os.stat(ws / "src").st_mode & 0o777 == 0o755


def test_discard_drops_the_write_set(ws: Path) -> None:
    assert run(ws, "--discard", command="echo evil > src/evil.py") == 4
    assert not (ws / RUNS / "r1" / "quarantine").exists()
    assert ledger(ws)["STATUS.json"]["quarantine"] is None


def test_deletion_in_a_domain_is_a_whiteout(ws: Path) -> None:
    assert run(ws, command=f"rm {DOMAIN}/a.txt") == 4
    assert (ws / DOMAIN / "a.txt").read_text() == "alpha\n"
    docs = ledger(ws)
    assert set(docs["RESTORE_DIFF.json"][DOMAIN]["removed"]) == {"a.txt"}
    listing = json.loads((ws / RUNS / "r1" / "quarantine" / "WRITE_SET.json").read_text())
    assert {"path": f"{DOMAIN}/a.txt", "kind": "whiteout", "opaque": False} in listing


def test_replaced_directory_is_opaque(ws: Path) -> None:
    cmd = f"rm -r {DOMAIN}/sub && mkdir {DOMAIN}/sub && echo new > {DOMAIN}/sub/c.txt"
    assert run(ws, command=cmd) == 4
    diff = ledger(ws)["RESTORE_DIFF.json"][DOMAIN]
    assert set(diff["removed"]) == {"sub/b.txt"} and set(diff["added"]) == {"sub/c.txt"}
    listing = json.loads((ws / RUNS / "r1" / "quarantine" / "WRITE_SET.json").read_text())
    assert {"path": f"{DOMAIN}/sub", "kind": "dir", "opaque": True} in listing
    assert sorted(os.listdir(ws / DOMAIN / "sub")) == ["b.txt"]


def test_directory_replaced_by_an_identical_one_is_restored(ws: Path) -> None:
    cmd = f"rm -r {DOMAIN}/sub && mkdir {DOMAIN}/sub && echo beta > {DOMAIN}/sub/b.txt"
    assert run(ws, command=cmd) == 0
    assert ledger(ws)["STATUS.json"]["status"] == "restored"


def test_command_killed_mid_write_commits_nothing(ws: Path) -> None:
    (ws / "CORTEX/_generated").mkdir(parents=True, exist_ok=True)
    (ws / OUT).write_text("previous\n")
    code = run(ws, "--durable-outputs", OUT, command=f"printf partial > {OUT}; kill -KILL $$")
    assert code == 137
    assert (ws / OUT).read_text() == "previous\n"
    status = ledger(ws)["STATUS.json"]
    assert status["committed"] is False and status["exit_code"] == 137
    assert (ws / RUNS / "r1" / "quarantine" / "upper" / OUT).read_text() == "partial"


def test_interrupted_runtime_commits_nothing(ws: Path) -> None:
    marker = ws.parent / "started"
    cmd = f"echo result > {OUT}; echo x > {DOMAIN}/x; touch {marker}; sleep 20"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "catalytic",
            "run",
            "-q",
            "--isolation",
            "overlay",
            "--run-id",
            "r1",
            "--catalytic-domains",
            DOMAIN,
            "--durable-outputs",
            OUT,
            "--",
            "sh",
            "-c",
            cmd,
        ],
        cwd=ws,
    )
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert not (ws / OUT).exists() and not (ws / DOMAIN / "x").exists()
    status = ledger(ws)["STATUS.json"]
    assert status["interrupted"] is True and status["committed"] is False


def test_refactor_trial_with_the_whole_repository_as_domain(ws: Path) -> None:
    (ws / ".git").mkdir()
    (ws / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    before = tree(ws)
    proposal = f"{RUNS}/refactor-proposal"
    planner = (
        "sed -i s/code/refactored/ src/m.py && mkdir -p build_tmp && cp -r src build_tmp/ && "
        f"mkdir -p {proposal} && diff -ru src build_tmp/src > {proposal}/plan.diff; "
        f"echo 'rename m.py' > {proposal}/README; "
        "sed -i s/refactored/code/ src/m.py && rm -r build_tmp"
    )
    code = main(
        [
            "run",
            "-q",
            "--root",
            str(ws),
            "--run-id",
            "refactor-trial",
            "--isolation",
            "overlay",
            "--catalytic-domains",
            ".",
            "--durable-outputs",
            proposal,
            "--",
            "sh",
            "-c",
            f"cd {ws} && {planner}",
        ]
    )
    assert code == 0
    assert (ws / proposal / "README").read_text() == "rename m.py\n"
    after = [t for t in tree(ws) if not t[0].startswith("CONTRACTS")]
    assert after == [t for t in before if not t[0].startswith("CONTRACTS")]
    docs = ledger(ws, "refactor-trial")
    assert docs["STATUS.json"]["status"] == "restored"
    assert "src/m.py" in docs["PRE_MANIFEST.json"]["."]
    assert not any(p.startswith(RUNS) for p in docs["PRE_MANIFEST.json"]["."])
    excluded = docs["RUN_INFO.json"]["isolation_details"]["excluded_from_domains"]
    assert excluded == {".": [proposal, RUNS]}
    assert any(o["path"] == f"{proposal}/README" for o in docs["OUTPUTS.json"])


def test_refactor_trial_write_to_a_forbidden_path_inside_the_domain_is_undeclared(ws: Path) -> None:
    (ws / ".git").mkdir()
    (ws / ".git" / "index").write_text("i\n")
    code = main(
        [
            "run",
            "-q",
            "--root",
            str(ws),
            "--run-id",
            "r1",
            "--isolation",
            "overlay",
            "--catalytic-domains",
            ".",
            "--",
            "sh",
            "-c",
            f"echo touched > {ws}/.git/index",
        ]
    )
    assert code == 4
    status = ledger(ws)["STATUS.json"]
    assert [w["path"] for w in status["undeclared_writes"]] == [".git/index"]
    assert (ws / ".git" / "index").read_text() == "i\n"


def test_domain_containing_the_runs_root_is_refused_without_overlay(ws: Path) -> None:
    code = main(["run", "-q", "--root", str(ws), "--catalytic-domains", ".", "--", "true"])
    assert code == 2


def test_check_determinism(ws: Path) -> None:
    ok = run(ws, "--durable-outputs", OUT, "--check-determinism", command=f"echo same > {OUT}")
    assert ok == 0
    det = ledger(ws)["RUN_INFO.json"]["isolation_details"]["determinism"]
    assert det["equal"] is True and det["first"] == det["second"]
    bad = run(ws, "--durable-outputs", OUT, "--check-determinism", run_id="r2", command=f"date +%N > {OUT}")
    assert bad == 4
    det2 = ledger(ws, "r2")["RUN_INFO.json"]["isolation_details"]["determinism"]
    assert det2["equal"] is False and det2["first"] != det2["second"]
    assert (ws / OUT).read_text() == "same\n"


def test_check_determinism_needs_overlay_and_a_deterministic_run(ws: Path) -> None:
    assert run(ws, "--check-determinism", isolation="rollback", command="true") == 2
    assert run(ws, "--check-determinism", "--determinism", "nondeterministic", command="true") == 2


def test_auto_picks_overlay_and_records_why(ws: Path) -> None:
    assert run(ws, isolation="auto", command="true") == 0
    info = ledger(ws)["RUN_INFO.json"]
    assert info["isolation"] == "overlay" and info["isolation_requested"] == "auto"
    assert info["isolation_reason"]


def test_overlay_unavailable_is_a_clear_error_and_auto_falls_back(
    ws: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from catalytic.isolation import mount

    monkeypatch.setattr(mount, "probe_cache", {})
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    assert run(ws, command="true") == 2
    err = capsys.readouterr().err
    assert "ISOLATION_UNAVAILABLE" in err and "unshare" in err and "rollback" in err
    assert not (ws / RUNS / "r1").exists()
    assert run(ws, isolation="auto", command="true", run_id="r2") == 0
    info = ledger(ws, "r2")["RUN_INFO.json"]
    assert info["isolation"] == "rollback" and "unshare" in info["isolation_reason"]


def test_config_file_selects_the_isolation(ws: Path) -> None:
    (ws / "catalytic.toml").write_text('isolation = "overlay"\n')
    code = main(
        ["run", "-q", "--root", str(ws), "--run-id", "r1", "--catalytic-domains", DOMAIN, "--", "true"]
    )
    assert code == 0
    assert ledger(ws)["RUN_INFO.json"]["isolation"] == "overlay"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) not installed")
def test_rootless_overlay_as_an_unprivileged_user() -> None:
    import tempfile

    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    base = Path(tempfile.mkdtemp(prefix="catalytic-rootless-", dir="/tmp"))
    try:
        ws = make_workspace(base / "ws")
        for p in [base, *base.rglob("*")]:
            os.lchown(p, 65534, 65534)
        env = {**os.environ, "TMPDIR": str(base), "HOME": str(base)}
        probe = subprocess.run(
            [*drop, sys.executable, "-c", "import catalytic.cli"], capture_output=True, text=True, check=False
        )
        if probe.returncode != 0:
            pytest.skip(
                f"the unprivileged user cannot import catalytic from this checkout: {probe.stderr[-200:]}"
            )
        probe = subprocess.run(
            [*drop, "unshare", "--map-root-user", "--mount", "true"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode != 0:
            pytest.skip(f"unprivileged user namespaces refused here: {probe.stderr.strip()}")

        def catalytic(run_id: str, cmd: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    *drop,
                    sys.executable,
                    "-m",
                    "catalytic",
                    "run",
                    "-q",
                    "--isolation",
                    "overlay",
                    "--run-id",
                    run_id,
                    "--catalytic-domains",
                    DOMAIN,
                    "--durable-outputs",
                    OUT,
                    "--",
                    "sh",
                    "-c",
                    cmd,
                ],
                cwd=ws,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )

        proc = catalytic("r1", f"echo result > {OUT}; echo x > {DOMAIN}/x; rm {DOMAIN}/x; rm {DOMAIN}/a.txt")
        assert proc.returncode == 4, proc.stderr
        assert (ws / DOMAIN / "a.txt").exists() and not (ws / OUT).exists()
        assert set(ledger(ws)["RESTORE_DIFF.json"][DOMAIN]["removed"]) == {"a.txt"}
        assert ledger(ws)["STATUS.json"]["committed"] is False
        listing = json.loads((ws / RUNS / "r1" / "quarantine" / "WRITE_SET.json").read_text())
        assert {"path": f"{DOMAIN}/a.txt", "kind": "whiteout", "opaque": False} in listing
        ok = catalytic("r2", f"echo r > {OUT}")
        assert ok.returncode == 0, ok.stderr
        assert (ws / OUT).read_text() == "r\n"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_validator_accepts_a_clean_overlay_ledger_and_rejects_undeclared_writes(ws: Path) -> None:
    assert run(ws, "--durable-outputs", OUT, command=f"echo r > {OUT}") == 0
    assert run(ws, command="echo evil > src/evil.py", run_id="r2") == 4
    assert main(["validate", "--run-dir", str(ws / RUNS / "r1"), "--root", str(ws), "-q"]) == 0
    assert main(["validate", "--run-dir", str(ws / RUNS / "r2"), "--root", str(ws), "-q"]) == 1


VIEW_SCRIPTS = {
    "whiteouts": "rm a.txt sub/b.txt link",
    "opaque": "rm -r sub && mkdir sub && mkdir sub/deeper && echo z > sub/deeper/z",
    "file_to_dir": "rm a.txt && mkdir a.txt && echo in > a.txt/in",
    "dir_to_file": "rm -r sub && echo now-a-file > sub",
    "modes_and_links": "chmod 700 sub && chmod 600 run.sh && ln -sfn sub link && mkfifo pipe",
    "rename_dir": "mv sub moved && mkdir -p new/empty",
    "same_bytes": "cp a.txt a.tmp && mv a.tmp a.txt && touch sub/b.txt",
}


def _check_ledger(ws: Path, run_id: str = "r1") -> dict[str, Any]:
    """The run's ledger, after checking that its differences and Merkle roots follow from its manifests
    and that the validator finds nothing wrong with it beyond a dirty domain."""
    from catalytic.diff import diff_entries
    from catalytic.snapshot import entries_from_documents
    from catalytic.snapshot.merkle import merkle_root
    from catalytic.validate import CatalyticLedgerValidator

    docs = ledger(ws, run_id)
    info = docs["RUN_INFO.json"]
    for domain, roots in info["merkle_roots"].items():
        snaps = {}
        for label in ("PRE", "POST"):
            manifest = docs[f"{label}_MANIFEST.json"][domain]
            snaps[label] = list(entries_from_documents(manifest, docs[f"{label}_MODES.json"][domain]))
            assert roots[label.lower()] == merkle_root(snaps[label], info["hash_algorithm"])
        assert docs["RESTORE_DIFF.json"][domain] == diff_entries(snaps["PRE"], snaps["POST"]).to_json()
    ok, report = CatalyticLedgerValidator(ws / RUNS / run_id).validate()
    # A dirty overlay run commits nothing: its declared outputs were not produced.
    assert {e["code"] for e in report["errors"]} <= {"NOT_RESTORED", "DIRTY", "OUTPUT_NOT_PRODUCED"}
    assert ok == (docs["STATUS.json"]["status"] == "restored")
    return docs


def _spooling(monkeypatch: pytest.MonkeyPatch, *, disk_full: bool) -> list[str]:
    """Record the domains whose post-run snapshot was merged into spools; ``disk_full``: spool files
    cannot be written, and the run takes its post-run snapshots again into spools in memory."""
    from catalytic.snapshot import manifest_stream
    from catalytic.snapshot.spool import MemorySpool

    original = manifest_stream.spool_changes
    calls: list[str] = []

    def spool_changes(domain: str, *args: Any, **kwargs: Any) -> Any:
        if disk_full and not isinstance(args[2], MemorySpool):
            raise OSError(errno.ENOSPC, "No space left on device")
        calls.append(domain)
        return original(domain, *args, **kwargs)

    monkeypatch.setattr(manifest_stream, "spool_changes", spool_changes)
    return calls


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "memory"])
@pytest.mark.parametrize("name", sorted(VIEW_SCRIPTS))
def test_post_manifest_equals_what_the_command_saw(
    ws: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    streamed: bool,
) -> None:
    """The merged lower + upper computation matches a snapshot taken inside the overlay itself, both when
    the pre-run manifest streams from its spool into the post-run one (never read back whole) and when
    the run fell back to memory; the differences and Merkle roots follow from the manifests."""
    if streamed:
        never_in_memory(monkeypatch)
    spooled = _spooling(monkeypatch, disk_full=not streamed)
    view = tmp_path / "view.json"  # outside the workspace root: not in the overlay, not a write set entry
    snap = (
        "import json,sys; from catalytic.snapshot import snapshot_tree; "
        "s = snapshot_tree(sys.argv[1]); "
        "json.dump({e.path: [e.value, e.mode] for e in s.entries}, open(sys.argv[2], 'w'))"
    )
    cmd = f'cd {DOMAIN} && {VIEW_SCRIPTS[name]} && cd {ws} && {sys.executable} -c "{snap}" {DOMAIN} {view}'
    run(ws, command=cmd)
    assert spooled == [DOMAIN]
    docs = _check_ledger(ws)
    seen = json.loads(view.read_text())
    post = docs["POST_MANIFEST.json"][DOMAIN]
    modes = docs["POST_MODES.json"][DOMAIN]
    assert {p: [v, modes.get(p)] for p, v in post.items()} == seen
    clean = docs["RESTORE_DIFF.json"][DOMAIN] == {"added": {}, "removed": {}, "changed": {}}
    assert clean == (name == "same_bytes")  # the one script that leaves every byte and mode as it was


def test_a_domain_the_command_did_not_write_is_its_pre_run_snapshot(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Of two domains, only the one the command wrote in is merged with the upper layer; the other's post-run
    documents and Merkle root are its pre-run ones, with no pass over its manifest."""
    never_in_memory(monkeypatch)
    spooled = _spooling(monkeypatch, disk_full=False)
    assert run(ws, "--catalytic-domains", DOMAIN, "src", command=f"echo x > {DOMAIN}/new") == 4
    assert spooled == [DOMAIN]
    docs = _check_ledger(ws)
    for name in ("MANIFEST", "MODES"):
        assert docs[f"POST_{name}.json"]["src"] == docs[f"PRE_{name}.json"]["src"]
    roots = docs["RUN_INFO.json"]["merkle_roots"]
    assert roots["src"]["post"] == roots["src"]["pre"] != roots[DOMAIN]["post"]
    assert list(docs["RESTORE_DIFF.json"][DOMAIN]["added"]) == ["new"]
    assert docs["RESTORE_DIFF.json"]["src"] == {"added": {}, "removed": {}, "changed": {}}


def test_whole_repository_domain_streams_and_leaves_out_the_runs_root(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the whole workspace as domain, the streamed post-run snapshot leaves out the runs root and the
    declared output inside it, as the pre-run one does, and reports only the domain's own changes."""
    never_in_memory(monkeypatch)
    spooled = _spooling(monkeypatch, disk_full=False)
    proposal = f"{RUNS}/proposal"
    cmd = f"cd {ws} && rm src/m.py && echo new > src/n.py && mkdir -p {proposal} && echo p > {proposal}/p"
    # The later --catalytic-domains replaces the helper's.
    code = run(ws, "--catalytic-domains", ".", "--durable-outputs", proposal, command=cmd)
    assert code == 4 and spooled == ["."]
    docs = _check_ledger(ws)
    diff = docs["RESTORE_DIFF.json"]["."]
    assert list(diff["removed"]) == ["src/m.py"] and list(diff["added"]) == ["src/n.py"]
    assert not diff["changed"]
    assert not any(p.startswith("CONTRACTS/") for p in docs["POST_MANIFEST.json"]["."])
    assert (ws / "src" / "m.py").exists() and not (ws / proposal).exists()


def test_killed_runtime_leaves_the_real_tree_untouched(ws: Path) -> None:
    before = tree(ws)
    marker = ws.parent / "started"
    cmd = f"echo result > {OUT}; rm -r {DOMAIN}/sub; echo evil > src/m.py; touch {marker}; sleep 30"
    proc = subprocess.Popen(
        [*OVERLAY_RUN, "--catalytic-domains", DOMAIN, "--durable-outputs", OUT, "--", "sh", "-c", cmd],
        cwd=ws,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert not (ws / RUNS / "r1" / "STATUS.json").exists()
    from catalytic.isolation.overlay import stale_layers

    left = [p for p in stale_layers() if p.name.startswith("catalytic-overlay-r1-")]
    assert left, "a killed runtime leaves its overlay layer behind"
    assert main(["gc", "--root", str(ws), "-q"]) == 0
    assert not any(p.exists() for p in left)
    assert [t for t in tree(ws) if not t[0].startswith("CONTRACTS")] == [
        t for t in before if not t[0].startswith("CONTRACTS")
    ]


def test_a_tree_deeper_than_the_recursion_limit(
    ws: Path, past_recursion_limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command that builds a directory chain deeper than Python's recursion limit: the upper layer is
    read, the post-run snapshot merged, the write set quarantined and the layers removed without a crash."""
    from catalytic.isolation.restore import remove_tree

    layers = ws.parent / "layers"  # not the shared temporary directory: other runs' layers come and go there
    layers.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(layers))
    depth = past_recursion_limit
    script = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import trees; "
    script += f"trees.build_deep(trees.Path({DOMAIN!r}), {depth})"
    assert run(ws, command=f'cd {ws} && {sys.executable} -c "{script}"') == 4
    docs = _check_ledger(ws)
    assert len(docs["RESTORE_DIFF.json"][DOMAIN]["added"]) == depth + 1
    assert not (ws / DOMAIN / "a").exists()
    quarantined = ws / RUNS / "r1" / "quarantine" / "upper" / DOMAIN
    assert (quarantined / "/".join(["a"] * depth) / "bottom").is_file()
    assert list(layers.iterdir()) == []
    remove_tree(quarantined)  # pytest's clean-up of old temporary directories recurses


# Descriptors and paths that reach the real tree past the overlay (tests/adversarial has the CLI cases).


def _inheritable(path: Path, flags: int) -> int:
    fd = os.open(path, flags | os.O_CLOEXEC, 0o644)
    os.set_inheritable(fd, True)
    return fd


def test_descriptors_that_can_write_the_real_workspace_are_found(ws: Path, tmp_path: Path) -> None:
    from catalytic.isolation.descriptors import reaching

    (tmp_path / "outside.log").write_text("")
    (ws / "gone.log").write_text("")
    opened = {
        "write": _inheritable(ws / DOMAIN / "a.txt", os.O_WRONLY | os.O_APPEND),
        "rdwr": _inheritable(ws / "build.log", os.O_RDWR | os.O_CREAT),
        "root": _inheritable(ws, os.O_RDONLY | os.O_DIRECTORY),
        "above": _inheritable(tmp_path, os.O_RDONLY | os.O_DIRECTORY),
        "read": _inheritable(ws / "src" / "m.py", os.O_RDONLY),
        "outside": _inheritable(tmp_path / "outside.log", os.O_WRONLY),
        "deleted": _inheritable(ws / "gone.log", os.O_WRONLY),
        "cloexec": os.open(ws / "src" / "m.py", os.O_WRONLY | os.O_CLOEXEC),
    }
    (ws / "gone.log").unlink()
    try:
        found = {i.fd: i for i in reaching(ws)}
        assert {name for name, fd in opened.items() if fd in found} == {"write", "rdwr", "root", "above"}
        assert (
            found[opened["write"]]
            .describe(ws)
            .endswith(f"for writing on {DOMAIN}/a.txt inside the workspace")
        )
        assert found[opened["root"]].describe(ws).endswith("on the directory the workspace root")
        assert found[opened["above"]].describe(ws).endswith(f"{tmp_path}, above the workspace root")
    finally:
        for fd in opened.values():
            os.close(fd)


def test_a_descriptor_opened_after_preflight_stops_the_run_before_the_command(ws: Path) -> None:
    """A library caller that opens a descriptor between preflight and execute: the backend checks again."""
    from catalytic.policy import declare, preflight
    from catalytic.runtime import execute

    policy = preflight(declare(ws, {"run_id": "late", "isolation": "overlay", "catalytic_domains": [DOMAIN]}))
    fd = _inheritable(ws / DOMAIN / "a.txt", os.O_WRONLY | os.O_APPEND)
    try:
        result = execute(policy, ["sh", "-c", f"echo ran >> {ws.parent}/ran"])
    finally:
        os.close(fd)
    assert result.status == "dirty" and result.exit_code is None
    assert result.error is not None and result.error.code == "INHERITED_DESCRIPTOR"
    assert not (ws.parent / "ran").exists()


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "memory"])
def test_a_write_to_the_real_domain_through_proc_is_dirty(
    ws: Path, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    """Written through /proc/<catalytic pid>/cwd, the change is on the real tree: the domain's post-run
    snapshot is the real one, and the reason says how it got there."""
    if streamed:
        never_in_memory(monkeypatch)
    _spooling(monkeypatch, disk_full=not streamed)
    real = f"/proc/{os.getpid()}/cwd/{DOMAIN}"
    cmd = f"echo evil >> {real}/a.txt; rm {real}/sub/b.txt; echo scratch > {DOMAIN}/mine"
    assert run(ws, "--catalytic-domains", DOMAIN, "src", command=cmd) == 4
    docs = _check_ledger(ws)
    diff = docs["RESTORE_DIFF.json"][DOMAIN]
    assert list(diff["changed"]) == ["a.txt"] and list(diff["removed"]) == ["sub/b.txt"]
    assert docs["RESTORE_DIFF.json"]["src"] == {"added": {}, "removed": {}, "changed": {}}
    status = docs["STATUS.json"]
    assert "changed on the real tree, past the overlay" in status["reason"]
    assert docs["RUN_INFO.json"]["isolation_details"]["real_tree_changed"] == [DOMAIN]
    assert (ws / DOMAIN / "a.txt").read_text() == "alpha\nevil\n"  # it did happen: the verdict is right


def test_a_determinism_run_that_writes_the_real_domain_commits_nothing(ws: Path) -> None:
    """The second run of --check-determinism is checked on the real tree too: the first run wrote nothing
    there, the second did, and the declared output is not committed."""
    marker = ws.parent / "second"
    real = f"/proc/{os.getpid()}/cwd/{DOMAIN}"
    cmd = f"echo same > {OUT}; if [ -e {marker} ]; then echo evil >> {real}/a.txt; fi; touch {marker}"
    assert run(ws, "--durable-outputs", OUT, "--check-determinism", command=cmd) == 4
    docs = ledger(ws)
    assert docs["STATUS.json"]["status"] == "dirty"
    assert "changed on the real tree" in docs["STATUS.json"]["reason"]
    assert not (ws / OUT).exists()
