"""The bundled example (``examples/cortex``) and ``scripts/demo.sh``, run for real in a copy.

The build scripts are run as the seed runs them (``python CORTEX/cortex.build.py`` from the example's
root); then the same builds go through ``catalytic run`` in-process and as a subprocess, and finally
the demo script runs end to end.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from catalytic.cli import main

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "cortex"
DEMO = REPO / "scripts" / "demo.sh"

DOMAIN = "CORTEX/_generated/_tmp"
JSON_OUT = "CORTEX/_generated/cortex.json"
DB_OUT = "CORTEX/_generated/cortex.db"
CLEAN = "CORTEX/cortex.build.py"
LEAKY = "CORTEX/cortex_leaky.build.py"

# What the shipped notes hold; update these when the notes change.
DOCUMENTS = 6
HEADINGS = 31
LEFTOVER = re.compile(r"index_temp_\d+\.json")


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A fresh copy of the example, without anything an in-place run may have generated."""
    copy = tmp_path / "cortex"
    shutil.copytree(
        EXAMPLE,
        copy,
        ignore=shutil.ignore_patterns("cortex.json", "cortex.db", "CONTRACTS", "__pycache__", "index_temp_*"),
    )
    return copy


def build(root: Path, script: str = CLEAN) -> subprocess.CompletedProcess[str]:
    """Run a build script from the example's root, the way the seed does."""
    # Without the bytecode switch from the caller's environment: the scripts must not need it to
    # keep CORTEX/__pycache__/ from appearing.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run(
        [sys.executable, script], cwd=root, env=env, capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def tree(root: Path) -> dict[str, bytes | None]:
    """Every entry under ``root``: file contents, ``None`` for directories."""
    return {p.relative_to(root).as_posix(): (None if p.is_dir() else p.read_bytes()) for p in root.rglob("*")}


def scratch(root: Path) -> list[str]:
    return sorted(os.listdir(root / DOMAIN))


def read_json(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


# --- the build on its own ---------------------------------------------------------------------


def test_build_indexes_every_document(example: Path) -> None:
    proc = build(example)
    assert proc.stdout == (
        f"cortex: indexed {DOCUMENTS} documents, {HEADINGS} headings, 905 words -> {JSON_OUT}, {DB_OUT}\n"
    )
    index = read_json(example / JSON_OUT)
    assert isinstance(index, dict)
    docs = index["documents"]
    sources = sorted(p.relative_to(example).as_posix() for p in (example / "docs").glob("*.md"))
    assert len(sources) == DOCUMENTS
    assert [d["path"] for d in docs] == sources
    assert index["totals"] == {
        "documents": DOCUMENTS,
        "headings": HEADINGS,
        "words": sum(d["words"] for d in docs),
    }
    assert sum(len(d["headings"]) for d in docs) == HEADINGS
    for doc in docs:
        data = (example / doc["path"]).read_bytes()
        assert doc["sha256"] == hashlib.sha256(data).hexdigest()
        assert doc["words"] == len(data.decode().split())
        assert doc["title"] == doc["headings"][0]["text"]


def test_headings_have_level_text_and_line_and_skip_code_fences(example: Path) -> None:
    build(example)
    index = read_json(example / JSON_OUT)
    assert isinstance(index, dict)
    (doc,) = [d for d in index["documents"] if d["path"] == "docs/build.md"]
    lines = (example / "docs/build.md").read_text().splitlines()
    assert doc["title"] == "Building the index"
    # The shell comment inside the fenced block starts with "#" but is not a heading.
    assert [(h["level"], h["text"]) for h in doc["headings"]] == [
        (1, "Building the index"),
        (2, "Plain build"),
        (2, "Under catalytic"),
        (2, "Troubleshooting"),
        (3, "The run exits with code 1"),
        (3, "The run exits with code 2"),
    ]
    for heading in doc["headings"]:
        assert lines[heading["line"] - 1] == "#" * heading["level"] + " " + heading["text"]


def test_database_holds_the_same_index(example: Path) -> None:
    build(example)
    index = read_json(example / JSON_OUT)
    assert isinstance(index, dict)
    with closing(sqlite3.connect(example / DB_OUT)) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"documents", "headings"}
        documents = db.execute("SELECT path, title, words, sha256 FROM documents ORDER BY id").fetchall()
        headings = db.execute(
            "SELECT d.path, h.level, h.text, h.line FROM headings h JOIN documents d ON d.id = h.document_id"
            " ORDER BY d.id, h.line"
        ).fetchall()
    assert documents == [(d["path"], d["title"], d["words"], d["sha256"]) for d in index["documents"]]
    assert len(headings) == HEADINGS
    assert headings == [
        (d["path"], h["level"], h["text"], h["line"]) for d in index["documents"] for h in d["headings"]
    ]


