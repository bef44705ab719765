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

from catalytic import __version__, faults, paths, rootwatch
from catalytic.diff import DomainDiff, diff_entries
from catalytic.errors import (
    EXIT_DIRTY,
    CatalyticError,
    DomainMovedError,
    LingeringError,
    RunInterrupted,
    SnapshotError,
)
from catalytic.isolation import Backend, Facts, Options, Outcome
from catalytic.isolation import create as create_isolation
from catalytic.ledger import format as fmt
from catalytic.ledger.seal import seal
from catalytic.ledger.writer import reserve, write_ledger
from catalytic.locks import domain_locks
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
    isolation: str = "none"
    facts: Facts | None = None
    ledger_digest: str | None = None
    trace: TraceLog | None = None
    domain_move_check: dict[str, Any] | None = None

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
            **(_isolation_summary(self) if self.isolation != "none" else {}),
            "trace": None if self.trace is None else self.trace.summary(),
        }


def _isolation_summary(result: RunResult) -> dict[str, Any]:
    facts = result.facts or Facts()
    return {
        "isolation": result.isolation,
        "undeclared_writes": facts.undeclared_writes,
        "committed": facts.committed,
        "rollback": facts.rollback,
        "quarantine": facts.quarantine,
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


@dataclass(frozen=True)
class SnapshotSettings:
    """How snapshots are taken: hashing processes (0: one per core) and the stat cache."""

    jobs: int = 0
    use_cache: bool = True
    progress: Callable[[int, int], None] | None = None

    def cache_dir(self, policy: Policy) -> Path | None:
        return policy.root / policy.runs_root / CACHE_DIR if self.use_cache else None


CACHE_DIR = "_cache"

#: A domain's snapshot as the phases hold it: streamed into spools (no isolation) or in memory.
Snapshot = Any


class _Spools:
    """Where the streamed snapshots put their documents until the ledger is written."""

    def __init__(self, directory: Path) -> None:
        from catalytic.snapshot.stream import Spool

        self.manifest = {"pre": Spool(directory), "post": Spool(directory)}
        self.modes = {"pre": Spool(directory), "post": Spool(directory)}

    def close(self) -> None:
        for spool in (*self.manifest.values(), *self.modes.values()):
            spool.close()


def _scan_all(
    policy: Policy, label: str, progress: ProgressCallback, settings: SnapshotSettings, spools: _Spools
) -> tuple[list[Snapshot], CatalyticError | None]:
    """The parallel, streaming snapshots of every domain (``post``: compared with ``pre``)."""
    from catalytic.snapshot.stream import scan_domain

    snaps: list[Snapshot] = []
    for domain in policy.catalytic_domains:
        try:
            snap = scan_domain(
                policy.root / domain if domain != paths.ROOT else policy.root,
                domain,
                policy.hash,
                store_dir=policy.root / policy.runs_root / CACHE_DIR,
                manifest=spools.manifest[label],
                modes=spools.modes[label],
                trust=settings.use_cache,
                compare=label == "post",
                jobs=settings.jobs,
                progress=settings.progress,
            )
        except SnapshotError as exc:
            return snaps, _in_workspace(domain, exc)
        state = "absent" if snap.absent else f"{snap.stats.files} files"
        progress(f"Snapshots {label}: {domain} ({state})")
        snaps.append(snap)
    return snaps, None


def _store_failed(error: CatalyticError | None, say: ProgressCallback) -> bool:
    """True when the snapshot store could not be used (the snapshots are then taken in memory)."""
    if error is None or error.code != "STORE":
        return False
    say(f"WARNING: {error.message}; snapshots are taken in memory instead")
    return True


def _in_memory(snap: Snapshot) -> DomainSnapshot:
    """A streamed snapshot as an in-memory one (read back from its spooled documents)."""
    from catalytic.ledger.canonical import loads
    from catalytic.snapshot import entries_from_documents

    manifest = loads(b"".join(snap.manifest.chunks()))
    modes = loads(b"".join(snap.modes.chunks()))
    entries = tuple(entries_from_documents(manifest, modes))
    return DomainSnapshot(snap.domain, entries, snap.stats, snap.merkle_root, snap.cache)


def _in_workspace(domain: str, exc: SnapshotError) -> SnapshotError:
    """The error with its path (relative to the domain) named from the workspace root."""
    return SnapshotError(
        exc.message.removeprefix(f"{exc.path}: "), path=paths.join(domain, exc.path), code=exc.code
    )


def _snapshot_all(
    policy: Policy, label: str, progress: ProgressCallback, settings: SnapshotSettings | None = None
) -> tuple[list[DomainSnapshot], CatalyticError | None]:
    settings = settings or SnapshotSettings()
    snaps: list[DomainSnapshot] = []
    for domain in policy.catalytic_domains:
        try:
            snap = snapshot_domain(
                policy.root,
                domain,
                policy.hash,
                jobs=settings.jobs,
                cache_dir=settings.cache_dir(policy),
                progress=settings.progress,
            )
        except SnapshotError as exc:
            return snaps, _in_workspace(domain, exc)
        if policy.isolation == "overlay":
            from catalytic.isolation.overlay import exclude_from_snapshot

            snap = exclude_from_snapshot(policy, snap)
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
    snapshots: SnapshotSettings | None = None,
    options: Options | None = None,
    sign_key: SigningKey | None = None,
) -> RunResult:
    """Run ``command`` under ``policy`` through phases 1-5 and write the ledger.

    ``policy.isolation`` picks the backend (see :mod:`catalytic.isolation`); ``none`` is the seed's
    behaviour, the others add their own steps around the command.
    """
    say = progress or (lambda _message: None)
    settings = snapshots or SnapshotSettings()
    timer = _Timer()
    timer.timings["preflight"] = round(preflight_seconds, 6)
    started = _now()
    faults.point("run.begin")
    # From the moment the ledger directory exists until the phases are guarded, a SIGINT/SIGTERM
    # waits (blocked), so it is always recorded in the ledger rather than leaving it empty.
    with (
        blocked(INTERRUPTS) as mask,
        domain_locks(policy.root / policy.runs_root, policy.catalytic_domains, policy.run_id),
    ):
        # Finish (or undo) the output commits of overlay runs that were killed while committing.
        if (policy.root / policy.runs_root / "_commits").is_dir():
            from catalytic.isolation.journal import recover

            for done in recover(policy.root / policy.runs_root):
                say(f"Recovered the interrupted output commit of run {done['run_id']}: {done['action']}")
        ledger_dir = reserve(policy.root / policy.runs_root, policy.run_id)
        faults.point("ledger.reserved")
        backend = create_isolation(policy, ledger_dir, replace(options or Options(), say=say))
        # Without isolation the snapshots stream to spool files and are compared in the workers.
        spools = _Spools(policy.root / policy.runs_root) if backend.name == "none" else None
        try:
            return _execute(
                policy,
                command,
                say,
                timer,
                started,
                ledger_dir,
                backend,
                cwd,
                mask,
                sign_key,
                settings,
                spools,
            )
        finally:
            if spools is not None:
                spools.close()
            backend.close()


