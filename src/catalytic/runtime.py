"""The CMP-01 run: preflight, snapshot, execute, snapshot again, verify, record.

:func:`execute` drives the phases for a checked :class:`~catalytic.policy.Policy` and returns a
:class:`RunResult`; it reports progress through a callback and never prints. SIGINT/SIGTERM are
handled so that an interrupted run still writes its ledger, marked interrupted.
"""

from __future__ import annotations

import platform
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalytic import __version__, paths
from catalytic.diff import DomainDiff, diff_entries
from catalytic.errors import (
    EXIT_DIRTY,
    CatalyticError,
    RunInterrupted,
    SnapshotError,
)
from catalytic.ledger import format as fmt
from catalytic.ledger.seal import seal
from catalytic.ledger.writer import reserve, write_ledger
from catalytic.outputs import collect_outputs
from catalytic.policy import Policy
from catalytic.runner import INTERRUPTS, ChildResult, blocked, describe_command, run_child
from catalytic.snapshot import DomainSnapshot, manifest_documents, snapshot_domain
from catalytic.trace import Tracer
from catalytic.trace.log import TraceLog

if TYPE_CHECKING:
    from catalytic.integrations.signing import SigningKey

ProgressCallback = Callable[[str], None]
PHASES = ("preflight", "snapshot_pre", "execute", "snapshot_post", "verify", "record")