def test_build_writes_only_its_two_outputs(example: Path) -> None:
    before = tree(example)
    build(example)
    after = tree(example)
    # No leftovers in the scratch domain, no temp files next to the outputs, no __pycache__.
    assert sorted(after.keys() - before.keys()) == [DB_OUT, JSON_OUT]
    assert {k: v for k, v in after.items() if k in before} == before
    assert scratch(example) == [".keep"]


def test_rebuild_is_byte_identical(example: Path) -> None:
    build(example)
    first = (example / JSON_OUT).read_bytes(), (example / DB_OUT).read_bytes()
    build(example)
    assert ((example / JSON_OUT).read_bytes(), (example / DB_OUT).read_bytes()) == first


def test_files_already_in_scratch_are_left_untouched(example: Path) -> None:
    # A file with the name the build would pick first: the build must skip the name, not overwrite it.
    (example / DOMAIN / "index_temp_001.json").write_bytes(b"not the build's\n")
    (example / DOMAIN / "notes.txt").write_bytes(b"someone else's scratch\n")
    before = tree(example / DOMAIN)
    build(example)
    assert tree(example / DOMAIN) == before


def test_missing_scratch_dir_is_created_and_removed_again(example: Path) -> None:
    shutil.rmtree(example / DOMAIN)
    build(example)
    assert not (example / DOMAIN).exists()
    assert (example / JSON_OUT).is_file() and (example / DB_OUT).is_file()


def test_leaky_build_leaves_exactly_one_file(example: Path) -> None:
    proc = build(example, LEAKY)
    assert proc.stdout.startswith(f"cortex: indexed {DOCUMENTS} documents")
    assert scratch(example) == [".keep", "index_temp_001.json"]
    # The leftover is a real intermediate record: the first document's entry.
    leftover = read_json(example / DOMAIN / "index_temp_001.json")
    index = read_json(example / JSON_OUT)
    assert isinstance(index, dict)
    assert leftover == index["documents"][0]


# --- through catalytic --------------------------------------------------------------------------


def run_args(run_id: str, intent: str, script: str) -> list[str]:
    """The example's ``catalytic run`` command line (README), with this interpreter as ``python``."""
    return [
        "run",
        "--run-id",
        run_id,
        "--catalytic-domains",
        DOMAIN,
        "--durable-outputs",
        JSON_OUT,
        DB_OUT,
        "--intent",
        intent,
        "--",
        sys.executable,
        script,
    ]


CLEAN_RUN = ("cortex-build-demo", "Build cortex index", CLEAN)
LEAKY_RUN = ("cortex-build-leaky", "Build cortex index (leaky)", LEAKY)


def ledger_of(root: Path, run_id: str) -> Path:
    return root / "CONTRACTS" / "_runs" / run_id


