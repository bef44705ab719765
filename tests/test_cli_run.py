"""End-to-end tests of ``catalytic run`` through the CLI, in-process and as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from catalytic.cli import main

# Workspaces laid out like the seed's project: ledgers in CONTRACTS/_runs (see conftest.seed_layout).
pytestmark = pytest.mark.usefixtures("seed_layout")


PY = sys.executable
DOMAIN = "CORTEX/_generated/_tmp"


def seed_workspace(root: Path) -> Path:
    """A workspace shaped like the seed's proof of concept."""
    (root / DOMAIN).mkdir(parents=True)
    (root / DOMAIN / "keep.txt").write_text("scratch\n")
    (root / "CORTEX" / "cortex.build.py").write_text(
        "from pathlib import Path\n"
        "tmp = Path('CORTEX/_generated/_tmp/work.json')\n"
        "tmp.write_text('{}')\n"
        "Path('CORTEX/_generated/cortex.json').write_text('{\"docs\": 1}')\n"
        "Path('CORTEX/_generated/cortex.db').write_bytes(b'db')\n"
        "tmp.unlink()\n"
    )
    return root


def seed_args(run_id: str = "cortex-build-demo", script: str = "CORTEX/cortex.build.py") -> list[str]:
    return [
        "run",
        "--run-id",
        run_id,
        "--catalytic-domains",
        DOMAIN,
        "--durable-outputs",
        "CORTEX/_generated/cortex.json",
        "CORTEX/_generated/cortex.db",
        "--intent",
        "Build cortex index",
        "--",
        PY,
        script,
    ]


def read(ledger: Path, name: str) -> object:
    return json.loads((ledger / name).read_text(encoding="utf-8"))


def test_seed_usage_verbatim_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    seed_workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(seed_args()) == 0
    ledger = tmp_path / "CONTRACTS/_runs/cortex-build-demo"
    assert sorted(p.name for p in ledger.iterdir()) == sorted(
        [
            "RUN_INFO.json",
            "PRE_MANIFEST.json",
            "POST_MANIFEST.json",
            "PRE_MODES.json",
            "POST_MODES.json",
            "RESTORE_DIFF.json",
            "OUTPUTS.json",
            "STATUS.json",
            "LEDGER_DIGEST.json",
        ]
    )
    status = read(ledger, "STATUS.json")
    assert status["status"] == "restored" and status["restoration_verified"] is True
    assert read(ledger, "RESTORE_DIFF.json") == {DOMAIN: {"added": {}, "removed": {}, "changed": {}}}
    info = read(ledger, "RUN_INFO.json")
    assert info["intent"] == "Build cortex index"
    assert info["durable_output_roots"] == ["CORTEX/_generated/cortex.json", "CORTEX/_generated/cortex.db"]
    assert info["command"] == [PY, "CORTEX/cortex.build.py"]
    assert info["exit_code"] == 0 and info["hash_algorithm"] == "sha256"
    assert set(info["timings"]) == {
        "preflight",
        "snapshot_pre",
        "execute",
        "snapshot_post",
        "verify",
        "record",
    }
    outputs = read(ledger, "OUTPUTS.json")
    assert [o["path"] for o in outputs] == ["CORTEX/_generated/cortex.db", "CORTEX/_generated/cortex.json"]
    import hashlib

    assert outputs[0]["sha256"] == hashlib.sha256(b"db").hexdigest()
    err = capsys.readouterr().err
    assert "[catalytic] Phase 1: Capturing pre-snapshots..." in err
    assert "[catalytic] SUCCESS: Catalytic domains fully restored" in err
    # Every ledger file is canonical JSON: sorted keys, no spaces, one newline at the end.
    for path in ledger.iterdir():
        text = path.read_text(encoding="utf-8")
        assert text.endswith("\n") and not text.endswith("\n\n")
        assert (
            json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False) + ("\n")
            == text
        )


