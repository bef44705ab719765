"""Write tracing: real commands, real files, real kernel events (fanotify as root, watchdog/inotify)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from catalytic.api import run
from catalytic.cli import main
from catalytic.errors import TraceUnavailable
from catalytic.trace import TraceScope, open_tracer
from catalytic.trace.fanotify import FanotifyTracer
from catalytic.validate import CatalyticLedgerValidator

# Workspaces laid out like the seed's project: ledgers in CONTRACTS/_runs (see conftest.seed_layout).
pytestmark = pytest.mark.usefixtures("seed_layout")


def validate(path: Path) -> tuple[bool, Any]:
    return CatalyticLedgerValidator(path).validate()


PY = sys.executable
DOMAIN = "scratch"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def needs_fanotify(test: Any) -> Any:
    """Linux + root (CI is both); the test itself skips when the kernel refuses fanotify."""
    for mark in (
        pytest.mark.linux,
        pytest.mark.root,
        pytest.mark.skipif(
            not sys.platform.startswith("linux") or not IS_ROOT, reason="fanotify needs Linux root"
        ),
    ):
        test = mark(test)
    return test


def fanotify_works(tmp_path: Path) -> bool:
    try:
        tracer = FanotifyTracer()
        tracer.start(TraceScope(tmp_path, "domains", (".",)))
    except TraceUnavailable:
        return False
    tracer.stop()
    return True


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # commands use paths relative to the workspace root


def workspace(root: Path) -> Path:
    (root / DOMAIN).mkdir()
    (root / DOMAIN / "keep.txt").write_text("keep\n")
    return root


def script(root: Path, body: str) -> list[str]:
    path = root / "job.py"
    path.write_text("import os, sys\nfrom pathlib import Path\n" + body)
    return [PY, str(path)]


def ledger(root: Path, run_id: str) -> Path:
    return root / "CONTRACTS/_runs" / run_id


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def ops(log: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["op"], e["path"]) for e in log["events"]]


NESTED = """
d = Path('scratch/tmp/a/b')
d.mkdir(parents=True)
f = d / 'work.txt'
f.write_text('one')
with f.open('a') as fh:
    fh.write('two')