def _execute(
    policy: Policy,
    command: Sequence[str],
    say: ProgressCallback,
    timer: _Timer,
    started: str,
    ledger_dir: Path,
    backend: Backend,
    cwd: Path | None,
    mask: set[int],
    sign_key: SigningKey | None,
    settings: SnapshotSettings,
    spools: _Spools | None,
) -> RunResult:
    pre: list[Snapshot] = []
    post: list[Snapshot] = []
    streamed = spools
    child: ChildResult | None = None
    error: CatalyticError | None = None
    interrupted: int | None = None
    diffs: dict[str, DomainDiff] = {}
    outputs: list[fmt.OutputRecord] = []
    missing: list[str] = []
    trace_log: TraceLog | None = None
    roots = rootwatch.start(policy.root, policy.catalytic_domains)
    move_check = roots.describe()
    if roots.reason is not None:
        say(f"WARNING: domain-move check {'off' if not roots.active else 'partial'}: {roots.reason}")
    with interrupt_guard():
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            say("Phase 1: Capturing pre-snapshots...")
            with timer.phase("snapshot_pre"):
                faults.point("snapshot_pre.begin")
                if streamed is not None:
                    pre, error = _scan_all(policy, "pre", say, settings, streamed)
                    if _store_failed(error, say):
                        streamed = None
                        pre, error = _snapshot_all(policy, "pre", say, settings)
                else:
                    pre, error = _snapshot_all(policy, "pre", say, settings)
                if error is None:
                    try:
                        backend.prepare(pre)
                    except CatalyticError as exc:
                        error = exc
                faults.point("snapshot_pre.end")
            if error is None:
                say(f"Phase 2: Executing command: {describe_command(command)}")
                with timer.phase("execute"):
                    faults.point("execute.begin")
                    tracer = _start_trace(policy, say)
                    try:
                        child = run_child(backend.wrap(command))
                    finally:
                        trace_log = _stop_trace(tracer, policy) if tracer is not None else None
                    faults.point("execute.end")
                if child.error:
                    say(f"ERROR: {child.error}")
                say(f"Command exited with code {child.exit_code}")
                interrupted = child.interrupted_by
                say("Phase 3: Capturing post-snapshots...")
                with timer.phase("snapshot_post"):
                    faults.point("snapshot_post.begin")
                    if streamed is not None:
                        post, error = _scan_all(policy, "post", say, settings, streamed)
                        if _store_failed(error, say):
                            streamed = None
                            pre = [_in_memory(snap) for snap in pre]
                            post, error = _snapshot_all(policy, "post", say, settings)
                    else:
                        computed = backend.post_snapshots(pre)
                        post, error = (
                            computed if computed is not None else _snapshot_all(policy, "post", say, settings)
                        )
                    moved = roots.moved()
                    faults.point("snapshot_post.end")
                say("Phase 4: Verifying restoration...")
                with timer.phase("verify"):
                    for before, after in zip(pre, post, strict=False):
                        diffs[before.domain] = (
                            after.diff
                            if streamed is not None
                            else diff_entries(before.entries, after.entries)
                        )
                    if backend.name == "none":
                        # Other backends commit or put back outputs in finish(): hashed after that.
                        outputs, missing = collect_outputs(policy.root, policy.durable_outputs)
                    if error is None and all(d.clean for d in diffs.values()):
                        # The snapshots match, but they cannot be trusted as a proof.
                        error = _unprovable(moved, child.lingering)
                faults.point("verify.end")
        except RunInterrupted as exc:
            interrupted = exc.signum
        finally:
            signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
            roots.close()
    # A signal that arrived after the guard let go is still this run's: record it.
    interrupted = interrupted or _pending_interrupt()
    verified = (
        error is None and interrupted is None and len(diffs) == len(pre) == len(policy.catalytic_domains)
    )
    clean = verified and all(d.clean for d in diffs.values())
    facts: Facts | None = None
    if backend.name != "none":
        with blocked(INTERRUPTS):
            outcome = Outcome(
                pre, post, diffs, clean, child.exit_code if child else None, interrupted is not None, error
            )
            finish_start = time.perf_counter()
            faults.point("finish.begin")
            facts = backend.finish(outcome)
            facts.details["seconds"] = round(time.perf_counter() - finish_start, 6)
            outputs, missing = collect_outputs(policy.root, policy.durable_outputs)
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
        # An isolation failure (undeclared writes, a rollback that could not finish) fails the run
        # even when the domains matched: STATUS is then dirty and unverified, with the reason.
        status="restored" if clean and not (facts and facts.failed) else "dirty",
        restoration_verified=clean and not (facts and facts.failed),
        exit_code=child.exit_code if child else None,
        diff=diffs,
        outputs=outputs,
        missing_outputs=missing,
        interrupted=signal.Signals(interrupted).name if interrupted else None,
        error=error,
        command_error=child.error if child else None,
        timings=timer.timings,
        isolation=policy.isolation,
        facts=facts,
        trace=trace_log,
        domain_move_check=move_check,
    )
    if facts is not None and facts.failed:
        say(f"FAILURE: {facts.reason}")
    if trace_log is not None:
        say(_describe_trace(trace_log))
    say("Phase 5: Saving run ledger...")
    with blocked(INTERRUPTS), timer.phase("record"):
        documents = _documents(
            policy, command, result, pre, post, started, cwd, settings, streamed is not None
        )
        faults.point("record.begin")
        write_ledger(ledger_dir, documents)
        faults.point("record.end")
        # After STATUS: the seal (LEDGER_DIGEST.json, SIGNATURE.json) and the LEDGER.jsonl line.
        root_digest = seal(ledger_dir, policy.root / policy.runs_root, policy.run_id, result.status, sign_key)
    result = replace(result, ledger_digest=root_digest)
    say(f"Ledger: {ledger_dir}")
    return result


