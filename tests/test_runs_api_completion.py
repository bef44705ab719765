"""``catalytic runs``, the ``catalytic_domains`` context manager and shell completion."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import catalytic
from catalytic.cli import build_parser, main
from catalytic.cli.completion import commands, script
from catalytic.cli.runs import parse_since
from catalytic.ledger import format as fmt
from catalytic.ledger.canonical import dumps, loads
from catalytic.ledger.integrity import check_chain, check_seal

# Workspaces laid out like the seed's project: ledgers in CONTRACTS/_runs (see conftest.seed_layout).
pytestmark = pytest.mark.usefixtures("seed_layout")


def _runs(tmp_path: Path) -> None:
    (tmp_path / "scratch").mkdir()
    catalytic.run(["true"], root=tmp_path, run_id="a-clean", catalytic_domains=["scratch"], intent="first")
    catalytic.run(
        ["sh", "-c", f"touch {tmp_path}/scratch/left"],
        root=tmp_path,
        run_id="b-dirty",
        catalytic_domains=["scratch"],
        intent="second",
    )
    # An old run, and a run that never finished (no STATUS.json).
    old = tmp_path / "CONTRACTS/_runs/0-old"
    shutil.copytree(tmp_path / "CONTRACTS/_runs/a-clean", old)
    info = loads((old / fmt.RUN_INFO).read_bytes())
    info["timestamp"], info["finished_at"] = "2020-01-01T00:00:00.000000Z", "2020-01-01T00:00:02.500000Z"
    (old / fmt.RUN_INFO).write_text(dumps(info))
    crashed = tmp_path / "CONTRACTS/_runs/c-crashed"
    shutil.copytree(tmp_path / "CONTRACTS/_runs/a-clean", crashed)
    (crashed / fmt.STATUS).unlink()


def test_runs_json_lists_newest_first_with_filters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _runs(tmp_path)
    assert main(["runs", "--root", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in rows if r["run_id"] == "c-crashed"] == ["incomplete"]
    assert rows[-1]["run_id"] == "0-old"
    assert rows[-1]["duration"] == 2.5
    assert {r["run_id"]: r["status"] for r in rows}["b-dirty"] == "dirty"
    # 0-old was copied in, not sealed by catalytic: the runs root's chain does not know it.
    assert {r["run_id"]: r["status"] for r in rows}["0-old"] == "unchained"
    first = next(r for r in rows if r["run_id"] == "a-clean")
    assert first["intent"] == "first" and first["exit_code"] == 0 and first["isolation"] == "none"
    times = [r["timestamp"] for r in rows]
    assert times == sorted(times, reverse=True)

    assert main(["runs", "--root", str(tmp_path), "--json", "--dirty"]) == 0
    assert {r["run_id"] for r in json.loads(capsys.readouterr().out)} == {"0-old", "b-dirty", "c-crashed"}
    assert main(["runs", "--root", str(tmp_path), "--json", "--since", "1d"]) == 0
    assert "0-old" not in {r["run_id"] for r in json.loads(capsys.readouterr().out)}
    assert main(["runs", "--root", str(tmp_path), "--json", "--since", "2019-12-31"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 4


def test_runs_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _runs(tmp_path)
    assert main(["runs", "--root", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["RUN", "ID", "STARTED"]
    assert lines[-1].startswith("0-old") and "2.50s" in lines[-1]
    assert main(["runs", "--root", str(tmp_path), "--since", "yesterday"]) == 2


def test_parse_since() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 10, tzinfo=UTC)
    assert parse_since("2d", now) == datetime(2026, 1, 8, tzinfo=UTC)
    assert parse_since("2026-01-01T12:00:00", now) == datetime(2026, 1, 1, 12, tzinfo=UTC)


def test_context_manager_clean_and_dirty(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with catalytic.catalytic_domains(["scratch"], root=tmp_path, run_id="cm-clean") as check:
        (scratch / "t").write_text("temp")
        (scratch / "t").unlink()
    assert check.result.restored and check.result.exit_status == 0
    with catalytic.catalytic_domains(["scratch"], root=tmp_path, run_id="cm-dirty") as dirty:
        (scratch / "left").write_text("x")
    assert not dirty.restored
    assert list(dirty.result.diff["scratch"].added) == ["left"]
    status = loads((dirty.result.ledger_dir / fmt.STATUS).read_bytes())
    assert status["status"] == "dirty"
    assert check_seal(dirty.result.ledger_dir, require_digest=True) == []
    assert check_chain(tmp_path / "CONTRACTS/_runs") == []


def test_context_manager_records_a_raising_block(tmp_path: Path) -> None:
    (tmp_path / "scratch").mkdir()
    with (
        pytest.raises(ValueError, match="boom"),
        catalytic.catalytic_domains(["scratch"], root=tmp_path, run_id="cm-raise") as check,
    ):
        raise ValueError("boom")
    assert check.result.exit_code == 1
    assert check.result.restored
    assert loads((check.result.ledger_dir / fmt.RUN_INFO).read_bytes())["exit_code"] == 1


def _bash_complete(line: str) -> list[str]:
    words = line.split(" ")
    program = (
        script("bash")
        + f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        + "_catalytic; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    out = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_bash_completion_completes_subcommands_options_and_choices() -> None:
    assert {"run", "validate", "runs", "export", "keygen", "completion"} <= set(_bash_complete("catalytic "))
    assert _bash_complete("catalytic ru") == ["run", "runs"]
    assert "--sign-key" in _bash_complete("catalytic run --s")
    assert _bash_complete("catalytic run --determinism bo") == ["bounded_nondeterministic"]
    assert _bash_complete("catalytic completion z") == ["zsh"]


def test_every_option_of_the_parser_is_in_every_script() -> None:
    _top, cmds = commands(build_parser())
    for shell in ("bash", "zsh", "fish"):
        text = script(shell)
        for cmd in cmds:
            assert cmd.name in text
            for option in cmd.options:
                long = [f for f in option.flags if f.startswith("--")]
                if shell == "fish":
                    assert f"-l {long[0][2:]}" in text
                else:
                    assert long[0] in text


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_parses() -> None:
    subprocess.run(["zsh", "-n", "-c", script("zsh")], check=True)


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_script_parses() -> None:
    subprocess.run(["fish", "--no-execute", "-c", script("fish")], check=True)
