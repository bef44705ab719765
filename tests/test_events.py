"""The runtime reports structured events; the CLI and the API's ``progress`` get the lines one function
(:func:`catalytic.events.render`) makes of them."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import catalytic
from catalytic.cli import main
from catalytic.events import KINDS, Event, event, render
from catalytic.policy import declare
from catalytic.runtime import execute, prepare

SRC = Path(__file__).resolve().parent.parent / "src" / "catalytic"
#: Modules outside cli/ that word lines of their own: none.
WORDED_ELSEWHERE: set[str] = set()


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "a.txt").write_text("a\n")
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def test_every_kind_has_a_line() -> None:
    for kind in KINDS:
        fields = {
            "label": "pre",
            "what": "w",
            "run_id": "r",
            "action": "a",
            "state": "s",
            "reason": "why",
            "command": "c",
            "error": "e",
            "code": 1,
            "changed": ["x"],
            "message": "m",
            "signal": "SIGINT",
            "domain": "d",
            "added": 1,
            "removed": 2,
            "change": "added",
            "path": "p",
            "backend": "b",
            "events": 3,
            "complete": True,
            "failure": "f",
            "scope": "domains",
            "absent": False,
            "files": 4,
            "checked": 5,
            "equal": True,
            "new_objects": 6,
            "why": "y",
            "quarantine": "q",
        }
        assert render(Event(kind, fields)).strip()


def test_lines_as_the_cli_prints_them() -> None:
    assert render(event("restored")) == "SUCCESS: Catalytic domains fully restored"
    assert render(event("diff_entry", change="added", path="d/x")) == "    added   d/x"
    assert render(event("undeclared_write", path="src/x")) == "  undeclared write: src/x"
    created = render(event("undeclared_write", path="src/x", write="created"))
    assert created == "  undeclared write: src/x (created)"
    many = render(event("cache_changed", changed=["a", "b", "c", "d"]))
    assert "(a, b, c, ...); nothing in it is trusted" in many


def test_the_runtime_emits_events_not_lines(ws: Path) -> None:
    seen: list[object] = []
    decl = declare(ws, {"catalytic_domains": ["scratch"], "run_id": "r1"})
    policy, how = prepare(decl, started=0.0, events=seen.append)
    result = execute(policy, ["sh", "-c", "echo x > scratch/new"], how)
    assert not result.restored
    assert all(isinstance(item, Event) for item in seen)
    kinds = [item.kind for item in seen if isinstance(item, Event)]
    for kind in ("pre_snapshots", "executing", "command_exited", "post_snapshots", "verifying"):
        assert kind in kinds
    assert kinds.index("not_restored") < kinds.index("domain_diff") < kinds.index("diff_entry")
    assert kinds[-2:] == ["recording", "ledger"]
    entry = next(item for item in seen if isinstance(item, Event) and item.kind == "diff_entry")
    assert entry.fields == {"change": "added", "path": "scratch/new", "what": ""}


def test_the_api_progress_gets_the_lines_the_cli_prints(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines: list[str] = []
    catalytic.run(["true"], catalytic_domains=["scratch"], run_id="api", progress=lines.append)
    assert main(["run", "--run-id", "cli", "--catalytic-domains", "scratch", "--", "true"]) == 0
    printed = [line.removeprefix("[catalytic] ") for line in capsys.readouterr().err.splitlines()]
    # The CLI adds its own lines before the run starts (workspace, preflight); from phase 1 on they agree.
    start = printed.index("Phase 1: Capturing pre-snapshots...")
    assert [line.replace("cli", "api") for line in printed[start:]] == lines
    assert "SUCCESS: Catalytic domains fully restored" in lines


def test_a_block_reports_progress_too(ws: Path) -> None:
    lines: list[str] = []
    with catalytic.catalytic_domains(["scratch"], run_id="b1", progress=lines.append):
        pass
    assert "SUCCESS: Catalytic domains fully restored" in lines


def _worded_lines(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        text = node.value if isinstance(node, ast.Constant) else None
        if isinstance(text, str) and text.startswith(("SUCCESS:", "FAILURE:", "WARNING:", "ERROR:")):
            found.append(text)
    return found


def test_only_the_cli_and_the_events_module_word_the_run_s_lines() -> None:
    worded = {
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.parent.name != "cli" and path.name != "events.py" and _worded_lines(path)
    }
    assert worded == WORDED_ELSEWHERE
    assert _worded_lines(SRC / "events.py")  # the check above can see a worded line