os.rename(f, d / 'done.txt')
os.chmod(d / 'done.txt', 0o600)
os.unlink(d / 'done.txt')
os.rmdir('scratch/tmp/a/b')
os.rmdir('scratch/tmp/a')
os.rmdir('scratch/tmp')
"""


@needs_fanotify
def test_fanotify_logs_nested_temp_files_in_order(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    if not fanotify_works(root):
        pytest.skip("fanotify is not permitted here")
    result = run(
        script(root, NESTED),
        root=root,
        run_id="r",
        catalytic_domains=[DOMAIN],
        trace=True,
        trace_backend="fanotify",
    )
    assert result.restored
    log = load(ledger(root, "r") / "WRITE_LOG.json")
    assert log["backend"] == "fanotify" and log["complete"] is True and log["reason"] is None
    expected = [
        ("mkdir", "scratch/tmp"),
        ("mkdir", "scratch/tmp/a"),
        ("mkdir", "scratch/tmp/a/b"),
        ("create", "scratch/tmp/a/b/work.txt"),
        ("modify", "scratch/tmp/a/b/work.txt"),
        ("move", "scratch/tmp/a/b/work.txt"),
        ("chmod", "scratch/tmp/a/b/done.txt"),
        ("delete", "scratch/tmp/a/b/done.txt"),
        ("rmdir", "scratch/tmp/a/b"),
        ("rmdir", "scratch/tmp/a"),
        ("rmdir", "scratch/tmp"),
    ]
    seen = ops(log)
    positions = [seen.index(item) for item in expected]
    assert positions == sorted(positions), seen
    move = next(e for e in log["events"] if e["op"] == "move")
    assert move["dest"] == "scratch/tmp/a/b/done.txt"
    stamps = [e["timestamp"] for e in log["events"]]
    assert stamps == sorted(stamps) and all(s.endswith("Z") for s in stamps)
    info = load(ledger(root, "r") / "RUN_INFO.json")
    assert info["trace"] == {
        "backend": "fanotify",
        "scope": "domains",
        "complete": True,
        "reason": None,
        "events": len(log["events"]),
    }
    assert validate(ledger(root, "r"))[0] is True


@needs_fanotify
def test_fanotify_names_the_process_that_left_a_file(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    if not fanotify_works(root):
        pytest.skip("fanotify is not permitted here")
    body = "Path('pid.txt').write_text(str(os.getpid()))\nPath('scratch/leftover.bin').write_bytes(b'x')\n"
    result = run(script(root, body), root=root, run_id="r", catalytic_domains=[DOMAIN], trace=True)
    assert not result.restored
    assert result.trace is not None and result.trace.backend == "fanotify"
    writer = int((root / "pid.txt").read_text())
    log = load(ledger(root, "r") / "WRITE_LOG.json")
    created = [e for e in log["events"] if e["path"] == "scratch/leftover.bin" and e["op"] == "create"]
    assert len(created) == 1
    assert created[0]["pid"] == writer
    assert created[0]["process"] and created[0]["process"].startswith("python")
    # pid.txt is outside the catalytic domain: not in the default scope.
    assert all(e["path"].startswith("scratch/") for e in log["events"])


@needs_fanotify
def test_fanotify_names_short_lived_processes(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    if not fanotify_works(root):
        pytest.skip("fanotify is not permitted here")
    run(
        ["sh", "-c", "mkdir scratch/d && touch scratch/d/f && rm -r scratch/d"],
        root=root,
        run_id="r",
        catalytic_domains=[DOMAIN],
        trace=True,
    )
    log = load(ledger(root, "r") / "WRITE_LOG.json")
    by_op = {(e["op"], e["path"]): e["process"] for e in log["events"]}
    assert by_op[("mkdir", "scratch/d")] == "mkdir"
    assert by_op[("create", "scratch/d/f")] == "touch"
    assert by_op[("rmdir", "scratch/d")] == "rm"


@pytest.mark.slow
@needs_fanotify
def test_fanotify_overflow_marks_the_log_incomplete(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    hold = threading.Event()
    tracer = FanotifyTracer(hold=hold)
    try:
        tracer.start(TraceScope(root, "domains", (DOMAIN,)))
    except TraceUnavailable:
        pytest.skip("fanotify is not permitted here")
    limit = int(Path("/proc/sys/fs/fanotify/max_queued_events").read_text())
    flood = root / DOMAIN / "flood"
    flood.mkdir()
    # The reader is held, so the queue must overflow. A child writes: our own pid is never logged.
    flooder = (
        f"import os\nfor i in range({limit + 2000}):\n    os.close(os.open(f'f{{i}}', os.O_CREAT, 0o644))\n"
    )
    subprocess.run([PY, "-c", flooder], cwd=flood, check=True)
    log = tracer.stop()
    assert log.complete is False
    assert log.reason is not None and "overflow" in log.reason
    assert 0 < len(log.events) <= limit


def test_no_trace_by_default(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    result = run(["true"], root=root, run_id="r", catalytic_domains=[DOMAIN])
    assert result.trace is None
    assert not (ledger(root, "r") / "WRITE_LOG.json").exists()
    assert load(ledger(root, "r") / "RUN_INFO.json")["trace"] is None


def test_backend_none_runs_untraced_and_says_so(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    messages: list[str] = []
    result = run(
        ["sh", "-c", "echo x > scratch/new"],
        root=root,
        run_id="r",
        catalytic_domains=[DOMAIN],
        trace=True,
        trace_backend="none",
        progress=messages.append,
    )
    assert not result.restored  # the snapshot is still the authority
    log = load(ledger(root, "r") / "WRITE_LOG.json")
    assert log["backend"] == "none" and log["complete"] is False and log["events"] == []
    assert "untraced" in log["reason"]
    assert any("not traced" in m for m in messages)
    assert validate(ledger(root, "r"))[0] is False  # dirty, but the ledger itself is well-formed
    assert load(ledger(root, "r") / "RUN_INFO.json")["trace"]["backend"] == "none"


def test_unavailable_backend_falls_back_to_untraced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import catalytic.trace as trace

    def broken() -> trace.Tracer:
        raise TraceUnavailable("no kernel support in this test")

    monkeypatch.setitem(trace.BACKENDS, "fanotify", broken)
    tracer, failures = open_tracer("fanotify", TraceScope(tmp_path, "domains", (".",)))
    assert tracer.name == "none" and failures == ["fanotify: no kernel support in this test"]
    log = tracer.stop()
    assert not log.complete and "no kernel support in this test" in (log.reason or "")


def test_tracing_does_not_delay_the_child_exit(tmp_path: Path) -> None:
    # The tracer's threads must not swallow SIGCHLD meant for the runner's sigtimedwait (1 s poll).
    root = workspace(tmp_path)
    result = run(["true"], root=root, run_id="r", catalytic_domains=[DOMAIN], trace=True)
    assert result.timings["execute"] < 0.9, result.timings


@needs_fanotify
def test_workspace_scope_finds_undeclared_writes_but_never_the_runs_root(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    if not fanotify_works(root):
        pytest.skip("fanotify is not permitted here")
    command = ["sh", "-c", "echo x > undeclared.txt && echo y > CONTRACTS/_runs/sneaky"]
    (root / "CONTRACTS/_runs").mkdir(parents=True)
    run(command, root=root, run_id="d", catalytic_domains=[DOMAIN], trace=True)
    run(command, root=root, run_id="w", catalytic_domains=[DOMAIN], trace=True, trace_scope="workspace")
    narrow = {p for _, p in ops(load(ledger(root, "d") / "WRITE_LOG.json"))}
    wide = load(ledger(root, "w") / "WRITE_LOG.json")
    assert "undeclared.txt" not in narrow
    # The first run created it; the second truncates and writes it.
    assert ("modify", "undeclared.txt") in ops(wide) and wide["scope"] == "workspace"
    assert not any(p.startswith("CONTRACTS") for _, p in ops(wide))


# -- generated workloads: when the log is complete it explains every path of RESTORE_DIFF ------------


def workload(rng: random.Random, new_dirs: bool) -> str:
    lines = ["import os", "from pathlib import Path", "os.chdir('scratch')"]
    files = [f"f{i}" for i in range(5)]
    dirs = ["d0"]
    for step in range(rng.randint(3, 25)):
        choice = rng.choice(["create", "modify", "delete", "rename", "chmod", "mkdir", "temp"])
        target = rng.choice(files)
        if choice == "mkdir" and new_dirs:
            name = f"n{step}"
            lines.append(f"os.makedirs('{rng.choice(dirs)}/{name}', exist_ok=True)")
            dirs.append(f"{dirs[-1]}/{name}" if False else f"{dirs[0]}/{name}")
        elif choice == "create":
            where = rng.choice(dirs) if new_dirs else "d0"
            lines.append(f"Path('{where}').mkdir(parents=True, exist_ok=True)")
            lines.append(f"Path('{where}/{target}').write_text('{step}')")
        elif choice == "modify":
            lines.append(f"Path('{target}').write_text('m{step}')")
        elif choice == "delete":
            lines.append(f"Path('{target}').unlink(missing_ok=True)")
        elif choice == "rename":
            other = rng.choice(files)
            lines.append(f"os.path.exists('{target}') and os.replace('{target}', '{other}')")
        elif choice == "chmod":
            lines.append(
                f"os.path.exists('{target}') and os.chmod('{target}', 0o{rng.choice([600, 644, 755])})"
            )
        elif choice == "temp":
            lines.append(f"Path('t{step}').write_text('t'); os.unlink('t{step}')")
    return "\n".join(lines) + "\n"


def explained(path: str, log: dict[str, Any]) -> bool:
    """``path`` is named by an event, or sits under a directory that an event moved."""
    if any(path in (e["path"], e.get("dest")) for e in log["events"]):
        return True
    moved = {e["path"] for e in log["events"] if e["op"] == "move"}
    moved |= {e["dest"] for e in log["events"] if e["op"] == "move"}
    parts = path.split("/")
    return any("/".join(parts[:i]) in moved for i in range(len(parts) - 1, 0, -1))


def check_diff_in_log(root: Path, run_id: str) -> bool:
    log = load(ledger(root, run_id) / "WRITE_LOG.json")
    diff = load(ledger(root, run_id) / "RESTORE_DIFF.json")
    if not log["complete"]:
        return False
    for domain, kinds in diff.items():
        for kind in ("added", "removed", "changed"):
            for name in kinds[kind]:
                full = domain if name == "." else f"{domain}/{name}"
                assert explained(full, log), (full, kind, ops(log))
    return True


def prepare(root: Path) -> None:
    workspace(root)
    (root / DOMAIN / "d0").mkdir()
    for i in range(5):
        (root / DOMAIN / f"f{i}").write_text(f"orig {i}")


@pytest.mark.slow
@needs_fanotify
def test_generated_workloads_fanotify(tmp_path: Path) -> None:
    if not fanotify_works(tmp_path):
        pytest.skip("fanotify is not permitted here")
    complete = 0
    for seed in range(12):
        root = tmp_path / f"w{seed}"
        (root / "CONTRACTS").mkdir(parents=True)  # the seed's layout, as seed_layout gives tmp_path
        prepare(root)
        os.chdir(root)
        body = workload(random.Random(seed), new_dirs=True)
        (root / "job.py").write_text(body)
        run(
            [PY, "job.py"],
            root=root,
            run_id="r",
            catalytic_domains=[DOMAIN],
            trace=True,
            trace_backend="fanotify",
        )
        complete += check_diff_in_log(root, "r")
    assert complete == 12  # fanotify has no new-directory race: every one of these logs is complete


@pytest.mark.slow
def test_generated_workloads_watchdog(tmp_path: Path) -> None:
    pytest.importorskip("watchdog")
    complete = 0
    for seed in range(6):
        root = tmp_path / f"w{seed}"
        (root / "CONTRACTS").mkdir(parents=True)  # the seed's layout, as seed_layout gives tmp_path
        prepare(root)
        os.chdir(root)
        (root / "job.py").write_text(workload(random.Random(100 + seed), new_dirs=False))
        run(
            [PY, "job.py"],
            root=root,
            run_id="r",
            catalytic_domains=[DOMAIN],
            trace=True,
            trace_backend="inotify",
        )
        complete += check_diff_in_log(root, "r")
    assert complete == 6  # no directory appears in these workloads, so nothing is racy


def test_watchdog_logs_writes_without_pids_and_admits_the_new_directory_race(tmp_path: Path) -> None:
    pytest.importorskip("watchdog")
    root = workspace(tmp_path)
    body = (
        "Path('scratch/keep.txt').write_text('changed')\n"
        "Path('scratch/t.txt').write_text('t')\n"
        "os.rename('scratch/t.txt', 'scratch/u.txt')\n"
        "os.unlink('scratch/u.txt')\n"
    )
    run(
        script(root, body),
        root=root,
        run_id="a",
        catalytic_domains=[DOMAIN],
        trace=True,
        trace_backend="watchdog",
    )
    log = load(ledger(root, "a") / "WRITE_LOG.json")
    assert log["backend"] == "watchdog" and log["complete"] is True, log["reason"]
    seen = ops(log)
    for item in [
        ("modify", "scratch/keep.txt"),
        ("create", "scratch/t.txt"),
        ("move", "scratch/t.txt"),
        ("delete", "scratch/u.txt"),
    ]:
        assert item in seen, seen
    assert seen.index(("create", "scratch/t.txt")) < seen.index(("delete", "scratch/u.txt"))
    assert all(e["pid"] is None for e in log["events"])

    run(
        ["sh", "-c", "mkdir -p scratch/x/y && touch scratch/x/y/z && rm -r scratch/x"],
        root=root,
        run_id="b",
        catalytic_domains=[DOMAIN],
        trace=True,
        trace_backend="watchdog",
    )
    log = load(ledger(root, "b") / "WRITE_LOG.json")
    assert log["complete"] is False and "directories appeared" in log["reason"]


def test_show_prints_the_timeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    root = workspace(tmp_path)
    monkeypatch.chdir(root)
    body = "Path('scratch/left.txt').write_text('x')\n"
    assert (
        main(
            [
                "run",
                "-q",
                "--run-id",
                "r",
                "--catalytic-domains",
                DOMAIN,
                "--trace",
                "--",
                *script(root, body),
            ]
        )
        == 4
    )
    capsys.readouterr()
    assert main(["show", "r"]) == 0
    out = capsys.readouterr().out
    assert "dirty" in out and "scratch/left.txt" in out and "Write trace" in out
    assert "create" in out
    assert main(["show", "r", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"]["status"] == "dirty"
    assert any(e["path"] == "scratch/left.txt" for e in doc["write_log"]["events"])
    assert main(["show", "nope"]) == 2


def test_trace_settings_from_config(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    (root / "catalytic.toml").write_text(
        'trace = true\ntrace-backend = "none"\ncatalytic_domains = ["scratch"]\n'
    )
    run(["true"], root=root, run_id="r")
    assert load(ledger(root, "r") / "WRITE_LOG.json")["backend"] == "none"
    (root / "catalytic.toml").write_text('trace = "yes"\n')
    assert main(["run", "--root", str(root), "--", "true"]) == 2


def test_timing_of_watchdog_stop_is_bounded(tmp_path: Path) -> None:
    pytest.importorskip("watchdog")
    root = workspace(tmp_path)
    start = time.perf_counter()
    run(["true"], root=root, run_id="r", catalytic_domains=[DOMAIN], trace=True, trace_backend="watchdog")
    assert time.perf_counter() - start < 3.0


def test_fast_encoding_is_the_canonical_json() -> None:
    from catalytic.ledger.canonical import dumps
    from catalytic.trace.log import TraceEvent, TraceLog

    log = TraceLog("fanotify", "domains", ["d"], "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:01.000000Z")
    log.events += [
        TraceEvent("2026-01-01T00:00:00.1Z", 'd/a"b\\c\n', "create", None, 12, "sh"),
        TraceEvent("2026-01-01T00:00:00.2Z", "d/\udcff\u00e9", "move", "d/é", None, None),
        TraceEvent("2026-01-01T00:00:00.3Z", "d/x", "chmod", None, 1, "pr\u00f6c"),
    ]
    log.incomplete("why")
    assert log.encode() == dumps(log.to_json()).encode("utf-8")
    empty = TraceLog("none", "workspace", ["."], "t")
    assert empty.encode() == dumps(empty.to_json()).encode("utf-8")


def test_a_failing_tracer_costs_the_log_not_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import catalytic.trace as trace

    class Broken(trace.NoTracer):
        name = "fanotify"

        def stop(self) -> trace.TraceLog:
            raise RuntimeError("decoder bug")

    monkeypatch.setitem(trace.BACKENDS, "fanotify", Broken)
    root = workspace(tmp_path)
    result = run(
        ["true"], root=root, run_id="r", catalytic_domains=[DOMAIN], trace=True, trace_backend="fanotify"
    )
    assert result.restored
    log = load(ledger(root, "r") / "WRITE_LOG.json")
    assert log["complete"] is False and "decoder bug" in log["reason"]
    assert (ledger(root, "r") / "STATUS.json").exists()


@needs_fanotify
def test_fanotify_decodes_a_long_backlog_while_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import catalytic.trace.fanotify as fan

    root = workspace(tmp_path)
    if not fanotify_works(root):
        pytest.skip("fanotify is not permitted here")
    monkeypatch.setattr(fan, "BACKLOG_LIMIT", 0)  # decode after every read
    run(script(root, NESTED), root=root, run_id="r", catalytic_domains=[DOMAIN], trace=True)
    log = load(ledger(root, "r") / "WRITE_LOG.json")
    assert log["complete"] is True
    seen = ops(log)
    assert seen.index(("create", "scratch/tmp/a/b/work.txt")) < seen.index(("rmdir", "scratch/tmp/a/b"))
    assert seen[-1] == ("rmdir", "scratch/tmp")


def test_watchdog_warnings_such_as_overflow_mark_the_log_incomplete(tmp_path: Path) -> None:
    pytest.importorskip("watchdog")
    import logging

    from catalytic.trace.watch import WatchdogTracer

    root = workspace(tmp_path)
    tracer = WatchdogTracer()
    tracer.start(TraceScope(root, "domains", (DOMAIN,)))
    # What watchdog's inotify reader logs when the kernel reports IN_Q_OVERFLOW.
    logging.getLogger("watchdog.observers.inotify_c").warning(
        "Inotify queue overflowed; filesystem events were lost"
    )
    log = tracer.stop()
    assert log.complete is False and "queue overflowed" in (log.reason or "")
    assert tracer._capture not in logging.getLogger("watchdog").handlers  # removed again


def test_validate_checks_write_log_against_its_schema(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    run(["true"], root=root, run_id="r", catalytic_domains=[DOMAIN], trace=True, trace_backend="none")
    assert validate(ledger(root, "r"))[0] is True
    doc = load(ledger(root, "r") / "WRITE_LOG.json")
    doc["events"] = [
        {"timestamp": "yesterday", "path": "scratch/x", "op": "explode", "pid": None, "process": None}
    ]
    (ledger(root, "r") / "WRITE_LOG.json").write_text(json.dumps(doc))
    ok, report = validate(ledger(root, "r"))
    assert ok is False and "WRITE_LOG.json" in json.dumps(report)


WATCH_LIMIT_CHILD = """
import json, sys
from pathlib import Path
Path('/proc/sys/user/max_inotify_watches').write_text('3')  # this user namespace only
from catalytic.trace import TraceScope
from catalytic.trace.watch import WatchdogTracer
from catalytic.errors import TraceUnavailable
tracer = WatchdogTracer()
try:
    tracer.start(TraceScope(Path(sys.argv[1]), 'domains', ('scratch',)))
