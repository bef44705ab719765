"""Verdicts a CI can use: no silent pass, and a validator that fails what did not succeed.

Each test builds a throwaway repository in ``tmp_path`` and runs ``catalytic`` on it in-process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from catalytic.cli import main
from catalytic.errors import EXIT_NOT_RESTORED
from catalytic.validate import CatalyticLedgerValidator
from ledger_factory import build_ledger

PY = sys.executable
RUNS = "CONTRACTS/_runs"
OUT = "CORTEX/_generated/out.txt"


def read(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small repository with a scratch directory and an allowed output root; cwd is its root."""
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "keep.txt").write_text("keep\n")
    (tmp_path / "CORTEX" / "_generated").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "error:" in line]


def codes_of(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out


# -- item 4: silent, meaningless passes ------------------------------------------------------------


def test_misspelt_domain_is_a_preflight_error(tmp_path: Path, monkeypatch, capsys) -> None:
    root = repo(tmp_path, monkeypatch)
    rc = main(["run", "-q", "--catalytic-domains", "scrach", "--", "sh", "-c", "echo x > scratch/new"])
    assert rc == 2
    assert any("ABSENT: catalytic domain 'scrach' does not exist" in e for e in errors(capsys))
    assert not (root / "scratch" / "new").exists()  # nothing ran
    assert not (root / "CONTRACTS").exists()  # nothing written


def test_absent_domain_only_with_the_opt_in(tmp_path: Path, monkeypatch) -> None:
    root = repo(tmp_path, monkeypatch)
    assert (
        main(["run", "-q", "--run-id", "r1", "--allow-absent", "--catalytic-domains", "later", "--", "true"])
        == 0
    )
    assert read(root / RUNS / "r1" / "RUN_INFO.json")["absent_domains"] == ["later"]  # type: ignore[index]
    (root / "catalytic.toml").write_text('allow-absent = true\ncatalytic-domains = ["later"]\n')
    assert main(["run", "-q", "--run-id", "r2", "--", "true"]) == 0


def test_no_domain_is_a_preflight_error_unless_allowed(tmp_path: Path, monkeypatch, capsys) -> None:
    root = repo(tmp_path, monkeypatch)
    assert main(["run", "-q", "--", "true"]) == 2
    assert any("NO_DOMAINS" in e for e in errors(capsys))
    assert not (root / "CONTRACTS").exists()
    assert main(["run", "-q", "--run-id", "r1", "--allow-no-domains", "--", "true"]) == 0
    (root / "catalytic.toml").write_text("allow-no-domains = true\n")
    assert main(["run", "-q", "--run-id", "r2", "--", "true"]) == 0


def test_declared_output_not_produced_fails_run_and_validate(tmp_path: Path, monkeypatch, capsys) -> None:
    root = repo(tmp_path, monkeypatch)
    base = ["run", "-q", "--catalytic-domains", "scratch", "--durable-outputs", OUT]
    assert main([*base, "--run-id", "r1", "--", "true"]) == EXIT_NOT_RESTORED
    status = read(root / RUNS / "r1" / "STATUS.json")
    assert status["status"] == "dirty"  # type: ignore[index]
    assert status["error"]["code"] == "OUTPUT_NOT_PRODUCED"  # type: ignore[index]
    capsys.readouterr()
    assert main(["validate", "--run-dir", f"{RUNS}/r1"]) == 1
    assert "OUTPUT_NOT_PRODUCED" in codes_of(capsys)
    # Asked for explicitly: recorded, and both the run and the validator accept it.
    assert main([*base, "--run-id", "r2", "--allow-missing-outputs", "--", "true"]) == 0
    assert read(root / RUNS / "r2" / "RUN_INFO.json")["allow_missing_outputs"] is True  # type: ignore[index]
    assert main(["validate", "--run-dir", f"{RUNS}/r2"]) == 0


def test_validator_fails_missing_outputs_of_older_ledgers(tmp_path: Path) -> None:
    ledger = build_ledger(tmp_path)
    ledger.edit("RUN_INFO.json", lambda info: info.update(missing_outputs=["CORTEX/_generated/cortex.db"]))
    ledger.edit(
        "OUTPUTS.json", lambda outs: outs.__setitem__(slice(None), [o for o in outs if "db" not in o["path"]])
    )
    ok, report = CatalyticLedgerValidator(ledger.run_dir).validate()
    assert not ok
    assert [e["code"] for e in report["errors"]] == ["OUTPUT_NOT_PRODUCED"]
    ok, _ = CatalyticLedgerValidator(ledger.run_dir, allow_missing_outputs=True).validate()
    assert ok


def test_traced_workspace_fails_an_undeclared_write(tmp_path: Path, monkeypatch, capsys) -> None:
    root = repo(tmp_path, monkeypatch)
    trace = [
        "--trace",
        "--trace-scope",
        "workspace",
        "--catalytic-domains",
        "scratch",
        "--durable-outputs",
        OUT,
    ]
    stray = "echo x > stray.txt; echo y > " + OUT
    assert main(["run", "--run-id", "r1", *trace, "--", "sh", "-c", stray]) == EXIT_NOT_RESTORED
    err = capsys.readouterr().err
    info = read(root / RUNS / "r1" / "RUN_INFO.json")
    if not info["trace"]["complete"]:  # type: ignore[index]
        pytest.skip(f"no complete trace here: {info['trace']['reason']}")  # type: ignore[index]
    assert "undeclared write: stray.txt" in err
    status = read(root / RUNS / "r1" / "STATUS.json")
    assert status["error"]["code"] == "UNDECLARED_WRITE"  # type: ignore[index]
    assert OUT not in status["error"]["message"]  # type: ignore[index]
    assert main(["validate", "--run-dir", f"{RUNS}/r1"]) == 1
    # Writes to the domain (put back) and to the declared output only: the run passes.
    ok = "echo t > scratch/t; rm scratch/t; echo z > " + OUT
    assert main(["run", "-q", "--run-id", "r2", *trace, "--", "sh", "-c", ok]) == 0


def test_incomplete_workspace_trace_says_so(tmp_path: Path, monkeypatch, capsys) -> None:
    repo(tmp_path, monkeypatch)
    args = ["run", "--trace", "--trace-scope", "workspace", "--trace-backend", "none"]
    assert main([*args, "--catalytic-domains", "scratch", "--", "true"]) == 0
    assert "CMP-01 invariant 1 is not proven" in capsys.readouterr().err


# -- item 5: verdicts CI can use -------------------------------------------------------------------


def test_failing_command_fails_validation(tmp_path: Path, monkeypatch, capsys) -> None:
    repo(tmp_path, monkeypatch)
    assert (
        main(["run", "-q", "--run-id", "r1", "--catalytic-domains", "scratch", "--", "sh", "-c", "exit 3"])
        == 3
    )
    capsys.readouterr()
    assert main(["validate", "--run-dir", f"{RUNS}/r1"]) == 1
    assert "COMMAND_FAILED: RUN_INFO.json: the command exited 3" in codes_of(capsys)
    assert main(["validate", "--allow-command-failure", "--run-dir", f"{RUNS}/r1"]) == 0


def test_command_not_found_records_no_older_output(tmp_path: Path, monkeypatch, capsys) -> None:
    root = repo(tmp_path, monkeypatch)
    base = ["run", "-q", "--catalytic-domains", "scratch", "--durable-outputs", OUT]
    assert main([*base, "--run-id", "r1", "--", "sh", "-c", f"echo 1 > {OUT}"]) == 0
    assert main([*base, "--run-id", "r2", "--", "no-such-command-here"]) == 127
    first = read(root / RUNS / "r1" / "OUTPUTS.json")
    second = read(root / RUNS / "r2" / "OUTPUTS.json")
    assert "produced" not in first[0]  # type: ignore[index]
    assert second == [{**first[0], "produced": False}]  # type: ignore[index,dict-item]
    capsys.readouterr()
    assert main(["validate", "--run-dir", f"{RUNS}/r2"]) == 1
    assert "COMMAND_FAILED: RUN_INFO.json: the command exited 127 (command not found)" in codes_of(capsys)


def test_not_restored_has_its_own_exit_code(tmp_path: Path, monkeypatch) -> None:
    repo(tmp_path, monkeypatch)
    leak = ["run", "-q", "--catalytic-domains", "scratch", "--", "sh", "-c", "echo x > scratch/leak"]
    assert main(leak) == EXIT_NOT_RESTORED == 4
    # A command's own 4 (domains restored) is never mistaken for it.
    assert main(["run", "-q", "--catalytic-domains", "scratch", "--", "sh", "-c", "exit 4"]) == 1
    assert main(["run", "-q", "--catalytic-domains", "scratch", "--", "sh", "-c", "exit 1"]) == 1


def test_ci_loop_two_builds_stays_green(tmp_path: Path, monkeypatch, capsys) -> None:
    """The README's CI recipe, twice, with the runs root from catalytic.toml: validate --all stays green."""
    root = repo(tmp_path, monkeypatch)
    (root / "catalytic.toml").write_text(
        'runs-root = "ci/_runs"\ncatalytic-domains = ["scratch"]\n'
        f'durable-outputs = ["{OUT}"]\nallowed-roots = ["CORTEX/_generated"]\n'
    )
    build = f"echo build-$BUILD > {OUT}"
    for number in (1, 2):
        monkeypatch.setenv("BUILD", str(number))
        assert main(["run", "-q", "--run-id", f"build-{number}", "--", "sh", "-c", build]) == 0
        capsys.readouterr()
        assert main(["validate", "--all"]) == 0, capsys.readouterr().out
    out = capsys.readouterr()
    assert "PASS: build-1" in out.out and "PASS: build-2" in out.out
    assert "Superseded: 1 output(s) produced again by a later run (build-2)" in out.out
    # A third run that leaves the output as it was does not take over: build-2 still vouches for it.
    assert main(["run", "-q", "--run-id", "build-3", "--", "true"]) == 0
    assert main(["validate", "--all", "--json"]) == 0
    reports = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)["reports"]}
    assert reports["build-1"]["superseded"] == [{"path": OUT, "by": "build-2"}]
    assert reports["build-2"]["superseded"] == []
    assert reports["build-3"]["superseded"] == [{"path": OUT, "by": "build-2"}]
    # The output changed behind the ledgers' back: the run that produced it last fails, alone.
    (root / OUT).write_text("tampered\n")
    assert main(["validate", "--all", "--json"]) == 1
    reports = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)["reports"]}
    assert [e["code"] for e in reports["build-2"]["errors"]] == ["OUTPUT_CHANGED"]
    assert reports["build-1"]["passed"] and reports["build-3"]["passed"]
