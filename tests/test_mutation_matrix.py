"""End to end through catalytic.api.run: every kind of change is caught, exactly; no change is clean.

Each case prepares a domain, runs a real subprocess that performs one mutation, and checks the
RunResult's diff and the RESTORE_DIFF.json written on disk against the exact expected paths/values.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from catalytic import api
from catalytic.validate import CatalyticLedgerValidator
from unprivileged import run_unprivileged

# Workspaces laid out like the seed's project: ledgers in CONTRACTS/_runs (see conftest.seed_layout).
pytestmark = pytest.mark.usefixtures("seed_layout")

DOMAIN = "scratch"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


HELLO = sha256_hex(b"hello")
INNER = sha256_hex(b"inner")
EXE = sha256_hex(b"#!/bin/sh\n")
BAD = b"bad\xff".decode("utf-8", "surrogateescape")

# Preamble of every mutation script: ``d`` is the domain directory (as bytes, so bytes names work).
PRELUDE = "import os, shutil, sys\nd = os.fsencode(sys.argv[1])\nj = lambda n: os.path.join(d, n)\n"


def _base_tree(domain: Path) -> None:
    """f.txt, exe (0644), link -> f.txt, d/ (0755) holding inner."""
    os.chmod(domain, 0o755)
    (domain / "f.txt").write_bytes(b"hello")
    os.chmod(domain / "f.txt", 0o644)
    (domain / "exe").write_bytes(b"#!/bin/sh\n")
    os.chmod(domain / "exe", 0o644)
    os.symlink("f.txt", domain / "link")
    (domain / "d").mkdir()
    os.chmod(domain / "d", 0o755)
    (domain / "d" / "inner").write_bytes(b"inner")
    os.chmod(domain / "d" / "inner", 0o644)


@dataclass
class Case:
    script: str
    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    changed: dict[str, dict[str, str]] = field(default_factory=dict)


DIRTY: dict[str, Case] = {
    "content": Case(
        "open(j(b'f.txt'), 'wb').write(b'world')",
        changed={"f.txt": {"before": HELLO, "after": sha256_hex(b"world")}},
    ),
    "same_size_mtime_restored": Case(
        """
        st = os.stat(j(b'f.txt'))
        open(j(b'f.txt'), 'r+b').write(b'jello')
        os.utime(j(b'f.txt'), ns=(st.st_atime_ns, st.st_mtime_ns))
        assert os.stat(j(b'f.txt')).st_mtime_ns == st.st_mtime_ns
        assert os.stat(j(b'f.txt')).st_size == st.st_size
        """,
        changed={"f.txt": {"before": HELLO, "after": sha256_hex(b"jello")}},
    ),
    "new_file": Case("open(j(b'new'), 'wb').write(b'n')", added={"new": sha256_hex(b"n")}),
    "new_empty_dir": Case("os.mkdir(j(b'newdir'))", added={"newdir": "dir"}),
    "removed_file": Case("os.unlink(j(b'f.txt'))", removed={"f.txt": HELLO}),
    "removed_dir": Case("shutil.rmtree(j(b'd'))", removed={"d": "dir", "d/inner": INNER}),
    "exec_bit": Case(
        "os.chmod(j(b'exe'), 0o755)",
        changed={"exe": {"before": EXE, "after": EXE, "mode_before": "0644", "mode_after": "0755"}},
    ),
    "symlink_retargeted": Case(
        "os.unlink(j(b'link')); os.symlink('d', j(b'link'))",
        changed={"link": {"before": "symlink:f.txt", "after": "symlink:d"}},
    ),
    "file_replaced_by_dir": Case(
        "os.unlink(j(b'f.txt')); os.mkdir(j(b'f.txt')); os.chmod(j(b'f.txt'), 0o755)",
        changed={"f.txt": {"before": HELLO, "after": "dir", "mode_before": "0644", "mode_after": "0755"}},
    ),
    "dir_replaced_by_file": Case(
        "shutil.rmtree(j(b'd')); open(j(b'd'), 'wb').write(b'inner'); os.chmod(j(b'd'), 0o644)",
        removed={"d/inner": INNER},
        changed={"d": {"before": "dir", "after": INNER, "mode_before": "0755", "mode_after": "0644"}},
    ),
    "non_utf8_name": Case(
        "fd = os.open(j(b'bad\\xff'), os.O_CREAT | os.O_WRONLY, 0o644); os.write(fd, b'z'); os.close(fd)",
        added={BAD: sha256_hex(b"z")},
    ),
    "fifo_created": Case("os.mkfifo(j(b'pipe'))", added={"pipe": "fifo"}),
    "file_replaced_by_symlink": Case(
        "os.unlink(j(b'exe')); os.symlink('f.txt', j(b'exe'))",
        changed={"exe": {"before": EXE, "after": "symlink:f.txt", "mode_before": "0644", "mode_after": ""}},
    ),
    "domain_removed": Case(
        "shutil.rmtree(d)",
        removed={
            ".": "dir",
            "d": "dir",
            "d/inner": INNER,
            "exe": EXE,
            "f.txt": HELLO,
            "link": "symlink:f.txt",
        },
    ),
    "domain_replaced_by_symlink": Case(
        "shutil.copytree(d, d + b'.moved', symlinks=True); shutil.rmtree(d); os.symlink(d + b'.moved', d)",
        removed={"d": "dir", "d/inner": INNER, "exe": EXE, "f.txt": HELLO, "link": "symlink:f.txt"},
        changed={".": {"before": "dir", "after": "symlink:@MOVED@", "mode_before": "0755", "mode_after": ""}},
    ),
    "nested_file_content": Case(
        "open(j(b'd/inner'), 'ab').write(b'!')",
        changed={"d/inner": {"before": INNER, "after": sha256_hex(b"inner!")}},
    ),
    "domain_mode": Case(
        "os.chmod(d, 0o700)",
        changed={".": {"before": "dir", "after": "dir", "mode_before": "0755", "mode_after": "0700"}},
    ),
}

CLEAN: dict[str, str] = {
    "reads_files": """
        for root, dirs, files in os.walk(d):
            for name in files:
                open(os.path.join(root, name), 'rb').read()
        os.readlink(j(b'link'))
        """,
    "writes_and_deletes": """
        open(j(b'tmp'), 'wb').write(b'scratch work')
        os.mkdir(j(b'tmpdir'))
        open(j(b'tmpdir/x'), 'wb').write(b'x')
        shutil.rmtree(j(b'tmpdir'))
        os.unlink(j(b'tmp'))
        """,
    "changes_and_changes_back": """
        st = os.stat(j(b'f.txt'))
        open(j(b'f.txt'), 'wb').write(b'something else entirely')
        os.chmod(j(b'exe'), 0o755)
        os.unlink(j(b'link')); os.symlink('d', j(b'link'))
        open(j(b'f.txt'), 'wb').write(b'hello')
        os.utime(j(b'f.txt'), ns=(st.st_atime_ns, st.st_mtime_ns))
        os.chmod(j(b'exe'), 0o644)
        os.unlink(j(b'link')); os.symlink('f.txt', j(b'link'))
        """,
    "does_nothing": "pass",
    "mtime_only": "os.utime(j(b'f.txt'), ns=(1, 1)); os.utime(j(b'd'), ns=(2, 2))",
}


#: Snapshot configurations every case runs under: the default (cache rebuilt by this run), and a warm
#: stat cache (a first run of ``true`` wrote it) with one or two hashing processes.
CONFIGS = {"default": None, "warm-jobs1": 1, "warm-jobs2": 2}


def _run(root: Path, script: str, run_id: str, config: str = "default") -> api.RunResult:
    code = PRELUDE + textwrap.dedent(script)
    jobs = CONFIGS[config]
    if jobs is not None:
        time.sleep(0.15)  # older than the cache's racy window, so the warm-up's rows are trusted
        warm = api.run(["true"], root=root, catalytic_domains=[DOMAIN], run_id=f"warm-{run_id}", jobs=jobs)
        assert warm.restored
    result = api.run(
        [sys.executable, "-c", code, str(root / DOMAIN)],
        root=root,
        catalytic_domains=[DOMAIN],
        run_id=run_id,
        jobs=jobs or 0,
    )
    info = json.loads((result.ledger_dir / "RUN_INFO.json").read_text())
    assert info["cache"] == ("rebuilt" if jobs is None else "used")
    return result


@pytest.fixture
def eager_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hand even the smallest domain to the process pool, in tiny batches."""
    from catalytic.snapshot import dirscan, scheduler

    monkeypatch.setattr(scheduler, "POOL_MIN_ENTRIES", 0)
    monkeypatch.setattr(dirscan, "SPLIT", 2)


