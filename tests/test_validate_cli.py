"""``catalytic validate`` in-process: the seed's PASS / FAIL blocks, --json, --all and exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from catalytic.cli import main
from ledger_factory import build_ledger, build_seed_ledger

# Workspaces laid out like the seed's project: ledgers in CONTRACTS/_runs (see conftest.seed_layout).
pytestmark = pytest.mark.usefixtures("seed_layout")


def test_pass_block_is_the_seeds(tmp_path: Path, capsys: Any) -> None:
    ledger = build_seed_ledger(tmp_path)
    assert main(["validate", "--run-dir", str(ledger.run_dir)]) == 0
    out = capsys.readouterr().out
    assert out == (
        "[catalytic-validator] PASS: cortex-build-demo\n"
        "  Intent: Build cortex index\n"
        "  Exit code: 0\n"
        "  Outputs: 2\n"
    )


def test_fail_block_lists_every_error(tmp_path: Path, capsys: Any) -> None:
    ledger = build_ledger(tmp_path)
    (tmp_path / "CORTEX/_generated/cortex.json").unlink()
    ledger.path("STATUS.json").unlink()
    assert main(["validate", "--run-dir", str(ledger.run_dir)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[catalytic-validator] FAIL: cortex-build-demo"
    assert "  INCOMPLETE: STATUS.json is missing: the run never finished" in lines
    assert any(
        line.startswith("  OUTPUT_MISSING: OUTPUTS.json: output 'CORTEX/_generated/cortex.json'")
        for line in lines
    )
    assert len(lines) == 3


def test_hostile_strings_stay_on_one_line(tmp_path: Path, capsys: Any) -> None:
    ledger = build_ledger(tmp_path)
    ledger.edit("RUN_INFO.json", lambda d: d.__setitem__("intent", "two\nlines \udcff"))
    assert main(["validate", "--run-dir", str(ledger.run_dir)]) == 0
    out = capsys.readouterr().out
    assert "  Intent: two\\nlines \\udcff\n" in out
    assert len(out.splitlines()) == 4


def test_json_output_is_one_canonical_document(tmp_path: Path, capsys: Any) -> None:
    good = build_ledger(tmp_path, "good")
    assert main(["validate", "--json", "--run-dir", str(good.run_dir), str(tmp_path / "missing")]) == 1
    out = capsys.readouterr().out
    document = json.loads(out)
    assert document["passed"] is False
    assert [r["passed"] for r in document["reports"]] == [True, False]
    assert document["reports"][1]["errors"] == [
        {"code": "NOT_FOUND", "message": f"run directory {str(tmp_path / 'missing')!r} does not exist"}
    ]
    assert out.count("\n") == 1 and ": " not in out  # canonical: no white space between tokens


def test_all_validates_every_run_and_skips_private_entries(tmp_path: Path, capsys: Any) -> None:
    build_ledger(tmp_path, "run-a")
    bad = build_ledger(tmp_path / "other", "run-b")
    runs = tmp_path / "CONTRACTS/_runs"
    bad.edit("STATUS.json", lambda d: d.__setitem__("restoration_verified", False))
    bad.run_dir.rename(runs / "run-b")
    (runs / "_quarantine").mkdir()
    (runs / ".tmp").mkdir()
    assert main(["validate", "--all", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "[catalytic-validator] PASS: run-a" in out
    assert "[catalytic-validator] FAIL: run-b" in out
    assert "_quarantine" not in out and ".tmp" not in out


def test_all_with_explicit_runs_root_and_quiet(tmp_path: Path, capsys: Any) -> None:
    build_ledger(tmp_path, "run-a", runs_root="ledgers")
    assert main(["validate", "-q", "--all", "ledgers", "--root", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_all_on_an_empty_runs_root_is_a_usage_error(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "CONTRACTS/_runs/_private").mkdir(parents=True)
    assert main(["validate", "--all", "--root", str(tmp_path)]) == 2
    assert "NO_RUNS: no runs under" in capsys.readouterr().err


def test_all_on_a_missing_runs_root_is_a_usage_error(tmp_path: Path, capsys: Any) -> None:
    assert main(["validate", "--all", "--root", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_missing_run_dir_is_reported_as_fail(tmp_path: Path, capsys: Any) -> None:
    assert main(["validate", "--run-dir", str(tmp_path / "gone")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("[catalytic-validator] FAIL: gone\n  NOT_FOUND: ")


@pytest.mark.parametrize("argv", [["validate"], ["validate", "--run-dir", "x", "--all"]])
def test_run_dir_and_all_are_exclusive_and_required(argv: list[str], capsys: Any) -> None:
    assert main(argv) == 2
    assert "USAGE" in capsys.readouterr().err


def test_no_outputs_check_and_allowed_roots_flags(tmp_path: Path, capsys: Any) -> None:
    ledger = build_ledger(tmp_path)
    (tmp_path / "CORTEX/_generated/cortex.json").unlink()
    run = ["validate", "--run-dir", str(ledger.run_dir)]
    assert main(run) == 1
    assert main([*run, "--no-outputs-check"]) == 0
    assert main([*run, "--no-outputs-check", "--allowed-roots", "MEMORY/LLM_PACKER/_packs"]) == 1
    assert "NOT_ALLOWED" in capsys.readouterr().out


def test_verbose_adds_the_run_dir(tmp_path: Path, capsys: Any) -> None:
    ledger = build_ledger(tmp_path)
    assert main(["validate", "-v", "--run-dir", str(ledger.run_dir)]) == 0
    assert f"  Run dir: {ledger.run_dir}\n" in capsys.readouterr().out