def test_seed_usage_as_subprocess_leaky(tmp_path: Path) -> None:
    seed_workspace(tmp_path)
    (tmp_path / "CORTEX/leaky.py").write_text(
        "from pathlib import Path\nPath('CORTEX/_generated/_tmp/leftover_temp_file.txt').write_text('x')\n"
    )
    proc = subprocess.run(
        [PY, "-m", "catalytic", *seed_args("leaky", "CORTEX/leaky.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 4, proc.stderr
    assert "FAILURE: Catalytic domains NOT restored" in proc.stderr
    assert f"added   {DOMAIN}/leftover_temp_file.txt" in proc.stderr
    diff = read(tmp_path / "CONTRACTS/_runs/leaky", "RESTORE_DIFF.json")
    assert list(diff[DOMAIN]["added"]) == ["leftover_temp_file.txt"]
    assert read(tmp_path / "CONTRACTS/_runs/leaky", "STATUS.json")["status"] == "dirty"


def _marker_command(tmp_path: Path) -> list[str]:
    return ["--", PY, "-c", f"open({str(tmp_path / 'RAN')!r}, 'w').close()"]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--catalytic-domains", "../outside"], "TRAVERSAL"),
        (["--catalytic-domains", "/etc"], "TRAVERSAL"),
        (["--catalytic-domains", "link_out"], "ESCAPE"),
        (["--durable-outputs", "CORTEX/_generated_x/out.json"], "NOT_ALLOWED"),
        (["--durable-outputs", "elsewhere/out.json"], "NOT_ALLOWED"),
        (["--catalytic-domains", "CANON/tmp"], "FORBIDDEN"),
        (["--catalytic-domains", "."], "FORBIDDEN"),
        (["--catalytic-domains", "scratch", "scratch/sub"], "OVERLAP"),
        (["--catalytic-domains", "CORTEX/_generated", "--durable-outputs", "CORTEX/_generated/x"], "OVERLAP"),
        (["--catalytic-domains", "CONTRACTS/_runs/x"], "OVERLAP"),
        (["--run-id", "../evil"], "BAD_RUN_ID"),
        (["--run-id", "a/b"], "BAD_RUN_ID"),
        (["--run-id", "_cache"], "BAD_RUN_ID"),
        (["--run-id", "LEDGER.jsonl"], "BAD_RUN_ID"),
        (["--run-id", "ledger.JSONL"], "BAD_RUN_ID"),
        (["--run-id", "taken", "--catalytic-domains", "scratch"], "EXISTS"),
        (["--runs-root", "a_file"], "BAD_RUNS_ROOT"),
        (["--runs-root", "a_file/runs"], "BAD_RUNS_ROOT"),
        (["--runs-root", "broken_runs"], "BAD_RUNS_ROOT"),
    ],
)
def test_preflight_codes_exit_2_and_nothing_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, args: list[str], code: str
) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (tmp_path / "link_out").symlink_to(outside)
    (tmp_path / "CONTRACTS/_runs/taken").mkdir(parents=True)
    (tmp_path / "scratch/sub").mkdir(parents=True)
    (tmp_path / "a_file").write_text("not a directory\n")
    (tmp_path / "broken_runs/LEDGER.jsonl").mkdir(parents=True)  # left by a run named after the chain
    monkeypatch.chdir(tmp_path)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    rc = main(["run", *args, *_marker_command(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"catalytic: error: {code}: " in err
    assert not (tmp_path / "RAN").exists(), "the command must not start when preflight fails"
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before, "preflight must not write anything"


def test_preflight_reports_every_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    rc = main(
        [
            "run",
            "--run-id",
            "bad id",
            "--catalytic-domains",
            "../x",
            "--durable-outputs",
            "nope/x",
            "--",
            "true",
        ]
    )
    assert rc == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("catalytic: error:")]
    codes = sorted(line.split(": ")[2] for line in lines)
    assert codes == ["BAD_RUN_ID", "NOT_ALLOWED", "TRAVERSAL"]


def test_missing_domain_is_recorded_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = ["run", "-q", "--run-id", "r1", "--allow-absent", "--catalytic-domains", "nothing/here"]
    assert main([*run, "--", "true"]) == 0
    ledger = tmp_path / "CONTRACTS/_runs/r1"
    assert read(ledger, "PRE_MANIFEST.json") == {"nothing/here": {}}
    assert read(ledger, "RUN_INFO.json")["absent_domains"] == ["nothing/here"]


def test_domain_created_by_command_is_dirty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rc = main(
        [
            "run",
            "-q",
            "--run-id",
            "r1",
            "--allow-absent",
            "--catalytic-domains",
            "scratch",
            "--",
            "mkdir",
            "scratch",
        ]
    )
    assert rc == 4
    diff = read(tmp_path / "CONTRACTS/_runs/r1", "RESTORE_DIFF.json")
    assert diff == {"scratch": {"added": {".": "dir"}, "removed": {}, "changed": {}}}


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ([PY, "-c", "raise SystemExit(7)"], 7),
        (["definitely-not-a-command-xyz"], 127),
        ([PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], 128 + 9),
    ],
)
def test_command_exit_code_passes_through_when_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], expected: int
) -> None:
    (tmp_path / "scratch").mkdir()
    monkeypatch.chdir(tmp_path)
    rc = main(["run", "-q", "--run-id", "r1", "--catalytic-domains", "scratch", "--", *command])
    assert rc == expected
    info = read(tmp_path / "CONTRACTS/_runs/r1", "RUN_INFO.json")
    assert info["exit_code"] == expected
    assert read(tmp_path / "CONTRACTS/_runs/r1", "STATUS.json")["status"] == "restored"


