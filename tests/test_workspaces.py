"""Real workflows on throwaway repositories: profiles, the whole repository as a domain, the workspace
root found from a subdirectory, and ``catalytic init``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from catalytic.cli import main
from catalytic.policy import load_config

PY = sys.executable
REPO = Path(__file__).resolve().parents[1]


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A Python-package-like git repository with a scratch directory and one commit."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    repo = tmp_path / "pkg"
    (repo / "src" / "pkg").mkdir(parents=True)
    (repo / "src" / "pkg" / "__init__.py").write_text("VERSION = '1.0'\n")
    (repo / "tests").mkdir()
    (repo / "tests" / "test_pkg.py").write_text(
        "import pathlib\n\ndef test_version():\n"
        "    assert 'VERSION' in (pathlib.Path(__file__).parent.parent / 'src/pkg/__init__.py').read_text()\n"
    )
    (repo / "pyproject.toml").write_text('[project]\nname = "pkg"\nversion = "1.0"\n')
    (repo / "build" / "tmp").mkdir(parents=True)
    (repo / "build" / "tmp" / "cache.txt").write_text("warm\n")
    git(repo, "init", "-q")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "initial")
    return repo


def run_info(ledger: Path) -> Any:
    return json.loads((ledger / "RUN_INFO.json").read_text())


def ledgers(runs: Path) -> list[Path]:
    return sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def test_an_ordinary_repository_needs_one_flag(
    package: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(package)
    script = "import os; open('build/tmp/x', 'w').write('x'); os.remove('build/tmp/x')"
    assert main(["run", "--catalytic-domains", "build/tmp", "--", PY, "-c", script]) == 0
    err = capsys.readouterr().err
    assert f"Workspace: {package} (the repository's top level); profile default" in err
    runs = package / ".catalytic" / "runs"
    (ledger,) = ledgers(runs)
    info = run_info(ledger)
    assert info["profile"] == "default" and info["root_found_by"] == ".git"
    assert info["allowed_roots"] == ["."] and info["forbidden_paths"] == [".git"]
    assert info["left_out"] == {}
    assert sorted(p.name for p in package.iterdir()) == [
        ".catalytic",
        ".git",
        "build",
        "pyproject.toml",
        "src",
        "tests",
    ]
    # show, runs and validate find the same runs root without a flag.
    assert main(["validate", "--all"]) == 0
    assert "PASS" in capsys.readouterr().out
    assert main(["runs", "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [ledger.name]
    assert main(["show", ledger.name]) == 0


def test_an_output_anywhere_in_an_ordinary_repository(package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(package)
    write = "open('dist/pkg.whl', 'w').write('wheel')"
    (package / "dist").mkdir()
    args = ["run", "-q", "--catalytic-domains", "build/tmp", "--durable-outputs", "dist/pkg.whl"]
    assert main([*args, "--", PY, "-c", write]) == 0
    assert main(["run", "-q", "--durable-outputs", ".git/hooks/x", "--", "true"]) == 2  # .git stays forbidden


def test_the_whole_repository_as_a_domain(package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`.` is accepted: the runs root and .git are left out (a git command may write its index), and a file
    the command leaves anywhere else fails the run."""
    monkeypatch.chdir(package)
    tidy = "git add -A && git status --short > /dev/null && echo scratch > build/tmp/y && rm build/tmp/y"
    assert main(["run", "-q", "--run-id", "tidy", "--catalytic-domains", ".", "--", "sh", "-c", tidy]) == 0
    info = run_info(package / ".catalytic/runs/tidy")
    assert info["left_out"] == {".": [".catalytic/runs", ".git"]}
    pre = json.loads((package / ".catalytic/runs/tidy/PRE_MANIFEST.json").read_text())["."]
    assert "src/pkg/__init__.py" in pre and not any(p.startswith((".git", ".catalytic/")) for p in pre)
    assert (
        main(["run", "-q", "--run-id", "leaky", "--catalytic-domains", ".", "--", "touch", "src/leftover"])
        == 4
    )
    diff = json.loads((package / ".catalytic/runs/leaky/RESTORE_DIFF.json").read_text())
    assert list(diff["."]["added"]) == ["src/leftover"]
    # The validator re-checks both (the second one's verdict is "not restored", as recorded).
    assert main(["validate", "-q", "--run-dir", ".catalytic/runs/tidy"]) == 0