@dataclass(frozen=True)
class RunResult:
    """What a run did, as the CLI and the Python API report it."""

    run_id: str
    ledger_dir: Path
    status: fmt.Status
    restoration_verified: bool
    exit_code: int | None
    diff: dict[str, DomainDiff]
    outputs: list[fmt.OutputRecord]
    missing_outputs: list[str]
    interrupted: str | None = None
    error: CatalyticError | None = None
    command_error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    ledger_digest: str | None = None
    trace: TraceLog | None = None

    @property
    def restored(self) -> bool:
        return self.status == "restored"

    @property
    def exit_status(self) -> int:
        """The exit code of ``catalytic run`` (see the README's table)."""
        if self.interrupted:
            return 128 + int(signal.Signals[self.interrupted])
        if not self.restored:
            return EXIT_DIRTY
        return self.exit_code if self.exit_code is not None else EXIT_DIRTY

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (``catalytic run --json``)."""
        return {
            "run_id": self.run_id,
            "ledger": str(self.ledger_dir),
            "status": self.status,
            "restoration_verified": self.restoration_verified,
            "exit_code": self.exit_code,
            "exit_status": self.exit_status,
            "interrupted": self.interrupted,
            "error": None if self.error is None else {"code": self.error.code, "message": self.error.message},
            "command_error": self.command_error,
            "diff": {d: diff.to_json() for d, diff in self.diff.items()},
            "outputs": len(self.outputs),
            "missing_outputs": self.missing_outputs,
            "timings": self.timings,
            "ledger_digest": self.ledger_digest,
            "trace": None if self.trace is None else self.trace.summary(),
        }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@contextmanager
def interrupt_guard() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into :class:`RunInterrupted` while a run is in progress (main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        raise RunInterrupted(signum)

    previous = {s: signal.signal(s, handler) for s in INTERRUPTS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 6)


def _snapshot_all(
    policy: Policy, label: str, progress: ProgressCallback
) -> tuple[list[DomainSnapshot], SnapshotError | None]:
    snaps: list[DomainSnapshot] = []
    for domain in policy.catalytic_domains:
        try:
            snap = snapshot_domain(policy.root, domain, policy.hash)
        except SnapshotError as exc:
            # The path in the error is relative to the domain; name it from the workspace root.
            exc = SnapshotError(
                exc.message.removeprefix(f"{exc.path}: "), path=paths.join(domain, exc.path), code=exc.code
            )
            return snaps, exc
        state = "absent" if snap.absent else f"{snap.stats.files} files"
        progress(f"Snapshots {label}: {domain} ({state})")
        snaps.append(snap)
    return snaps, None


def _describe_diff(diffs: dict[str, DomainDiff], progress: ProgressCallback) -> None:
    for domain, diff in diffs.items():
        if diff.clean:
            continue
        progress(
            f"  {domain}: {len(diff.added)} added, {len(diff.removed)} removed, {len(diff.changed)} changed"
        )
        for kind, names in (
            ("added", diff.added),
            ("removed", diff.removed),
            ("changed", diff.changed),
        ):
            for name in names:
                progress(f"    {kind:<8}{paths.join(domain, name)}")


def execute(
    policy: Policy,
    command: Sequence[str],
    *,
    progress: ProgressCallback | None = None,
    preflight_seconds: float = 0.0,
    cwd: Path | None = None,
    sign_key: SigningKey | None = None,
) -> RunResult:
    """Run ``command`` under ``policy`` through phases 1-5 and write the ledger."""
    say = progress or (lambda _message: None)
    timer = _Timer()
    timer.timings["preflight"] = round(preflight_seconds, 6)
    started = _now()
    ledger_dir = reserve(policy.root / policy.runs_root, policy.run_id)
    pre: list[DomainSnapshot] = []
    post: list[DomainSnapshot] = []
    child: ChildResult | None = None
    error: SnapshotError | None = None
    interrupted: int | None = None
    diffs: dict[str, DomainDiff] = {}
    outputs: list[fmt.OutputRecord] = []
    missing: list[str] = []
    trace_log: TraceLog | None = None
    with interrupt_guard():
        try:
            say("Phase 1: Capturing pre-snapshots...")
            with timer.phase("snapshot_pre"):
                pre, error = _snapshot_all(policy, "pre", say)
            if error is None:
                say(f"Phase 2: Executing command: {describe_command(command)}")
                with timer.phase("execute"):
                    tracer = _start_trace(policy, say)
                    try:
                        child = run_child(command)
                    finally:
                        trace_log = _stop_trace(tracer, policy) if tracer is not None else None
                if child.error:
                    say(f"ERROR: {child.error}")
                say(f"Command exited with code {child.exit_code}")
                interrupted = child.interrupted_by
                say("Phase 3: Capturing post-snapshots...")
                with timer.phase("snapshot_post"):
                    post, error = _snapshot_all(policy, "post", say)
                say("Phase 4: Verifying restoration...")
                with timer.phase("verify"):
                    for before, after in zip(pre, post, strict=False):
                        diffs[before.domain] = diff_entries(before.entries, after.entries)
                    outputs, missing = collect_outputs(policy.root, policy.durable_outputs)
        except RunInterrupted as exc:
            interrupted = exc.signum
    verified = (
        error is None and interrupted is None and len(diffs) == len(pre) == len(policy.catalytic_domains)
    )
    clean = verified and all(d.clean for d in diffs.values())
    if error is not None:
        say(f"FAILURE: cannot prove restoration: {error.code}: {error.message}")
    elif clean:
        say("SUCCESS: Catalytic domains fully restored")
    elif interrupted is not None and not diffs:
        say(f"FAILURE: interrupted by {signal.Signals(interrupted).name} before the proof")
    else:
        say("FAILURE: Catalytic domains NOT restored")
        _describe_diff(diffs, say)
    for name in missing:
        say(f"WARNING: declared durable output {name} does not exist")

    result = RunResult(
        run_id=policy.run_id,
        ledger_dir=ledger_dir,
        status="restored" if clean else "dirty",
        restoration_verified=clean,
        exit_code=child.exit_code if child else None,
        diff=diffs,
        outputs=outputs,
        missing_outputs=missing,
        interrupted=signal.Signals(interrupted).name if interrupted else None,
        error=error,
        command_error=child.error if child else None,
        timings=timer.timings,
        trace=trace_log,
    )
    if trace_log is not None:
        say(_describe_trace(trace_log))
    say("Phase 5: Saving run ledger...")
    with blocked(INTERRUPTS), timer.phase("record"):
        documents = _documents(policy, command, result, pre, post, started, cwd)
        write_ledger(ledger_dir, documents)
        root_digest = seal(ledger_dir, policy.root / policy.runs_root, policy.run_id, result.status, sign_key)
    result = replace(result, ledger_digest=root_digest)
    say(f"Ledger: {ledger_dir}")
    return result


def _start_trace(policy: Policy, say: ProgressCallback) -> Tracer | None:
    if not policy.trace:
        return None
    from catalytic.trace.session import start_trace

    return start_trace(policy, say)


def _stop_trace(tracer: Tracer, policy: Policy) -> TraceLog:
    from catalytic.trace.session import stop_trace

    return stop_trace(tracer, policy)


def _describe_trace(log: TraceLog) -> str:
    state = "complete" if log.complete else f"INCOMPLETE: {log.reason}"
    return f"Write trace ({log.backend}): {len(log.events)} events, {state}"


def _reason(result: RunResult) -> str | None:
    if result.restored:
        return None
    if result.error is not None:
        return f"snapshot failed: {result.error.code}: {result.error.message}"
    if result.interrupted and not result.diff:
        return f"interrupted by {result.interrupted} before the restoration proof"
    counts = [
        f"{d}: {len(x.added)} added, {len(x.removed)} removed, {len(x.changed)} changed"
        for d, x in result.diff.items()
        if not x.clean
    ]
    if counts:
        return "catalytic domains not restored (" + "; ".join(counts) + ")"
    return f"interrupted by {result.interrupted}"


def _documents(
    policy: Policy,
    command: Sequence[str],
    result: RunResult,
    pre: list[DomainSnapshot],
    post: list[DomainSnapshot],
    started: str,
    cwd: Path | None,
) -> dict[str, Any]:
    pre_manifest, pre_modes = manifest_documents(pre)
    post_manifest, post_modes = manifest_documents([s for s in post if s.domain in result.diff])
    run_info: dict[str, Any] = {
        "run_id": policy.run_id,
        "timestamp": started,
        "finished_at": _now(),
        "intent": policy.intent,
        "determinism": policy.determinism,
        "exit_code": result.exit_code,
        "catalytic_domains": list(policy.catalytic_domains),
        "durable_output_roots": list(policy.durable_outputs),
        "durable_outputs": list(policy.durable_outputs),
        "allowed_roots": list(policy.allowed_roots),
        "forbidden_paths": list(policy.forbidden_paths),
        "runs_root": policy.runs_root,
        "absent_domains": [s.domain for s in pre if s.absent],
        "missing_outputs": result.missing_outputs,
        "command": list(command),
        "cwd": str(cwd or Path.cwd()),
        "root": str(policy.root),
        "tool": "catalytic",
        "tool_version": __version__,
        "schema_version": fmt.SCHEMA_VERSION,
        "hash_algorithm": policy.hash,
        "isolation": "none",
        "interrupted": result.interrupted is not None,
        "signal": result.interrupted,
        "timings": {name: result.timings.get(name, 0.0) for name in PHASES},
        "platform": {"system": platform.system(), "python": platform.python_version()},
        "trace": None if result.trace is None else result.trace.summary(),
    }
    status: fmt.StatusDoc = {
        "status": result.status,
        "restoration_verified": result.restoration_verified,
        "run_id": policy.run_id,
        "exit_code": result.exit_code,
        "interrupted": result.interrupted is not None,
        "reason": _reason(result),
        "error": None
        if result.error is None
        else {"code": result.error.code, "message": result.error.message},
    }
    documents: dict[str, Any] = {
        fmt.RUN_INFO: run_info,
        fmt.PRE_MANIFEST: pre_manifest,
        fmt.PRE_MODES: pre_modes,
        fmt.POST_MANIFEST: post_manifest,
        fmt.POST_MODES: post_modes,
        fmt.RESTORE_DIFF: {d: diff.to_json() for d, diff in result.diff.items()},
        fmt.OUTPUTS: result.outputs,
        fmt.STATUS: status,
    }
    if result.trace is not None:
        documents[fmt.WRITE_LOG] = result.trace.encode()
    return documents