def _spooled(snaps: Sequence[Snapshot]) -> tuple[Any, Any]:
    """The MANIFEST and MODES documents of streamed snapshots (written from their spools)."""
    from catalytic.ledger.writer import Spooled

    ordered = sorted(snaps, key=lambda s: paths.sort_key(s.domain))
    return (
        Spooled([(s.domain, s.manifest.chunks) for s in ordered]),
        Spooled([(s.domain, s.modes.chunks) for s in ordered]),
    )


def _unprovable(moved: list[str], lingering: tuple[int, ...]) -> CatalyticError | None:
    """Why matching snapshots are still no proof: a domain moved, or the command left processes."""
    if moved:
        return DomainMovedError(
            f"moved, replaced or unmounted while the command ran: {', '.join(moved)}; "
            "writes meant for a domain may have gone elsewhere"
        )
    if lingering:
        return LingeringError(
            f"{len(lingering)} process(es) started by the command were still running after it "
            f"exited (pids {', '.join(map(str, lingering))}); they could change the domains after the proof"
        )
    return None


def _pending_interrupt() -> int | None:
    """Take a blocked, pending SIGINT/SIGTERM off the queue, if there is one."""
    if not hasattr(signal, "sigtimedwait"):  # pragma: no cover - non-Linux
        return None
    info = signal.sigtimedwait(INTERRUPTS, 0)
    return info.si_signo if info is not None else None


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
    if result.facts is not None and result.facts.failed:
        if all(d.clean for d in result.diff.values()) and result.error is None and result.diff:
            return result.facts.reason
        return f"{_seed_reason(result)}; {result.facts.reason}"
    return _seed_reason(result)