def test_rollback_of_the_whole_repository_never_touches_git_or_the_ledgers(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(package)
    assert main(["run", "-q", "--run-id", "first", "--catalytic-domains", "build/tmp", "--", "true"]) == 0
    messy = "echo junk > src/junk && echo changed > src/pkg/__init__.py && echo note > .git/description"
    args = ["run", "-q", "--run-id", "messy", "--isolation", "rollback", "--catalytic-domains", "."]
    assert main([*args, "--", "sh", "-c", messy]) == 4
    assert not (package / "src/junk").exists()
    assert (package / "src/pkg/__init__.py").read_text() == "VERSION = '1.0'\n"
    assert (package / ".git/description").read_text() == "note\n"  # left out: never put back
    status = json.loads((package / ".catalytic/runs/messy/STATUS.json").read_text())
    assert status["rollback"]["performed"] and status["rollback"]["verified"]
    assert (package / ".catalytic/runs/first/RUN_INFO.json").is_file()  # earlier ledgers kept
    assert main(["validate", "-q", "--all", "--no-chain-check"]) == 1  # messy is recorded dirty
    assert main(["validate", "-q", "--run-dir", ".catalytic/runs/first"]) == 0


def test_from_a_subdirectory_the_config_and_root_are_found(
    package: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (package / "catalytic.toml").write_text('catalytic_domains = ["build/tmp"]\nintent = "tests"\n')
    sub = package / "src" / "pkg"
    monkeypatch.chdir(sub)
    leak = "open('../../build/tmp/leak', 'w').write('x')"
    assert main(["run", "--run-id", "sub", "--", PY, "-c", leak]) == 4
    err = capsys.readouterr().err
    assert f"Workspace: {package} (found by its catalytic.toml)" in err
    info = run_info(package / ".catalytic/runs/sub")
    assert info["catalytic_domains"] == ["build/tmp"] and info["intent"] == "tests"
    assert info["root_found_by"] == "catalytic.toml" and info["cwd"] == str(sub)
    assert sorted(p.name for p in sub.iterdir()) == ["__init__.py"]  # nothing written in the subdirectory
    assert main(["validate", "-q", "--all", "--no-chain-check"]) == 1  # found from here too; the run is dirty
    assert main(["show", "sub"]) == 0
    capsys.readouterr()
    assert main(["gc"]) == 0
    assert f"Workspace: {package} (found by its catalytic.toml)" in capsys.readouterr().err


def test_command_line_paths_are_relative_to_the_current_directory(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(package / "build")
    assert main(["run", "-q", "--run-id", "rel", "--catalytic-domains", "tmp", "--", "true"]) == 0
    assert run_info(package / ".catalytic/runs/rel")["catalytic_domains"] == ["build/tmp"]
    monkeypatch.chdir(package / "src")
    assert main(["run", "-q", "--run-id", "up", "--catalytic-domains", "../build/tmp", "--", "true"]) == 0
    assert run_info(package / ".catalytic/runs/up")["catalytic_domains"] == ["build/tmp"]
    assert main(["run", "-q", "--run-id", "out", "--catalytic-domains", "../../elsewhere", "--", "true"]) == 2
    # With --root, they are relative to that root.
    args = ["run", "-q", "--root", str(package), "--run-id", "given", "--catalytic-domains", "build/tmp"]
    assert main([*args, "--", "true"]) == 0
    assert run_info(package / ".catalytic/runs/given")["root_found_by"] == "given"


def test_root_discovery_order(tmp_path: Path) -> None:
    from catalytic.workspace import find_root

    outer = tmp_path / "outer"
    repo = outer / "repo"
    deep = repo / "a" / "b"
    deep.mkdir(parents=True)
    (outer / "catalytic.toml").write_text("")
    assert find_root(deep) == (outer, "catalytic.toml")
    (repo / ".git").mkdir()
    assert find_root(deep) == (repo, ".git")  # a config above the repository never captures it
    (repo / "a" / "pyproject.toml").write_text('[project]\nname = "a"\n')
    assert find_root(deep) == (repo, ".git")  # a pyproject.toml without [tool.catalytic] is not a root
    (repo / "a" / "pyproject.toml").write_text('[project]\nname = "a"\n[tool.catalytic]\nintent = "x"\n')
    assert find_root(deep) == (repo / "a", "pyproject.toml")
    (deep / "catalytic.toml").write_text("")
    assert find_root(deep) == (deep, "catalytic.toml")


def test_profiles_by_layout_and_by_name(
    package: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(package)
    seed = ["run", "-q", "--profile", "cmp01-seed", "--run-id", "s", "--catalytic-domains"]
    assert main([*seed, ".", "--", "true"]) == 2
    assert "FORBIDDEN" in capsys.readouterr().err  # the seed's profile forbids CANON, AGENTS.md, BUILD
    assert main([*seed, "build/tmp", "--", "true"]) == 0
    assert run_info(package / "CONTRACTS/_runs/s")["profile"] == "cmp01-seed"
    # Now the layout is the seed's (CONTRACTS/ exists): the seed's profile applies without the flag...
    assert main(["run", "-q", "--run-id", "t", "--catalytic-domains", "build/tmp", "--", "true"]) == 0
    assert (package / "CONTRACTS/_runs/t").is_dir()
    # ... unless the config names another.
    (package / "catalytic.toml").write_text('profile = "default"\n')
    assert main(["run", "-q", "--run-id", "u", "--catalytic-domains", "build/tmp", "--", "true"]) == 0
    assert (package / ".catalytic/runs/u").is_dir()
    (package / "catalytic.toml").write_text('profile = "mine"\n')
    assert main(["run", "-q", "--catalytic-domains", "build/tmp", "--", "true"]) == 2
    assert "BAD_CONFIG" in capsys.readouterr().err


def test_the_seed_layout_runs_the_seed_commands_verbatim(tmp_path: Path) -> None:
    """The seed's documented commands, in a copy of the bundled example inside a git repository, from
    its root and from a subdirectory of it."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    repo = tmp_path / "repo"
    example = repo / "examples" / "cortex"
    shutil.copytree(
        REPO / "examples" / "cortex",
        example,
        ignore=shutil.ignore_patterns("CONTRACTS", "cortex.json", "cortex.db", "index_temp_*", "__pycache__"),
    )
    git(repo, "init", "-q")
    bindir = Path(PY).parent
    script = f"""
export PATH={bindir}:$PATH
cd {example}
catalytic run --run-id cortex-build-demo --catalytic-domains CORTEX/_generated/_tmp \\
  --durable-outputs CORTEX/_generated/cortex.json CORTEX/_generated/cortex.db \\
  --intent "Build cortex index" -- python CORTEX/cortex.build.py
catalytic validate --run-dir CONTRACTS/_runs/cortex-build-demo
cd CORTEX
catalytic validate --all
"""
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASS: cortex-build-demo") == 2
    info = run_info(example / "CONTRACTS/_runs/cortex-build-demo")
    assert info["profile"] == "cmp01-seed" and info["root_found_by"] == "catalytic.toml"
    assert not (repo / ".catalytic").exists() and not (example / "CORTEX" / "CONTRACTS").exists()


def test_init_writes_a_commented_config_once(
    package: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(package / "src")
    assert main(["init"]) == 0
    config = package / "catalytic.toml"
    text = config.read_text()
    assert text.startswith("# catalytic.toml") and 'profile = "default"' in text
    assert load_config(package) == {"profile": "default", "runs_root": ".catalytic/runs"}
    capsys.readouterr()
    assert main(["init"]) == 2
    assert "EXISTS" in capsys.readouterr().err and config.read_text() == text
    # Uncommenting the example domain gives a working setup.
    config.write_text(
        text.replace('# catalytic_domains = ["build/tmp"]', 'catalytic_domains = ["build/tmp"]')
    )
    assert main(["run", "-q", "--", "true"]) == 0


def test_init_refuses_a_pyproject_that_configures_catalytic(
    package: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (package / "pyproject.toml").write_text('[project]\nname = "pkg"\n[tool.catalytic]\nintent = "x"\n')
    monkeypatch.chdir(package)
    assert main(["init"]) == 2
    assert "already configures catalytic ([tool.catalytic])" in capsys.readouterr().err
    assert not (package / "catalytic.toml").exists()


@pytest.mark.parametrize(
    ("left_out", "valid"),
    [
        ({".": [".catalytic/runs", ".git"]}, True),
        ({".": [".catalytic/runs", ".git", "src"]}, False),  # would hide any change under src/
        ({".": [".catalytic/runs"]}, False),
        ({".": [".catalytic/runs", ".git"], "elsewhere": [".git"]}, False),
    ],
)
def test_the_validator_holds_left_out_to_the_rule(
    package: Path, monkeypatch: pytest.MonkeyPatch, left_out: dict[str, list[str]], valid: bool
) -> None:
    from catalytic.ledger.canonical import dumps
    from catalytic.validate import CatalyticLedgerValidator

    monkeypatch.chdir(package)
    assert main(["run", "-q", "--run-id", "r", "--catalytic-domains", ".", "--", "true"]) == 0
    ledger = package / ".catalytic/runs/r"
    info = run_info(ledger)
    info["left_out"] = left_out
    (ledger / "RUN_INFO.json").write_text(dumps(info))
    _ok, report = CatalyticLedgerValidator(ledger).validate()
    assert ("LEFT_OUT" in {e["code"] for e in report["errors"]}) is not valid, report["errors"]
