"""Excludes: gitignore-style patterns left out of snapshots, outputs, restores and overlay commits.

The end-to-end tests build a throwaway git repository holding a Python package with tests, and run its
test suite under catalytic: the suite writes ``__pycache__`` and ``.pytest_cache`` in the domain.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from catalytic.cli import main
from catalytic.excludes import Excludes
from catalytic.snapshot import snapshot_tree
from catalytic.validate import CatalyticLedgerValidator
from isolation_helpers import overlay_skip_reason

RUNS = "runs"
DOMAIN = "src"
PYTEST = f"cd {DOMAIN} && {sys.executable} -m pytest -q -p no:randomly"
CACHES = ("--exclude", "__pycache__/", "--exclude", ".pytest_cache/")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository with a package and its tests under ``src``; the command runs at its root."""
    root = tmp_path / "repo"
    (root / DOMAIN / "mypkg").mkdir(parents=True)
    (root / DOMAIN / "mypkg" / "__init__.py").write_text("def double(x):\n    return 2 * x\n")
    (root / DOMAIN / "tests").mkdir()
    (root / DOMAIN / "tests" / "test_double.py").write_text(
        "from mypkg import double\n\ndef test_double():\n    assert double(2) == 4\n"
    )
    (root / DOMAIN / "conftest.py").write_text("")  # puts src on sys.path (rootdir conftest)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    monkeypatch.chdir(root)
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    return root


def run(root: Path, *args: str, command: str = PYTEST, run_id: str = "r1") -> int:
    return main(
        [
            "run",
            "-q",
            "--root",
            str(root),
            "--runs-root",
            RUNS,
            "--run-id",
            run_id,
            "--catalytic-domains",
            DOMAIN,
            *args,
            "--",
            "sh",
            "-c",
            command,
        ]
    )


def ledger(root: Path, run_id: str = "r1") -> dict[str, Any]:
    run_dir = root / RUNS / run_id
    return {p.name: json.loads(p.read_text()) for p in run_dir.glob("*.json")}


def validated(root: Path, run_id: str = "r1") -> tuple[bool, list[str]]:
    ok, report = CatalyticLedgerValidator(root / RUNS / run_id).validate()
    return ok, [e["code"] for e in report["errors"]]


# -- a Python package's test run, end to end ------------------------------------------------------------


def test_a_test_run_is_dirty_without_excludes(repo: Path) -> None:
    assert run(repo) == 4
    added = ledger(repo)["RESTORE_DIFF.json"][DOMAIN]["added"]
    assert any("__pycache__" in path for path in added)
    assert any(path.startswith(".pytest_cache") for path in added)
    assert ledger(repo)["RUN_INFO.json"]["excludes"] == {"patterns": [], "from_gitignore": False}


def test_a_test_run_is_restored_with_its_caches_excluded(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--root", str(repo), "--runs-root", RUNS, "--run-id", "r1", "--catalytic-domains",
                 DOMAIN, *CACHES, "--", "sh", "-c", PYTEST]) == 0  # fmt: skip
    assert "Excluding (2 patterns): __pycache__/ .pytest_cache/" in capsys.readouterr().err
    assert (repo / DOMAIN / "mypkg" / "__pycache__").is_dir()
    assert (repo / DOMAIN / ".pytest_cache").is_dir()
    docs = ledger(repo)
    assert docs["RUN_INFO.json"]["excludes"] == {
        "patterns": ["__pycache__/", ".pytest_cache/"],
        "from_gitignore": False,
    }
    assert not any("cache" in path for path in docs["POST_MANIFEST.json"][DOMAIN])
    assert validated(repo) == (True, [])
    # The second run finds the caches there already, and the stat cache of the first.
    assert run(repo, *CACHES, run_id="r2") == 0
    assert validated(repo, "r2") == (True, [])