except TraceUnavailable as exc:  # watchdog >= 6 refuses instead of skipping directories
    print(json.dumps({'complete': False, 'reason': str(exc), 'refused': True}))
else:
    log = tracer.stop()
    print(json.dumps({'complete': log.complete, 'reason': log.reason, 'refused': False}))
"""


@pytest.mark.linux
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify limits are Linux")
def test_watchdog_admits_the_inotify_watch_limit(tmp_path: Path) -> None:
    pytest.importorskip("watchdog")
    import shutil

    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to lower the watch limit in a private user namespace")
    root = workspace(tmp_path)
    for name in ("a", "b", "c", "d", "e"):
        (root / DOMAIN / name).mkdir()
    # A user namespace has its own max_inotify_watches, so the limit drops for this child alone.
    probe = subprocess.run(["unshare", "-U", "-r", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"user namespaces are not available: {probe.stderr.decode().strip()}")
    out = subprocess.run(
        ["unshare", "-U", "-r", PY, "-c", WATCH_LIMIT_CHILD, str(root)],
        capture_output=True,
        check=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["complete"] is False
    if result["refused"]:
        assert "max_user_watches" in result["reason"], result
    else:
        assert "of 6 directories are watched" in result["reason"], result


UNPRIVILEGED_CHILD = """
import json, sys
from pathlib import Path
from catalytic.trace import TraceScope, open_tracer

