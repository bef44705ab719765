"""Whole runs with the stat cache warm or off, one or two hashing processes, sha256 or blake3.

The mutation matrix: every kind of change a command can leave behind must make the run dirty, and
putting everything back must make it restored, in every snapshot configuration.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catalytic.cli import main
from catalytic.ledger.canonical import dumps
from catalytic.snapshot import dirscan, scheduler
from catalytic.validate import CatalyticLedgerValidator

CONFIGS = {
    "warm-cache-jobs2": ["--jobs", "2"],
    "warm-cache-jobs1": ["--jobs", "1"],
    "no-cache-jobs2": ["--jobs", "2", "--no-cache"],
    "blake3-warm-jobs2": ["--jobs", "2", "--hash", "blake3"],
}

MUTATIONS = {
    "content": "printf changed > d/sub/f1",
    "same-size-rewrite-mtime-restored": (
        "touch -r d/sub/f1 /tmp/.catalytic-ref-$$ && printf BBBB > d/sub/f1 && "
        "touch -r /tmp/.catalytic-ref-$$ d/sub/f1 && rm /tmp/.catalytic-ref-$$"
    ),
    "chmod": "chmod 0600 d/sub/f2",
    "add-file": "echo new > d/new",
    "remove-file": "rm d/sub/f3",
    "add-empty-dir": "mkdir d/emptydir",
    "file-to-symlink": "rm d/sub/f1 && ln -s f2 d/sub/f1",
    "retarget-symlink": "rm d/link && ln -s sub/f2 d/link",
    "rename": "mv d/sub/f2 d/sub/f2b",
    "swap-equal-size": "mv d/sub/f4 d/t && mv d/sub/f5 d/sub/f4 && mv d/t d/sub/f5",
}


@pytest.fixture
def eager_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduler, "POOL_MIN_ENTRIES", 0)
    monkeypatch.setattr(dirscan, "SPLIT", 2)


def workspace(root: Path) -> Path:
    (root / "d" / "sub").mkdir(parents=True)
    (root / "d" / "sub" / "f1").write_bytes(b"AAAA")
    (root / "d" / "sub" / "f2").write_bytes(b"same")
    (root / "d" / "sub" / "f3").write_bytes(b"same")
    (root / "d" / "sub" / "f4").write_bytes(b"4444")
    (root / "d" / "sub" / "f5").write_bytes(b"5555")
    for i in range(20):
        (root / "d" / f"bulk{i:02d}").write_bytes(os.urandom(64))
    os.symlink("sub/f1", root / "d" / "link")
    # Old enough that the cache trusts the rows of the first run.
    time.sleep(0.15)
    return root


def run(root: Path, run_id: str, extra: list[str], command: str) -> int:
    return main(
        [
            "run",
            "-q",
            "--root",
            str(root),
            "--catalytic-domains",
            "d",
            "--run-id",
            run_id,
            *extra,
            "--",
            "sh",
            "-c",
            f"cd {root} && {command}",
        ]
    )


def info(root: Path, run_id: str) -> dict:
    return json.loads((root / "CONTRACTS" / "_runs" / run_id / "RUN_INFO.json").read_text())


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_mutation_matrix(tmp_path: Path, eager_pool: None, config: str, mutation: str) -> None:
    root = workspace(tmp_path)
    extra = CONFIGS[config]
    assert run(root, "warmup", extra, "true") == 0  # warms the cache (or not, with --no-cache)
    assert run(root, "clean", extra, "true") == 0
    expected_cache = "disabled" if "--no-cache" in extra else "used"
    assert info(root, "clean")["cache"] == expected_cache
    assert run(root, "mutated", extra, MUTATIONS[mutation]) == 1
    ledger = root / "CONTRACTS" / "_runs" / "mutated"
    roots = info(root, "mutated")["merkle_roots"]["d"]
    assert roots["pre"] != roots["post"]
    passed, _report = CatalyticLedgerValidator(ledger).validate()
    assert not passed
    # The recorded manifests are true: the validator's recomputation agrees with the recorded diff.
    status = json.loads((ledger / "STATUS.json").read_text())
    assert status["status"] == "dirty"


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_restoring_command_is_restored(tmp_path: Path, eager_pool: None, config: str) -> None:
    root = workspace(tmp_path)
    extra = CONFIGS[config]
    run(root, "warmup", extra, "true")
    command = "cp -p d/sub/f1 /tmp/.cat-$$ && printf XXXX > d/sub/f1 && mkdir d/tmpdir && rmdir d/tmpdir"
    command += " && cp -p /tmp/.cat-$$ d/sub/f1 && rm /tmp/.cat-$$"
    assert run(root, "restored", extra, command) == 0
    ledger = root / "CONTRACTS" / "_runs" / "restored"
    passed, report = CatalyticLedgerValidator(ledger).validate()
    assert passed, report
    data = info(root, "restored")
    assert data["merkle_roots"]["d"]["pre"] == data["merkle_roots"]["d"]["post"]
    assert data["hash_algorithm"] == ("blake3" if "blake3" in config else "sha256")
    assert data["jobs"] == int(extra[1])


def test_run_info_records_cache_states(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    assert run(root, "first", [], "true") == 0
    assert run(root, "second", [], "true") == 0
    assert run(root, "third", ["--no-cache"], "true") == 0
    assert [info(root, r)["cache"] for r in ("first", "second", "third")] == ["rebuilt", "used", "disabled"]
    assert info(root, "first")["jobs"] >= 1
    cache_files = list((root / "CONTRACTS" / "_runs" / "_cache").iterdir())
    assert len(cache_files) == 1
    # A cache someone scribbled over is ignored and rebuilt; the run is still right.
    cache_files[0].write_bytes(b"\0" * 4096)
    assert run(root, "fourth", [], "true") == 0
    assert info(root, "fourth")["cache"] == "rebuilt"
    # validate --all skips the _cache directory.
    assert main(["validate", "-q", "--all", str(root / "CONTRACTS" / "_runs")]) == 0


def test_validate_catches_a_forged_merkle_root(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    assert run(root, "r", [], "true") == 0
    ledger = root / "CONTRACTS" / "_runs" / "r"
    data = info(root, "r")
    data["merkle_roots"]["d"]["post"] = "0" * 64
    (ledger / "RUN_INFO.json").write_text(dumps(data))
    passed, report = CatalyticLedgerValidator(ledger).validate()
    assert not passed
    assert "MERKLE_MISMATCH" in {e["code"] for e in report["errors"]}


def test_validate_catches_a_manifest_edit_that_keeps_the_diff_empty(tmp_path: Path) -> None:
    # Editing PRE and POST the same way keeps RESTORE_DIFF right; only the Merkle roots notice.
    root = workspace(tmp_path)
    assert run(root, "r", [], "true") == 0
    ledger = root / "CONTRACTS" / "_runs" / "r"
    for name in ("PRE_MANIFEST.json", "POST_MANIFEST.json"):
        doc = json.loads((ledger / name).read_text())
        doc["d"]["sub/f1"] = "f" * 64
        (ledger / name).write_text(dumps(doc))
    passed, report = CatalyticLedgerValidator(ledger).validate()
    assert not passed
    assert "MERKLE_MISMATCH" in {e["code"] for e in report["errors"]}


def test_snapshot_and_diff_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = workspace(tmp_path)
    manifest = tmp_path / "m.json"
    assert main(["snapshot", str(root / "d"), "--output", str(manifest)]) == 0
    printed = capsys.readouterr().out.split()[0]
    doc = json.loads(manifest.read_text())
    assert doc["merkle_root"] == printed
    assert doc["manifest"]["sub/f1"] == hashlib.sha256(b"AAAA").hexdigest()
    assert doc["modes"]["sub/f1"] == "0644" and "link" not in doc["modes"]
    assert main(["diff", str(manifest), str(root / "d")]) == 0
    assert capsys.readouterr().out == ""
    (root / "d" / "sub" / "f1").write_bytes(b"ZZZZ")
    (root / "d" / "sub" / "f2").chmod(0o600)
    assert main(["diff", str(manifest), str(root / "d")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("changed  sub/f1 (")
    assert out[1].startswith("changed  sub/f2 (") and "mode 0644 -> 0600" in out[1]
    assert main(["snapshot", str(root / "d"), "--hash", "blake3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["hash_algorithm"] == "blake3" and summary["merkle_root"] != printed


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "catalytic", "snapshot", str(root / "d")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stderr == ""
    assert len(proc.stdout.split()[0]) == 64


@pytest.mark.slow
def test_benchmark_smoke(tmp_path: Path) -> None:
    bench = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
    proc = subprocess.run(
        [sys.executable, str(bench), "--scale", "0.002", "--repeat", "1", "--tmp", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    out = proc.stdout
    for needle in ("python -c pass", "sha256sum (one pass)", "naive reference", "warm cache", "blake3"):
        assert needle in out
    assert " s " in out and "MiB" in out