def test_excludes_from_the_repository_gitignore_and_the_config_file(repo: Path) -> None:
    (repo / ".gitignore").write_text("# caches\n__pycache__/\n\n.pytest_cache/\n")
    assert run(repo, "--exclude-from-gitignore") == 0
    assert ledger(repo)["RUN_INFO.json"]["excludes"] == {
        "patterns": ["__pycache__/", ".pytest_cache/"],
        "from_gitignore": True,
    }
    (repo / "catalytic.toml").write_text('exclude = ["__pycache__/", ".pytest_cache"]\n')
    assert run(repo, run_id="r2", command=PYTEST + " && touch new.txt") == 4
    diff = ledger(repo, "r2")["RESTORE_DIFF.json"][DOMAIN]
    assert list(diff["added"]) == ["new.txt"]  # the rest is excluded, not this
    # Flags override the file (as for every setting): the .pytest_cache of this run is then a change.
    os.unlink(repo / DOMAIN / "new.txt")
    assert (
        run(repo, "--exclude", "__pycache__/", run_id="r3", command=PYTEST + " && rm -r .pytest_cache") == 4
    )


def test_a_rollback_restores_the_rest_and_leaves_the_excluded_caches_alone(repo: Path) -> None:
    assert run(repo, *CACHES) == 0
    pyc = next((repo / DOMAIN / "mypkg" / "__pycache__").iterdir())
    mine = repo / DOMAIN / "mypkg" / "__pycache__" / "kept.txt"
    mine.write_text("excluded, and there before the run\n")
    dirty = f"{PYTEST} && echo junk > mypkg/junk.py && echo changed > mypkg/__pycache__/kept.txt"
    assert run(repo, *CACHES, "--isolation", "rollback", run_id="r2", command=dirty) == 4
    docs = ledger(repo, "r2")
    assert docs["STATUS.json"]["rollback"]["verified"] is True
    assert not (repo / DOMAIN / "mypkg" / "junk.py").exists()
    # Never compared, never touched: the caches are as the command left them.
    assert pyc.is_file()
    assert mine.read_text() == "changed\n"
    assert (repo / DOMAIN / ".pytest_cache").is_dir()
    # `catalytic restore` reads the patterns from the saved pre-state.
    (repo / DOMAIN / "mypkg" / "junk.py").write_text("again\n")
    assert main(["restore", "r2", "--root", str(repo), "--runs-root", RUNS]) == 0
    assert not (repo / DOMAIN / "mypkg" / "junk.py").exists()
    assert pyc.is_file()


def test_excluded_output_files_are_not_recorded_and_the_validator_ignores_them(repo: Path) -> None:
    build = "mkdir -p dist/__pycache__ && echo data > dist/data.txt && echo 1 > dist/__pycache__/x.pyc"
    args = ("--allowed-roots", "dist", "--durable-outputs", "dist", "--exclude", "__pycache__/")
    assert run(repo, *args, command=build) == 0
    paths = [record["path"] for record in ledger(repo)["OUTPUTS.json"]]
    assert paths == ["dist", "dist/data.txt"]
    (repo / "dist" / "__pycache__" / "x.pyc").write_text("rewritten by a later import\n")
    assert validated(repo) == (True, [])
    (repo / "dist" / "data.txt").write_text("tampered\n")
    assert validated(repo) == (False, ["OUTPUT_CHANGED"])


