"""The CMP-01 run: preflight, snapshot, execute, snapshot again, verify, record.

:func:`execute` drives the phases for a checked :class:`~catalytic.policy.Policy` and returns a
:class:`RunResult`; it reports what happens as events (:mod:`catalytic.events`) and never prints.
SIGINT/SIGTERM are handled so that an interrupted run still writes its ledger, marked interrupted.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalytic import faults, paths, rootwatch
from catalytic.diff import DomainDiff, what_changed
from catalytic.errors import (
    EXIT_DIRTY,
    EXIT_NOT_RESTORED,
    CatalyticError,
    DomainMovedError,
    LingeringError,
    RunInterrupted,
    UsageError,
)
from catalytic.events import Emit, Event, event, ignore
from catalytic.isolation import Backend, Facts, Options, Outcome
from catalytic.isolation import create as create_isolation
from catalytic.ledger import format as fmt
from catalytic.ledger.claim import Claim, claim
from catalytic.ledger.documents import documents, now
from catalytic.ledger.seal import seal
from catalytic.ledger.writer import write_ledger
from catalytic.locks import domain_locks
from catalytic.outputs import collect_outputs, confine, output_states
from catalytic.policy import Declaration, preflight
from catalytic.runner import INTERRUPTS, ChildResult, blocked, describe_command, run_child
from catalytic.snapshot.domains import (
    Snapshot,
    SnapshotSettings,
    Spools,
    cache_dir,
    scan_all,
    store_failed,
)
from catalytic.snapshot.guard import CacheSeal

if TYPE_CHECKING:
    from catalytic.integrations.signing import SigningKey
    from catalytic.outputs import State
    from catalytic.policy import Policy
    from catalytic.trace import Tracer
    from catalytic.trace.log import TraceLog

ProgressCallback = Callable[[str], None]


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
        """The exit code of ``catalytic run`` (see the README's table).

        :data:`~catalytic.errors.EXIT_NOT_RESTORED` means the run failed CMP-01 and nothing else: a
        command's own code 4 is reported as :data:`~catalytic.errors.EXIT_DIRTY` (1), any other one as is.
        """
        if self.interrupted:
            return 128 + int(signal.Signals[self.interrupted])
        if not self.restored or self.exit_code is None:
            return EXIT_NOT_RESTORED
        return EXIT_DIRTY if self.exit_code == EXIT_NOT_RESTORED else self.exit_code

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


class Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 6)


def _describe_diff(diffs: dict[str, DomainDiff], emit: Emit) -> None:
    for domain, diff in diffs.items():
        if diff.clean:
            continue
        emit(
            event(
                "domain_diff",
                domain=domain,
                added=len(diff.added),
                removed=len(diff.removed),
                changed=len(diff.changed),
            )
        )
        for change, names in (("added", diff.added), ("removed", diff.removed)):
            for name in names:
                emit(event("diff_entry", change=change, path=paths.join(domain, name), what=""))
        for name, record in diff.changed.items():
            what = what_changed(record)
            emit(event("diff_entry", change="changed", path=paths.join(domain, name), what=what))


class Step:
    """Phase 2 of a run, as :func:`session` hands it over: whoever holds it runs the command (a child
    process, or a Python block) while the session holds the locks, the guards and the watches, and says
    how it ended (``child``). ``ready`` is False when phase 1 failed: nothing may run then. ``result`` is
    the run's result once the session is over."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.ready = False
        self.child: ChildResult | None = None
        self.result: RunResult | None = None
        self.raised: BaseException | None = None
        self.yielded = False

    def wrap(self, command: Sequence[str]) -> list[str]:
        """The argv to spawn for ``command`` (the isolation backend's wrapper around it)."""
        return self.backend.wrap(command)


@dataclass(frozen=True)
class RunSettings:
    """How a run goes, beside its :class:`~catalytic.policy.Policy` (what it may touch): where its events go
    (:mod:`catalytic.events`), the time preflight took (recorded in the timings), the command's working
    directory (None: this process's), how snapshots are taken, the isolation backend's options and the key
    that signs the ledger."""

    events: Emit | None = None
    preflight_seconds: float = 0.0
    cwd: Path | None = None
    snapshots: SnapshotSettings = field(default_factory=SnapshotSettings)
    options: Options = field(default_factory=Options)
    sign_key: SigningKey | None = None


def prepare(
    decl: Declaration,
    *,
    started: float,
    events: Emit | None = None,
    snapshot_progress: Callable[[int, int], None] | None = None,
    cwd: Path | None = None,
) -> tuple[Policy, RunSettings]:
    """Check ``decl`` (:func:`~catalytic.policy.preflight`) and turn the rest of it into the
    :class:`~catalytic.runtime.RunSettings` of the run; ``started``: when the run began
    (``time.perf_counter()``), for the preflight timing. Raises before anything runs or is written."""
    policy = preflight(decl)
    if decl.check_determinism and (policy.isolation != "overlay" or policy.determinism != "deterministic"):
        raise UsageError(
            "--check-determinism needs --isolation overlay (or auto resolving to it) and a run "
            f"declared deterministic (this one: {policy.isolation}, {policy.determinism})"
        )
    key = _signing_key(decl.sign_key)
    how = RunSettings(
        events=events,
        cwd=cwd,
        snapshots=SnapshotSettings(jobs=decl.jobs, use_cache=decl.use_cache, progress=snapshot_progress),
        options=Options(
            rollback_on_failure=decl.rollback_on_failure,
            discard=decl.discard,
            check_determinism=decl.check_determinism,
        ),
        sign_key=key,
    )
    return policy, replace(how, preflight_seconds=time.perf_counter() - started)


def _signing_key(path: str | os.PathLike[str] | None) -> SigningKey | None:
    if path is None:
        return None
    from catalytic.integrations.signing import load_signing_key

    return load_signing_key(path)


def execute(policy: Policy, command: Sequence[str], settings: RunSettings | None = None) -> RunResult:
    """Run ``command`` under ``policy`` through phases 1-5 and write the ledger (see :func:`session`)."""
    with session(policy, command, settings) as step:
        if step.ready:
            step.child = run_child(step.wrap(command))
    assert step.result is not None
    return step.result


@contextmanager
def session(policy: Policy, command: Sequence[str], run: RunSettings | None = None) -> Iterator[Step]:
    """The one path of a run: phases 1 and 3-5 around the ``with`` block, which is phase 2.

    Before the block: the domain locks, the interrupt guard, the domain-move watch, the pre-run snapshots;
    the block runs the command (``step.child = run_child(step.wrap(command))``, as :func:`execute` does)
    or is the command itself (:func:`catalytic.catalytic_domains`), and sets ``step.child``. After it: the
    post-run snapshots, the verification, the isolation outcome and the ledger; ``step.result`` is then
    set. An exception raised by the block is recorded (exit code 1 unless ``step.child`` says otherwise)
    and raised again once the ledger is written. ``policy.isolation`` picks the backend (see
    :mod:`catalytic.isolation`).
    """
    run = run or RunSettings()
    emit = run.events or ignore
    settings = run.snapshots
    options, preflight_seconds, cwd, sign_key = run.options, run.preflight_seconds, run.cwd, run.sign_key
    timer = Timer()
    timer.timings["preflight"] = round(preflight_seconds, 6)
    started = now()
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
                emit(event("recovered", what=done["what"], run_id=done["run_id"], action=done["action"]))
        ledger = claim(policy.root / policy.runs_root, policy.run_id)
        faults.point("ledger.reserved")
        run_options = replace(options, emit=emit, jobs=settings.jobs, cache=settings.use_cache)
        backend = create_isolation(policy, ledger.path, run_options)
        # The snapshots stream to spool files and are compared in the workers (isolation backends read the
        # spooled manifests entry by entry).
        spools = Spools(policy.root / policy.runs_root)
        step = Step(backend)
        phases = _Phases(policy, command, emit, timer, started, ledger, cwd, mask, sign_key, settings, spools)
        try:
            yield from phases.phases(step)
        finally:
            spools.close()
            backend.close()
    if step.raised is not None:
        raise step.raised


def _post_snapshots(
    policy: Policy,
    backend: Backend,
    pre: list[Snapshot],
    emit: Emit,
    settings: SnapshotSettings,
    spools: Spools,
) -> tuple[list[Snapshot], CatalyticError | None]:
    """Phase 3: the backend's post-run snapshots (overlay), else the real tree's."""
    computed = backend.post_snapshots(pre, spools, settings)
    if computed is not None:
        return computed
    return scan_all(policy, "post", emit, settings, spools, pre)


@dataclass
class _Phases:
    """What phases 1-5 of one run share (see :func:`session`)."""

    policy: Policy
    command: Sequence[str]
    emit: Emit
    timer: Timer
    started: str
    ledger: Claim
    cwd: Path | None
    mask: set[int]
    sign_key: SigningKey | None
    settings: SnapshotSettings
    spools: Spools

    def phases(self, step: Step) -> Iterator[Step]:
        """Phases 1 and 3-5, yielding ``step`` once for phase 2 (also when phase 1 failed: nothing runs)."""
        policy, command, emit, timer, started, ledger = (
            self.policy,
            self.command,
            self.emit,
            self.timer,
            self.started,
            self.ledger,
        )
        cwd, mask, sign_key, settings, spools = self.cwd, self.mask, self.sign_key, self.settings, self.spools
        backend = step.backend
        ledger_dir = ledger.path
        pre: list[Snapshot] = []
        post: list[Snapshot] = []
        child: ChildResult | None = None
        error: CatalyticError | None = None
        interrupted: int | None = None
        diffs: dict[str, DomainDiff] = {}
        outputs: list[fmt.OutputRecord] = []
        missing: list[str] = []
        outputs_before: dict[str, State] | None = None
        trace_log: TraceLog | None = None
        roots = rootwatch.start(policy.root, policy.catalytic_domains)
        move_check = roots.describe()
        if roots.reason is not None:
            emit(
                event(
                    "move_check_limited", state="off" if not roots.active else "partial", reason=roots.reason
                )
            )
        with interrupt_guard():
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                emit(event("pre_snapshots"))
                with timer.phase("snapshot_pre"):
                    faults.point("snapshot_pre.begin")
                    pre, error = scan_all(policy, "pre", emit, settings, spools)
                    if store_failed(error, emit):  # again, without a store, into memory
                        spools.to_memory("pre", "post")
                        settings = settings.without_store()
                        pre, error = scan_all(policy, "pre", emit, settings, spools)
                    if error is None:
                        try:
                            backend.prepare(pre)
                        except CatalyticError as exc:
                            error = exc
                    faults.point("snapshot_pre.end")
                if error is None:
                    outputs_before = output_states(policy.root, policy.durable_outputs)
                    cache_seal = CacheSeal.take(cache_dir(policy.root / policy.runs_root))
                    emit(event("executing", command=describe_command(command)))
                    with timer.phase("execute"):
                        faults.point("execute.begin")
                        tracer = _start_trace(policy, emit)
                        step.ready = step.yielded = True
                        try:
                            yield step
                        except RunInterrupted as exc:  # a signal while the block ran (in this process)
                            step.raised = KeyboardInterrupt() if exc.signum == signal.SIGINT else exc
                            raise
                        except BaseException as exc:  # the block's own: raised again after the ledger
                            step.raised = exc
                        finally:
                            step.ready = False
                            trace_log = _stop_trace(tracer, policy) if tracer is not None else None
                        child = step.child or ChildResult(1 if step.raised else 0, True)
                        faults.point("execute.end")
                    if child.error:
                        emit(event("command_error", error=child.error))
                    emit(event("command_exited", code=child.exit_code))
                    interrupted = child.interrupted_by
                    changed = cache_seal.broken() if settings.use_cache else []
                    if changed:
                        emit(event("cache_changed", changed=list(changed)))
                        # Compared with the pre-run documents, not with the store the command changed.
                        settings = settings.without_store(distrusted=tuple(changed))
                        backend.options = replace(backend.options, cache=False)
                    emit(event("post_snapshots"))
                    with timer.phase("snapshot_post"):
                        faults.point("snapshot_post.begin")
                        post, error = _post_snapshots(policy, backend, pre, emit, settings, spools)
                        if store_failed(error, emit):  # again, without a store, into memory
                            spools.to_memory("post")
                            settings = settings.without_store()
                            post, error = _post_snapshots(policy, backend, pre, emit, settings, spools)
                        moved = roots.moved()
                        faults.point("snapshot_post.end")
                    emit(event("verifying"))
                    with timer.phase("verify"):
                        for before, after in zip(pre, post, strict=False):
                            diffs[before.domain] = after.diff
                        if backend.name == "none":
                            # Other backends commit or put back outputs in finish(): hashed after that.
                            outputs, missing = collect_outputs(
                                policy.root, policy.durable_outputs, policy.excludes, outputs_before
                            )
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
        ledger.check()  # before the backend writes its quarantine there
        if backend.name != "none":
            with blocked(INTERRUPTS):
                outcome = Outcome(
                    pre,
                    post,
                    diffs,
                    clean,
                    child.exit_code if child else None,
                    interrupted is not None,
                    error,
                )
                finish_start = time.perf_counter()
                faults.point("finish.begin")
                facts = backend.finish(outcome)
                facts.details["seconds"] = round(time.perf_counter() - finish_start, 6)
                outputs, missing = collect_outputs(
                    policy.root, policy.durable_outputs, policy.excludes, outputs_before
                )
        if error is not None:
            emit(event("unprovable", code=error.code, message=error.message))
        elif clean:
            emit(event("restored"))
        elif interrupted is not None and not diffs:
            emit(event("interrupted_before_proof", signal=signal.Signals(interrupted).name))
        else:
            emit(event("not_restored"))
            _describe_diff(diffs, emit)
        for name in missing:
            emit(event("output_missing", path=name))

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
            emit(event("failure", reason=facts.reason))
        if trace_log is not None:
            emit(_describe_trace(trace_log))
            result = _undeclared_traced(result, policy, trace_log, emit)
        result = ledger.settle(confine(result, policy, emit), emit)
        emit(event("recording"))
        with blocked(INTERRUPTS), timer.phase("record"):
            docs = documents(policy, command, result, pre, post, started, cwd, settings)
            faults.point("record.begin")
            write_ledger(ledger_dir, docs)
            faults.point("record.end")
            # After STATUS: the seal (LEDGER_DIGEST.json, SIGNATURE.json) and the LEDGER.jsonl line.
            root_digest = seal(
                ledger_dir, policy.root / policy.runs_root, policy.run_id, result.status, sign_key
            )
        step.result = replace(result, ledger_digest=root_digest)
        emit(event("ledger", path=str(ledger_dir)))
        if not step.yielded:  # phase 1 failed or was interrupted: phase 2 has nothing to run
            step.yielded = True
            yield step


def _undeclared_traced(result: RunResult, policy: Policy, log: TraceLog, emit: Emit) -> RunResult:
    """CMP-01 invariant 1 wherever the workspace was traced on the real tree: a recorded write outside
    the domains and declared outputs fails the run (under overlay the upper layer already decides)."""
    if policy.trace_scope != "workspace" or policy.isolation == "overlay":
        return result
    from catalytic.trace.session import undeclared_in

    found = undeclared_in(log, policy)
    if not log.complete:
        emit(event("trace_incomplete", reason=log.reason))
    if not found:
        return result
    from catalytic.errors import UndeclaredWriteError
    from catalytic.ledger.documents import failed_after_proof

    for rel in found:
        emit(event("undeclared_write", path=rel))
    shown = ", ".join(found[:5]) + (f", ... ({len(found)} in all)" if len(found) > 5 else "")
    why = f"the trace recorded write(s) outside the domains and outputs (CMP-01 invariant 1): {shown}"
    emit(event("failure", reason=why))
    return failed_after_proof(result, UndeclaredWriteError(why))


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


def _start_trace(policy: Policy, emit: Emit) -> Tracer | None:
    if not policy.trace:
        return None
    from catalytic.trace.session import start_trace

    return start_trace(policy, emit)


def _stop_trace(tracer: Tracer, policy: Policy) -> TraceLog:
    from catalytic.trace.session import stop_trace

    return stop_trace(tracer, policy)


def _describe_trace(log: TraceLog) -> Event:
    return event(
        "trace_summary", backend=log.backend, events=len(log.events), complete=log.complete, reason=log.reason
    )