def _ledger(result: api.RunResult, name: str) -> Any:
    data = (result.ledger_dir / name).read_bytes()
    return json.loads(data.decode("utf-8"))


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("name", sorted(DIRTY))
def test_each_change_is_caught_exactly(workspace: Path, eager_pool: None, name: str, config: str) -> None:
    case = DIRTY[name]
    _base_tree(workspace / DOMAIN)
    result = _run(workspace, case.script, f"dirty-{name.replace('_', '-')}", config)
    assert result.exit_code == 0, "the mutation script itself failed"
    assert result.error is None
    assert result.status == "dirty"
    assert not result.restoration_verified
    assert result.exit_status == 4
    moved = f"{workspace / DOMAIN}.moved"
    changed = json.loads(json.dumps(case.changed).replace("@MOVED@", moved))
    expected = {"added": case.added, "removed": case.removed, "changed": changed}
    assert set(result.diff) == {DOMAIN}
    assert result.diff[DOMAIN].to_json() == expected
    assert _ledger(result, "RESTORE_DIFF.json") == {DOMAIN: expected}
    status = _ledger(result, "STATUS.json")
    assert status["status"] == "dirty"
    assert status["restoration_verified"] is False
    ok, report = CatalyticLedgerValidator(result.ledger_dir).validate()
    assert not ok
    assert {e["code"] for e in report["errors"]} == {"NOT_RESTORED", "DIRTY"}


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("name", sorted(CLEAN))
def test_no_net_change_is_restored(workspace: Path, eager_pool: None, name: str, config: str) -> None:
    _base_tree(workspace / DOMAIN)
    result = _run(workspace, CLEAN[name], f"clean-{name.replace('_', '-')}", config)
    assert result.exit_code == 0, "the script itself failed"
    assert result.status == "restored"
    assert result.restoration_verified
    assert result.exit_status == 0
    assert result.diff[DOMAIN].clean
    assert _ledger(result, "RESTORE_DIFF.json") == {DOMAIN: {"added": {}, "removed": {}, "changed": {}}}
    assert _ledger(result, "STATUS.json")["status"] == "restored"
    assert _ledger(result, "PRE_MANIFEST.json") == _ledger(result, "POST_MANIFEST.json")
    ok, report = CatalyticLedgerValidator(result.ledger_dir).validate()
    assert ok, report["errors"]