def _seed_reason(result: RunResult) -> str | None:
    if isinstance(result.error, LingeringError | DomainMovedError):
        return f"restoration not proved: {result.error.code}: {result.error.message}"
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
    pre: list[Snapshot],
    post: list[Snapshot],
    started: str,
    cwd: Path | None,
    settings: SnapshotSettings | None = None,
    streamed: bool = False,
) -> dict[str, Any]:
    from catalytic.snapshot.engine import default_jobs
    from catalytic.snapshot.merkle import MERKLE_FORMAT, merkle_root

    def root_of(snap: Snapshot) -> str:
        # Snapshots an isolation backend assembled itself carry no root yet.
        return snap.merkle_root or merkle_root(snap.entries, policy.hash)

    settings = settings or SnapshotSettings()
    post_by_domain = {s.domain: s for s in post if s.domain in result.diff}
    merkle_roots = {
        s.domain: {
            "pre": root_of(s),
            "post": root_of(post_by_domain[s.domain]) if s.domain in post_by_domain else None,
        }
        for s in pre
    }
    if not settings.use_cache:
        cache = "disabled"
    else:
        cache = "used" if pre and all(s.cache == "used" for s in pre) else "rebuilt"
    post_done = [s for s in post if s.domain in result.diff]
    if streamed:
        pre_manifest, pre_modes = _spooled(pre)
        post_manifest, post_modes = _spooled(post_done)
    else:
        pre_manifest, pre_modes = manifest_documents(pre)
        post_manifest, post_modes = manifest_documents(post_done)
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
        "isolation": policy.isolation,
        "cache": cache,
        "jobs": settings.jobs or default_jobs(),
        "merkle_format": MERKLE_FORMAT,
        "merkle_roots": merkle_roots,
        "interrupted": result.interrupted is not None,
        "signal": result.interrupted,
        "timings": {name: result.timings.get(name, 0.0) for name in PHASES},
        "platform": {"system": platform.system(), "python": platform.python_version()},
        "trace": None if result.trace is None else result.trace.summary(),
        "domain_move_check": result.domain_move_check,
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
    if policy.isolation != "none" or policy.isolation_requested != "none":
        facts = result.facts or Facts()
        run_info["isolation_requested"] = policy.isolation_requested
        run_info["isolation_reason"] = policy.isolation_reason
        run_info["isolation_details"] = {"commits": facts.commits, **facts.details}
        status["undeclared_writes"] = facts.undeclared_writes
        status["committed"] = facts.committed
        status["rollback"] = facts.rollback
        status["quarantine"] = facts.quarantine
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
