"""An empty ``catalytic run`` must stay cheap to start: no heavy module on its path.

The speed itself is measured by ``benchmarks/run.py`` (the empty-domain case); these tests only pin
down what makes it slow when it comes back: a heavy import on the run path, a subcommand module
loaded for nothing, or the process exit losing output.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalytic.policy import valid_run_id

PY = sys.executable
RUN = ["run", "-q", "--catalytic-domains", "d", "--runs-root", "runs", "--", "true"]

#: Never needed by a plain run: optional dependencies and the stdlib modules the run path avoids.
HEAVY = {
    "jsonschema",
    "pathspec",
    "rich",
    "in_toto",
    "cryptography",
    "watchdog",
    "blake3",
    "platform",
    "tomllib",
    "subprocess",
    "tempfile",
    "shutil",
    "sqlite3",
    "json",
    "shlex",
    "asyncio",
    "multiprocessing",
    "concurrent",
    "logging",
    "email",
    "zipfile",
    "tarfile",
    "uuid",
}
#: catalytic modules of other subcommands and of features a plain run does not use.
OTHER_FEATURES = {
    "catalytic.validate",
    "catalytic.ledger.reader",
    "catalytic.ledger.checks",
    "catalytic.ledger.entries",
    "catalytic.api",
    "catalytic.isolation.overlay",
    "catalytic.isolation.rollback",
    "catalytic.isolation.store",
    "catalytic.trace.session",
    "catalytic.trace.log",
    "catalytic.trace.fanotify",
    "catalytic.trace.watch",
    "catalytic.integrations.signing",
    "catalytic.integrations.intoto",
}

PROBE = """
import sys
from catalytic.cli import main
code = main(sys.argv[1:])
names = sorted(sys.modules)
import json
print(json.dumps({"code": code, "modules": names}))
"""


def _modules_of_a_run(ws: Path, *args: str) -> set[str]:
    (ws / "d").mkdir(exist_ok=True)
    proc = subprocess.run([PY, "-c", PROBE, *args], cwd=ws, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["code"] == 0, proc.stderr
    return set(result["modules"])


def _top_level(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules} | modules


#: Modules the snapshot engine needs only once a domain has entries (each ~3 ms with what it pulls in):
#: the store (sqlite3) and spool files that outgrow memory (tempfile, only without O_TMPFILE).
SNAPSHOT_IMPORTS = ("tempfile", "shutil", "sqlite3")


def test_an_empty_run_imports_nothing_heavy(tmp_path: Path) -> None:
    loaded = _top_level(_modules_of_a_run(tmp_path, *RUN))
    assert loaded & HEAVY == set()
    assert loaded & OTHER_FEATURES == set()
    # Only the chosen subcommand's module is imported.
    assert {m for m in loaded if m.startswith("catalytic.cli.")} <= {
        "catalytic.cli.run",
        "catalytic.cli.output",
        "catalytic.cli.locate",  # the workspace root and the paths given relative to the cwd
    }


@pytest.mark.parametrize("module", SNAPSHOT_IMPORTS)
@pytest.mark.parametrize("cache", [True, False])
def test_an_empty_run_needs_no_snapshot_store_modules(tmp_path: Path, module: str, cache: bool) -> None:
    args = RUN if cache else ("run", "--no-cache", *RUN[1:])
    loaded = _top_level(_modules_of_a_run(tmp_path, *args))
    assert module not in loaded


def test_the_config_file_parser_is_loaded_only_when_there_is_a_config_file(tmp_path: Path) -> None:
    (tmp_path / "catalytic.toml").write_text('intent = "configured"\n')
    loaded = _modules_of_a_run(tmp_path, *RUN)
    assert "tomllib" in loaded
    info = next((tmp_path / "runs").glob("*/RUN_INFO.json")).read_text()
    assert json.loads(info)["intent"] == "configured"


def test_the_pattern_matcher_is_loaded_only_when_there_are_excludes(tmp_path: Path) -> None:
    (tmp_path / "d" / "__pycache__").mkdir(parents=True)
    loaded = _modules_of_a_run(tmp_path, "run", "-q", "--exclude", "__pycache__/", *RUN[2:])
    assert "pathspec" in _top_level(loaded)


def test_python_m_catalytic_flushes_output_and_runs_atexit_handlers(tmp_path: Path) -> None:
    # The process skips the interpreter's teardown: what it printed and what atexit handlers do
    # must still happen, and its exit code must be the run's.
    (tmp_path / "d").mkdir()
    script = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: sys.stderr.write('atexit ran\\n'))\n"
        "sys.argv = ['catalytic', *sys.argv[1:]]\n"
        "runpy.run_module('catalytic', run_name='__main__')\n"
    )
    args = ["run", "-q", "--json", "--catalytic-domains", "d", "--runs-root", "runs", "--"]
    ok = subprocess.run(
        [PY, "-c", script, *args, "true"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"] == "restored"
    assert ok.stderr.endswith("atexit ran\n")
    failed = subprocess.run(
        [PY, "-m", "catalytic", *args, "sh", "-c", "exit 7"], cwd=tmp_path, capture_output=True, check=False
    )
    assert failed.returncode == 7
    assert json.loads(failed.stdout)["exit_code"] == 7


@pytest.mark.parametrize("columns", [None, "50", "200", "0", "x"])
def test_help_width_follows_the_terminal_like_argparse(
    columns: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse
    import shutil

    from catalytic.cli import build_parser

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    parser = build_parser("run")
    expected = argparse.HelpFormatter("catalytic", width=shutil.get_terminal_size().columns - 2)
    assert parser._get_formatter()._width == expected._width


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.text(alphabet=st.sampled_from("aZ09._-/é \n"), max_size=130) | st.text(max_size=4))
def test_run_id_rule_without_a_regex(run_id: str) -> None:
    # The rule as a regular expression (compiling it cost every run ~0.2 ms).
    rule = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
    assert valid_run_id(run_id) == bool(rule.fullmatch(run_id))


@pytest.mark.linux
@pytest.mark.parametrize("sigchld", ["default", "ignored"])
def test_lingering_check_reads_the_kernels_child_list_only_when_it_is_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sigchld: str
) -> None:
    # A run's lingering check reads /proc/self/task/*/children instead of every process's stat; with
    # SIGCHLD ignored (children reaped by the kernel while the list is read) it scans every process.
    import signal

    from catalytic import descendants
    from catalytic.runner import run_child

    scans: list[int] = []
    real = descendants.children

    def counting() -> set[int]:
        scans.append(1)
        return real()

    monkeypatch.setattr(descendants, "children", counting)
    if sigchld == "ignored":
        previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        try:
            assert descendants._children_listed(exact=True) == real()
        finally:
            signal.signal(signal.SIGCHLD, previous)
        assert scans == [1]
        return
    pidfile = tmp_path / "pid"
    script = (
        "import subprocess, sys\n"
        "sleeper = [sys.executable, '-c', 'import time; time.sleep(30)']\n"
        "p = subprocess.Popen(sleeper, start_new_session=True)\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
    )
    result = run_child([sys.executable, "-c", script])
    pid = int(pidfile.read_text())
    try:
        assert result.lingering == (pid,)
        if threading.active_count() == 1:
            assert scans == []  # found through the child list alone
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