def test_not_executable_is_126(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "-q", "--allow-no-domains", "--run-id", "r1", "--", str(script)]) == 126


def test_dirty_wins_over_command_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "scratch").mkdir()
    monkeypatch.chdir(tmp_path)
    rc = main(
        [
            "run",
            "-q",
            "--run-id",
            "r1",
            "--catalytic-domains",
            "scratch",
            "--",
            "sh",
            "-c",
            "touch scratch/x; exit 5",
        ]
    )
    assert rc == 4


def test_json_summary_and_quiet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    (tmp_path / "scratch").mkdir()
    monkeypatch.chdir(tmp_path)
    rc = main(
        [
            "run",
            "-q",
            "--json",
            "--run-id",
            "r1",
            "--catalytic-domains",
            "scratch",
            "--",
            "touch",
            "scratch/new",
        ]
    )
    assert rc == 4
    captured = capsys.readouterr()
    assert captured.err == ""
    summary = json.loads(captured.out)
    assert summary["status"] == "dirty" and summary["exit_status"] == 4 and summary["exit_code"] == 0
    assert summary["diff"]["scratch"]["added"] == {
        "new": read(tmp_path / "CONTRACTS/_runs/r1", "POST_MANIFEST.json")["scratch"]["new"]
    }


def test_generated_run_ids_sort_by_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for _ in range(3):
        assert main(["run", "-q", "--allow-no-domains", "--", "true"]) == 0
    # Names starting with "_" (the lock directory) are never runs (see catalytic validate --all).
    ids = [
        p.name for p in (tmp_path / "CONTRACTS/_runs").iterdir() if not p.name.startswith("_") and p.is_dir()
    ]
    created = sorted(
        ids, key=lambda i: (tmp_path / "CONTRACTS/_runs" / i / "RUN_INFO.json").stat().st_mtime_ns
    )
    assert sorted(ids) == created and len(set(ids)) == 3


def test_no_command_is_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--run-id", "r1"]) == 2
    assert "no command given" in capsys.readouterr().err
    assert not (tmp_path / "CONTRACTS/_runs").exists()


def test_unknown_option_is_usage_error(capsys) -> None:
    assert main(["run", "--no-such-flag", "--", "true"]) == 2
    assert "USAGE" in capsys.readouterr().err


def test_root_option_and_cwd_inherited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = tmp_path / "ws"
    (ws / "scratch").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rc = main(
        [
            "run",
            "-q",
            "--root",
            str(ws),
            "--run-id",
            "r1",
            "--catalytic-domains",
            "scratch",
            "--",
            "touch",
            "here",
        ]
    )
    assert rc == 0
    assert (elsewhere / "here").exists(), "the command runs in the caller's working directory"
    info = read(ws / ".catalytic/runs/r1", "RUN_INFO.json")  # no seed layout there: the default profile
    assert info["root"] == str(ws) and info["cwd"] == str(elsewhere)


def test_config_file_and_flag_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "scratch").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "catalytic.toml").write_text(
        'catalytic-domains = ["scratch"]\nintent = "from config"\nruns-root = "ledgers"\n'
        'allowed-roots = ["ledgers", "out"]\n'
    )
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "run",
                "-q",
                "--run-id",
                "r1",
                "--durable-outputs",
                "out/a",
                "--",
                "sh",
                "-c",
                "mkdir -p out; echo 1 > out/a",
            ]
        )
        == 0
    )
    info = read(tmp_path / "ledgers/r1", "RUN_INFO.json")
    assert info["catalytic_domains"] == ["scratch"] and info["intent"] == "from config"
    assert (
        main(
            ["run", "-q", "--run-id", "r2", "--catalytic-domains", "other", "--intent", "flag", "--", "true"]
        )
        == 0
    )
    info = read(tmp_path / "ledgers/r2", "RUN_INFO.json")
    assert info["catalytic_domains"] == ["other"] and info["intent"] == "flag"


def test_pyproject_tool_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "scratch").mkdir()
    (tmp_path / "pyproject.toml").write_text('[tool.catalytic]\ncatalytic_domains = ["scratch"]\n')
    monkeypatch.chdir(tmp_path)
    assert main(["run", "-q", "--allow-no-domains", "--run-id", "r1", "--", "touch", "scratch/x"]) == 4


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('catalytic-domains = "scratch"\n', "must be a list of strings"),
        ("no_such_key = 1\n", "unknown key 'no_such_key'"),
        ('determinism = "sometimes"\n', "determinism must be one of"),
        ("this is not toml\n", "cannot be read"),
    ],
)
def test_bad_config_is_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, text: str, needle: str
) -> None:
    (tmp_path / "catalytic.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--run-id", "r1", "--", "true"]) == 2
    err = capsys.readouterr().err
    assert "BAD_CONFIG" in err and needle in err
    assert not (tmp_path / "CONTRACTS/_runs").exists()