def test_command_failure_is_reported_but_restored(workspace: Path) -> None:
    _base_tree(workspace / DOMAIN)
    result = _run(workspace, "sys.exit(7)", "clean-exit-7")
    assert result.status == "restored"
    assert result.exit_code == 7
    assert result.exit_status == 7


def test_shell_command_mutation(workspace: Path) -> None:
    _base_tree(workspace / DOMAIN)
    result = api.run(
        ["sh", "-c", 'echo more >> "$1"', "sh", str(workspace / DOMAIN / "f.txt")],
        root=workspace,
        catalytic_domains=[DOMAIN],
        run_id="shell",
    )
    assert result.status == "dirty"
    assert result.diff[DOMAIN].to_json() == {
        "added": {},
        "removed": {},
        "changed": {"f.txt": {"before": HELLO, "after": sha256_hex(b"hellomore\n")}},
    }


def test_non_utf8_names_round_trip_through_the_ledger(workspace: Path) -> None:
    domain = workspace / DOMAIN
    _base_tree(domain)
    raw_names = [b"bad\xff", b"\xc3(", b"d/\x80\x81"]
    for raw in raw_names:
        fd = os.open(bytes(domain) + b"/" + raw, os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, raw)
        os.close(fd)
    result = _run(
        workspace, "fd = os.open(j(b'new\\xfe'), os.O_CREAT | os.O_WRONLY, 0o600); os.close(fd)", "bytes"
    )
    for name in ("PRE_MANIFEST.json", "POST_MANIFEST.json", "RESTORE_DIFF.json", "PRE_MODES.json"):
        (result.ledger_dir / name).read_bytes().decode("utf-8")  # strictly valid UTF-8
    pre = _ledger(result, "PRE_MANIFEST.json")[DOMAIN]
    keys = {k.encode("utf-8", "surrogateescape"): v for k, v in pre.items()}
    for raw in raw_names:
        assert keys[raw] == sha256_hex(raw)
        assert os.path.exists(bytes(domain) + b"/" + raw)
    assert list(keys) == sorted(keys)
    diff = _ledger(result, "RESTORE_DIFF.json")[DOMAIN]
    assert {k.encode("utf-8", "surrogateescape") for k in diff["added"]} == {b"new\xfe"}
    assert diff["removed"] == {}
    assert diff["changed"] == {}
    modes = _ledger(result, "POST_MODES.json")[DOMAIN]
    assert modes["new\udcfe"] == "0600"


