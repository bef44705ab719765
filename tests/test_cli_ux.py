"""What a newcomer and a CI pipeline meet first: machine-readable output that stays machine-readable,
closed pipes, a bare ``catalytic``, a command given without ``--``, and the README's and Makefile's
own instructions, run as written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from catalytic.cli import main
from catalytic.errors import EXIT_INTERNAL, EXIT_PIPE, EXIT_USAGE

# Workspaces laid out like the seed's project: ledgers in CONTRACTS/_runs (see conftest.seed_layout).
pytestmark = pytest.mark.usefixtures("seed_layout")


REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
CATALYTIC = [PY, "-m", "catalytic"]
#: The child prints on both streams, so any mixing with the summary shows.
NOISY = ["sh", "-c", "echo hi; echo '{not json'; echo err >&2"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


def test_run_json_summary_parses_through_a_real_pipeline(tmp_path: Path) -> None:
    script = (
        "set -o pipefail; "
        f"{PY} -m catalytic run --json --allow-no-domains -- sh -c 'echo hi; echo \"{{not json\"' "
        f"| {PY} -c 'import json, sys; print(json.load(sys.stdin)[\"status\"])'"
    )
    proc = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=_env(), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "restored\n"
    # The command's output is not lost: it goes to stderr, in order, next to the progress lines.
    assert "hi\n{not json\n" in proc.stderr


def test_run_json_stdout_holds_the_summary_alone(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*CATALYTIC, "run", "-q", "--allow-no-domains", "--json", "--", *NOISY],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "restored"
    assert summary["exit_code"] == 0
    assert proc.stderr == "hi\n{not json\nerr\n"


def test_run_json_file_leaves_the_command_stdout_alone(tmp_path: Path) -> None:
    (tmp_path / "reports").mkdir()
    proc = subprocess.run(
        [*CATALYTIC, "run", "-q", "--allow-no-domains", "--json-file", "reports/run.json", "--", *NOISY],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hi\n{not json\n"
    assert proc.stderr == "err\n"
    summary = json.loads((tmp_path / "reports/run.json").read_text(encoding="utf-8"))
    assert summary["status"] == "restored"
    assert [p.name for p in (tmp_path / "reports").iterdir()] == ["run.json"]  # no temporary left


def test_run_json_file_is_written_for_a_failed_command_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert (
        main(["run", "-q", "--allow-no-domains", "--json-file", "run.json", "--", "sh", "-c", "exit 5"]) == 5
    )
    summary = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    assert summary["exit_code"] == 5


def test_run_json_file_in_a_missing_directory_is_refused_before_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["run", "-q", "--allow-no-domains", "--json-file", "nowhere/run.json", "--", "touch", "ran"])
    assert code == EXIT_USAGE
    assert "--json-file" in capsys.readouterr().err
    assert not (tmp_path / "ran").exists()


def _with_closed_stdout(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run catalytic with a stdout pipe whose reader has already gone (``| head -0`` without the race)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [*CATALYTIC, *argv],
            cwd=cwd,
            env=_env(),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "-q", "--allow-no-domains", "--json", "--", "true"],
        ["runs"],
        ["runs", "--json"],
        ["--help"],
        ["run", "--help"],
    ],
    ids=["run-json", "runs", "runs-json", "help", "run-help"],
)
def test_a_closed_stdout_ends_quietly_with_the_sigpipe_code(tmp_path: Path, argv: list[str]) -> None:
    for run_id in ("first", "second"):  # something for `runs` to list
        subprocess.run(
            [*CATALYTIC, "run", "-q", "--allow-no-domains", "--run-id", run_id, "--", "true"],
            cwd=tmp_path,
            env=_env(),
            check=True,
        )
    proc = _with_closed_stdout(argv, tmp_path)
    assert proc.returncode == EXIT_PIPE == 141
    assert "Traceback" not in proc.stderr
    assert "error" not in proc.stderr
    assert "Exception ignored" not in proc.stderr


def test_a_broken_pipe_that_is_not_stdout_stays_an_internal_error(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    def broken(_args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")  # e.g. a worker process that died

    monkeypatch.setattr("catalytic.cli.runs.execute_cli", broken)
    assert main(["runs"]) == EXIT_INTERNAL
    assert "internal error: BrokenPipeError" in capfd.readouterr().err


def test_catalytic_alone_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    for name, summary in (("run", "run a command under"), ("validate", ""), ("runs", "")):
        assert re.search(rf"^\s+{name}\s+{summary}", err, flags=re.M), (name, err)


@pytest.mark.parametrize(
    "argv",
    [
        ["--catalytic-domains", "x", "sh", "-c", "echo"],
        ["-d", "x", "sh", "-c", "echo"],
        ["-q", "--durable-outputs", "out", "make", "-k"],
        ["--catalytic-domains", "x", "ls"],
    ],
    ids=["long-flag", "unknown-short-flag", "after-outputs", "swallowed"],
)
def test_a_command_without_double_dash_gets_the_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", *argv]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "put it after '--', e.g. catalytic run ... -- make build" in err, err
    assert not (tmp_path / "CONTRACTS/_runs").exists()


def _readme_block(heading: str) -> str:
    """The first bash block after ``heading`` in the README."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split(f"\n{heading}\n", 1)[1]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0]


def _run_block(block: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    lines = [line for line in block.replace("\\\n", " ").splitlines() if not line.startswith("pip install")]
    bindir = Path(PY).parent
    env = {**_env(), "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(lines)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_readme_use_example_runs_as_written(tmp_path: Path) -> None:
    """Pasted anywhere (the install line aside), the README's first example works: an ordinary
    repository, one flag, then the whole repository as the domain."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    proc = _run_block(_readme_block("## Use"), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("[catalytic-validator] PASS: 2") == 2, proc.stdout  # run ids start with the year
    assert "profile default" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [".catalytic", ".git", "build"]


def test_readme_seed_layout_example_runs_as_written(tmp_path: Path) -> None:
    """Pasted at the repository root, the seed layout's commands work verbatim."""
    shutil.copytree(
        REPO / "examples",
        tmp_path / "examples",
        ignore=shutil.ignore_patterns("CONTRACTS", "cortex.json", "cortex.db", "index_temp_*", "__pycache__"),
    )
    proc = _run_block(_readme_block("### The seed's layout"), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS: cortex-build-demo" in proc.stdout
    assert (tmp_path / "examples/cortex/CONTRACTS/_runs/cortex-build-demo").is_dir()


def test_make_demo_installs_only_the_package(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("needs make")
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")

    def planned(target: str) -> str:
        proc = subprocess.run(
            ["make", "-n", target], cwd=tmp_path, capture_output=True, text=True, check=True
        )
        return proc.stdout

    demo = planned("demo")
    assert "install -q -e ." in demo
    assert ".[dev]" not in demo
    assert "install -q -e '.[dev]'" in planned("test")


def test_pyproject_license_is_an_spdx_expression() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "MIT"
    for pattern in project["project"]["license-files"]:
        assert list(REPO.glob(pattern)), pattern
    requires = project["build-system"]["requires"]
    assert "setuptools>=77" in requires  # the first release that reads the SPDX string form