def test_two_config_sources_conflict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    (tmp_path / "catalytic.toml").write_text('intent = "a"\n')
    (tmp_path / "pyproject.toml").write_text('[tool.catalytic]\nintent = "b"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--", "true"]) == 2
    assert "CONFIG_CONFLICT" in capsys.readouterr().err


def test_internal_error_is_exit_3_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import catalytic.runtime as runtime

    def boom(*_args: object, **_kwargs: object) -> object:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(runtime, "write_ledger", boom)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "-q", "--allow-no-domains", "--run-id", "r1", "--", "true"]) == 3
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: disk on fire" in err and "Traceback" not in err
    assert not (tmp_path / "CONTRACTS/_runs/r1/STATUS.json").exists()


def test_version_flag(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        from catalytic.cli import build_parser

        build_parser().parse_args(["--version"])
    assert exc.value.code == 0
    assert "catalytic 1.0.0" in capsys.readouterr().out


def test_python_api_returns_result(tmp_path: Path) -> None:
    import catalytic

    (tmp_path / "scratch").mkdir()
    messages: list[str] = []
    result = catalytic.run(
        ["true"], root=tmp_path, run_id="api", catalytic_domains=["scratch"], progress=messages.append
    )
    assert (
        result.restored and result.exit_status == 0 and result.ledger_dir == tmp_path / "CONTRACTS/_runs/api"
    )
    assert any(m.startswith("Phase 4") for m in messages)
    with pytest.raises(catalytic.DeclarationError) as exc:
        catalytic.run(["true"], root=tmp_path, run_id="api", catalytic_domains=["scratch"])
    assert exc.value.code == "EXISTS"


def test_exec_with_env_and_stdin_inherited(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            PY,
            "-m",
            "catalytic",
            "run",
            "-q",
            "--allow-no-domains",
            "--run-id",
            "r1",
            "--",
            "sh",
            "-c",
            'read line; echo "$line-$FOO"',
        ],
        cwd=tmp_path,
        input="hello\n",
        capture_output=True,
        text=True,
        env={**os.environ, "FOO": "bar"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello-bar\n"


def test_every_name_catalytic_keeps_in_the_runs_root_is_reserved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from catalytic.isolation.journal import COMMITS_DIR
    from catalytic.isolation.store import STORE_DIR
    from catalytic.ledger import format as fmt
    from catalytic.locks import LOCK_DIR
    from catalytic.snapshot.domains import CACHE_DIR

    monkeypatch.chdir(tmp_path)
    for name in (fmt.CHAIN_FILE, fmt.CHAIN_LOCK, CACHE_DIR, STORE_DIR, COMMITS_DIR, LOCK_DIR):
        assert fmt.reserved(name), name
        assert main(["run", "-q", "--allow-no-domains", "--run-id", name, *_marker_command(tmp_path)]) == 2, (
            name
        )
        assert "BAD_RUN_ID" in capsys.readouterr().err
    assert not (tmp_path / "RAN").exists()
    assert not (tmp_path / "CONTRACTS/_runs").exists()


def test_a_runs_root_broken_by_a_reserved_run_id_fails_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # What an older catalytic left after `run --run-id LEDGER.jsonl`: a ledger where the chain belongs.
    monkeypatch.chdir(tmp_path)
    assert main(["run", "-q", "--allow-no-domains", "--run-id", "r0", "--", "true"]) == 0
    assert main(["run", "-q", "--allow-no-domains", "--run-id", "r1", "--", "true"]) == 0
    runs = tmp_path / "CONTRACTS/_runs"
    (runs / "LEDGER.jsonl").unlink()
    (runs / "r1").rename(runs / "LEDGER.jsonl")
    capsys.readouterr()

    assert main(["run", "-q", "--allow-no-domains", "--run-id", "r2", *_marker_command(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "BAD_RUNS_ROOT" in err and "LEDGER.jsonl is not a regular file" in err
    assert not (tmp_path / "RAN").exists() and not (runs / "r2").exists()

    assert main(["validate", "--all"]) == 1
    out = capsys.readouterr().out
    assert "CHAIN_MALFORMED" in out and "LEDGER.jsonl is not a regular file" in out

    assert main(["runs", "--json"]) == 0
    assert [row["run_id"] for row in json.loads(capsys.readouterr().out)] == ["r0"]