tracer, failures = open_tracer('auto', TraceScope(Path(sys.argv[1]), 'domains', ('.',)))
print(json.dumps({'backend': tracer.name, 'failures': failures, 'complete': tracer.stop().complete}))
"""


@pytest.mark.linux
@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="needs root to drop to an unprivileged user")
def test_auto_falls_back_to_watchdog_without_cap_sys_admin(tmp_path: Path) -> None:
    pytest.importorskip("watchdog")
    import shutil

    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv(1) to run a child as nobody")
    import tempfile

    # pytest's tmp_path sits under a 0700 directory that nobody cannot enter.
    shared = Path(tempfile.mkdtemp(prefix="catalytic-trace-"))
    try:
        shared.chmod(0o777)
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        probe = subprocess.run(
            [*command, PY, "-c", "import catalytic.trace"], check=False, capture_output=True, text=True
        )
        if probe.returncode != 0:
            # A checkout (or interpreter) under a 0700 directory cannot be imported by nobody.
            pytest.skip(f"nobody cannot import catalytic from this checkout: {probe.stderr.strip()[-200:]}")
        out = subprocess.run(
            [*command, PY, "-c", UNPRIVILEGED_CHILD, str(shared)], capture_output=True, check=True, text=True
        )
    finally:
        shutil.rmtree(shared)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["backend"] == "watchdog" and result["complete"] is True
    assert len(result["failures"]) == 1 and result["failures"][0].startswith("fanotify: ")
    assert "EPERM" in result["failures"][0] and "CAP_SYS_ADMIN" in result["failures"][0]