@pytest.mark.linux
@pytest.mark.skipif(overlay_skip_reason() is not None, reason="overlay mounts unavailable here")
def test_overlay_drops_writes_to_excluded_paths(repo: Path) -> None:
    """The caches the tests write (in the domain and, undeclared, at the root) never reach the real tree
    and are no undeclared write; nor does an excluded file written into a declared output."""
    command = (
        f"{PYTEST} && mkdir -p ../dist/__pycache__ ../__pycache__ && echo d > ../dist/data.txt "
        "&& echo 1 > ../dist/__pycache__/x.pyc && echo 1 > ../__pycache__/y.pyc"
    )
    args = ("--allowed-roots", "dist", "--durable-outputs", "dist", "--isolation", "overlay", *CACHES)
    assert run(repo, *args, command=command) == 0
    status = ledger(repo)["STATUS.json"]
    assert status["undeclared_writes"] == [] and status["committed"] is True
    assert (repo / "dist" / "data.txt").read_text() == "d\n"
    assert not (repo / "dist" / "__pycache__").exists()
    assert not (repo / "__pycache__").exists()
    assert not (repo / DOMAIN / "mypkg" / "__pycache__").exists()
    assert validated(repo) == (True, [])


# -- preflight -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--exclude", "#comment"), "exclude pattern '#comment' is empty or a comment"),
        (("--exclude", "sr*/"), "catalytic domain 'src' is excluded whole (by its path 'src')"),
        (("--exclude", "/src/"), "catalytic domain 'src' is excluded whole"),
    ],
)
def test_unusable_excludes_are_refused_before_anything_runs(
    repo: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    assert run(repo, *args, command="touch ran") == 2
    err = capsys.readouterr().err
    assert "BAD_EXCLUDE" in err and message in err
    assert not (repo / DOMAIN / "ran").exists()


# -- gitignore semantics, on the engine ------------------------------------------------------------------


def _tree(root: Path) -> Path:
    for rel in [
        "build/a.o",  # anchored /build: excluded
        "src/build/b.o",  # not the root's build: kept
        "out",  # a file named like the directory-only pattern: kept
        "lib/out/c.txt",  # a directory: excluded at any depth
        "logs/x.log",
        "logs/keep.log",  # re-included by !keep.log
        "vendor/keep.log",  # below an excluded directory: stays out (never descended)
        "src/gen/g.py",  # anchored with an inner slash, relative to the workspace root
        "gen/h.py",
    ]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    return root


PATTERNS = ("/build", "out/", "*.log", "!keep.log", "vendor/", "src/gen")


def _paths(root: Path, leave_out: Excludes, cache: Path | None = None) -> list[str]:
    return [e.path for e in snapshot_tree(root, jobs=1, cache_dir=cache, leave_out=leave_out).entries]


def test_gitignore_semantics(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ws")
    assert _paths(root, Excludes(PATTERNS)) == [
        ".",
        "gen",
        "gen/h.py",
        "lib",
        "logs",
        "logs/keep.log",
        "out",
        "src",
        "src/build",
        "src/build/b.o",
    ]


def test_patterns_are_relative_to_the_workspace_root_in_a_domain(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ws")
    # The domain "src": /build is the root's (src/build stays), src/gen is this domain's gen.
    assert _paths(root / "src", Excludes(PATTERNS).within("src")) == [".", "build", "build/b.o"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_stat_cache_follows_a_changing_exclude_set(tmp_path: Path, jobs: int) -> None:
    """Snapshots with the same stat cache and other excludes each equal a fresh snapshot with theirs."""
    root = _tree(tmp_path / "ws")
    cache = tmp_path / "cache"
    sets = [Excludes(PATTERNS), Excludes(), Excludes(("logs/",)), Excludes(PATTERNS), Excludes(("*.o",))]
    for leave_out in sets + sets[::-1]:
        got = snapshot_tree(root, jobs=jobs, cache_dir=cache, leave_out=leave_out)
        fresh = snapshot_tree(root, jobs=1, leave_out=leave_out)
        assert got.entries == fresh.entries
        assert got.merkle_root == fresh.merkle_root


def test_the_python_api_takes_excludes(repo: Path) -> None:
    import catalytic

    result = catalytic.run(
        ["sh", "-c", PYTEST],
        root=repo,
        run_id="r1",
        runs_root=RUNS,
        catalytic_domains=[DOMAIN],
        exclude=["__pycache__/", ".pytest_cache/"],
    )
    assert result.restored and result.exit_status == 0