FIFO_RUNNER = """
import json, sys
from catalytic import api

r = api.run([sys.executable, "-c", "pass"], root=sys.argv[1], catalytic_domains=["scratch"], run_id="fifo")
print(json.dumps({"status": r.status, "error": None if r.error is None else r.error.code}))
"""


def test_fifo_in_domain_does_not_block_the_snapshot(workspace: Path) -> None:
    domain = workspace / DOMAIN
    _base_tree(domain)
    os.mkfifo(domain / "pipe")
    os.mkfifo(domain / "d" / "pipe2")
    proc = subprocess.run(
        [sys.executable, "-c", FIFO_RUNNER, str(workspace)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"status": "restored", "error": None}
    ledger = workspace / "CONTRACTS" / "_runs" / "fifo"
    pre = json.loads((ledger / "PRE_MANIFEST.json").read_text("utf-8"))[DOMAIN]
    assert pre["pipe"] == "fifo"
    assert pre["d/pipe2"] == "fifo"


def test_two_domains_and_an_absent_one(workspace: Path) -> None:
    _base_tree(workspace / DOMAIN)
    (workspace / "other").mkdir()
    (workspace / "other" / "keep").write_bytes(b"keep")
    result = api.run(
        [sys.executable, "-c", "import os, sys; os.mkdir(sys.argv[1])", str(workspace / "later")],
        root=workspace,
        catalytic_domains=[DOMAIN, "other", "later"],
        run_id="absent",
        allow_absent=True,
    )
    assert result.status == "dirty"
    assert result.diff[DOMAIN].clean
    assert result.diff["other"].clean
    assert result.diff["later"].to_json() == {"added": {".": "dir"}, "removed": {}, "changed": {}}
    info = _ledger(result, "RUN_INFO.json")
    assert info["absent_domains"] == ["later"]
    assert _ledger(result, "PRE_MANIFEST.json")["later"] == {}


def test_unreadable_entry_fails_the_run_naming_it() -> None:
    top = Path(tempfile.mkdtemp(prefix="catalytic-matrix-"))
    locked = top / DOMAIN / "sub" / "odd: name"
    try:
        (top / DOMAIN / "sub").mkdir(parents=True)
        for d in (top, top / DOMAIN, top / DOMAIN / "sub"):
            os.chmod(d, 0o777)
        locked.write_bytes(b"secret")
        os.chmod(locked, 0o000)

        def attempt() -> dict[str, Any]:
            result = api.run(
                [sys.executable, "-c", "pass"], root=top, catalytic_domains=[DOMAIN], run_id="unreadable"
            )
            assert result.error is not None
            return {
                "status": result.status,
                "exit_status": result.exit_status,
                "exit_code": result.exit_code,
                "code": result.error.code,
                "message": result.error.message,
                "ledger": str(result.ledger_dir),
            }

        outcome = run_unprivileged(attempt)
        assert outcome["status"] == "dirty"
        assert outcome["exit_status"] == 4
        assert outcome["exit_code"] is None  # the command never ran
        assert outcome["code"] == "UNREADABLE"
        assert outcome["message"] == "scratch/sub/odd: name: cannot be read (permission denied)"
        status = json.loads((Path(outcome["ledger"]) / "STATUS.json").read_text("utf-8"))
        assert status["status"] == "dirty"
        assert status["restoration_verified"] is False
        assert status["error"] == {"code": "UNREADABLE", "message": outcome["message"]}
    finally:
        os.chmod(locked, 0o600)
        shutil.rmtree(top)