def assert_clean_ledger(root: Path) -> None:
    ledger = ledger_of(root, "cortex-build-demo")
    status = read_json(ledger / "STATUS.json")
    assert isinstance(status, dict)
    assert status["status"] == "restored" and status["restoration_verified"] is True
    assert read_json(ledger / "RESTORE_DIFF.json") == {DOMAIN: {"added": {}, "removed": {}, "changed": {}}}
    outputs = read_json(ledger / "OUTPUTS.json")
    assert outputs == [
        {"path": p, "type": "file", "sha256": hashlib.sha256((root / p).read_bytes()).hexdigest()}
        for p in (DB_OUT, JSON_OUT)
    ]
    assert scratch(root) == [".keep"]


def assert_leaky_ledger(root: Path) -> None:
    ledger = ledger_of(root, "cortex-build-leaky")
    status = read_json(ledger / "STATUS.json")
    assert isinstance(status, dict)
    assert status["status"] == "dirty" and status["restoration_verified"] is False
    diff = read_json(ledger / "RESTORE_DIFF.json")
    assert isinstance(diff, dict)
    added = diff[DOMAIN]["added"]
    assert len(added) == 1
    ((name, digest),) = added.items()
    assert LEFTOVER.fullmatch(name)
    assert digest == hashlib.sha256((root / DOMAIN / name).read_bytes()).hexdigest()
    assert diff[DOMAIN]["removed"] == {} and diff[DOMAIN]["changed"] == {}


def test_catalytic_clean_build_in_process(
    example: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(example)
    assert main(run_args(*CLEAN_RUN)) == 0
    assert_clean_ledger(example)
    capsys.readouterr()
    assert main(["validate", "--run-dir", "CONTRACTS/_runs/cortex-build-demo"]) == 0
    assert "[catalytic-validator] PASS: cortex-build-demo\n" in capsys.readouterr().out


def test_catalytic_leaky_build_in_process(
    example: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(example)
    assert main(run_args(*LEAKY_RUN)) == 4
    assert_leaky_ledger(example)
    capsys.readouterr()
    assert main(["validate", "--run-dir", "CONTRACTS/_runs/cortex-build-leaky"]) == 1
    out = capsys.readouterr().out
    assert "[catalytic-validator] FAIL: cortex-build-leaky\n" in out
    assert "index_temp_001.json" in out


def test_catalytic_both_builds_as_subprocess(example: Path) -> None:
    def catalytic(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "catalytic", *args],
            cwd=example,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    clean = catalytic(*run_args(*CLEAN_RUN))
    assert clean.returncode == 0, clean.stderr
    assert_clean_ledger(example)
    leaky = catalytic(*run_args(*LEAKY_RUN))
    assert leaky.returncode == 4, leaky.stderr
    assert_leaky_ledger(example)
    # Both ledgers validated together: the leaky run rewrote the outputs with the same bytes, so the
    # clean run's recorded outputs still match the disk.
    report = catalytic(
        "validate", "--run-dir", "CONTRACTS/_runs/cortex-build-demo", "CONTRACTS/_runs/cortex-build-leaky"
    )
    assert report.returncode == 1
    assert "[catalytic-validator] PASS: cortex-build-demo\n" in report.stdout
    assert "[catalytic-validator] FAIL: cortex-build-leaky\n" in report.stdout


# --- the demo script ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("tar") is None, reason="needs bash and tar")
def test_demo_script_passes_clean_and_fails_leaky(tmp_path: Path) -> None:
    example_before = tree(EXAMPLE)
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    env.pop("KEEP", None)
    proc = subprocess.run(
        ["bash", str(DEMO)], cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[catalytic-validator] PASS: cortex-build-demo\n" in proc.stdout
    assert "[catalytic-validator] FAIL: cortex-build-leaky\n" in proc.stdout
    assert '"index_temp_001.json"' in proc.stdout
    assert "== Demo OK" in proc.stdout
    # It worked in a temporary copy, removed it, and left the example as it was.
    assert list(tmp_path.iterdir()) == []
    assert tree(EXAMPLE) == example_before


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_demo_script_names_an_unusable_interpreter(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": str(tmp_path / "no-such-python"), "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        ["bash", str(DEMO)], cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 2
    assert "no-such-python is not an executable file" in proc.stderr
