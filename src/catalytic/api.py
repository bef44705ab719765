"""The Python API behind ``catalytic.run``, ``catalytic.catalytic_domains`` and ``catalytic.snapshot``.

The same code the CLI uses: both entry points return the :class:`~catalytic.runtime.RunResult` of
``catalytic run`` and write the same ledger.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from catalytic.errors import UsageError
from catalytic.isolation import Options
from catalytic.policy import Policy, declare, preflight
from catalytic.runtime import ProgressCallback, RunResult, execute
from catalytic.snapshot import DomainSnapshot, snapshot_tree
from catalytic.snapshot.digest import DEFAULT_HASH

if TYPE_CHECKING:
    from catalytic.diff import DomainDiff
    from catalytic.integrations.signing import SigningKey
    from catalytic.ledger.format import OutputRecord


def run(
    command: Sequence[str],
    *,
    root: str | os.PathLike[str] = ".",
    run_id: str | None = None,
    catalytic_domains: Sequence[str] | None = None,
    durable_outputs: Sequence[str] | None = None,
    intent: str | None = None,
    determinism: str | None = None,
    allowed_roots: Sequence[str] | None = None,
    forbidden_paths: Sequence[str] | None = None,
    runs_root: str | None = None,
    hash: str | None = None,
    progress: ProgressCallback | None = None,
    isolation: str | None = None,
    profile: str | None = None,
    rollback_on_failure: bool = False,
    discard: bool = False,
    trace: bool | None = None,
    trace_scope: str | None = None,
    trace_backend: str | None = None,
    jobs: int = 0,
    use_cache: bool = True,
    sign_key: str | os.PathLike[str] | None = None,
) -> RunResult:
    """Run ``command`` under CMP-01 exactly as ``catalytic run`` does and return the result.

    ``jobs`` hashing processes (0: one per core); ``use_cache=False`` hashes every file (``--no-cache``).
    Settings not given come from ``catalytic.toml`` / ``[tool.catalytic]`` at ``root`` and then
    from the profile (``profile``, else the one the layout of ``root`` implies: see
    :mod:`catalytic.profiles`). ``isolation`` is ``none``, ``rollback``, ``overlay`` or ``auto``
    (see docs/isolation.md). Raises :class:`~catalytic.errors.DeclarationError` (nothing run or
    written) when preflight fails. ``sign_key`` is the private key file of ``catalytic keygen``.
    """
    start = time.perf_counter()
    overrides = {
        "run_id": run_id,
        "catalytic_domains": catalytic_domains,
        "durable_outputs": durable_outputs,
        "intent": intent,
        "determinism": determinism,
        "allowed_roots": allowed_roots,
        "forbidden_paths": forbidden_paths,
        "runs_root": runs_root,
        "trace": trace,
        "trace_scope": trace_scope,
        "trace_backend": trace_backend,
        "hash": hash,
        "isolation": isolation,
        "profile": profile,
    }
    policy = preflight(declare(Path(root), overrides))
    from catalytic.snapshot.domains import SnapshotSettings

    key = _signing_key(sign_key)
    options = Options(rollback_on_failure=rollback_on_failure, discard=discard)
    return execute(
        policy,
        list(command),
        progress=progress,
        preflight_seconds=time.perf_counter() - start,
        snapshots=SnapshotSettings(jobs=jobs, use_cache=use_cache),
        options=options,
        sign_key=key,
    )


def _signing_key(path: str | os.PathLike[str] | None) -> SigningKey | None:
    if path is None:
        return None
    from catalytic.integrations.signing import load_signing_key

    return load_signing_key(path)


class DomainCheck:
    """Handle of a :func:`catalytic_domains` block: ``result`` is set when the block ends."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._result: RunResult | None = None

    @property
    def run_id(self) -> str:
        return self.policy.run_id

    @property
    def result(self) -> RunResult:
        """The run's result (only after the ``with`` block)."""
        if self._result is None:
            raise UsageError("the result of a catalytic_domains block exists only after the block ends")
        return self._result

    @property
    def restored(self) -> bool:
        return self.result.restored


@contextmanager
def catalytic_domains(
    domains: Sequence[str],
    *,
    root: str | os.PathLike[str] = ".",
    durable_outputs: Sequence[str] | None = None,
    intent: str | None = None,
    run_id: str | None = None,
    runs_root: str | None = None,
    hash: str | None = None,
    sign_key: str | os.PathLike[str] | None = None,
    label: str = "python:catalytic_domains",
) -> Iterator[DomainCheck]:
    """Snapshot ``domains`` on enter; on exit snapshot again, verify, and write the run's ledger.

    ::

        with catalytic.catalytic_domains(["build/_tmp"]) as check:
            do_work()
        assert check.result.restored

    The block plays the part of the command: its exit code is 0, or 1 when it raised (the
    exception propagates after the ledger is written). Preflight errors raise before the block runs.
    """
    start = time.perf_counter()
    overrides = {
        "run_id": run_id,
        "catalytic_domains": list(domains),
        "durable_outputs": durable_outputs,
        "intent": intent,
        "runs_root": runs_root,
        "hash": hash,
        # The block runs in this process, on the real tree: no isolation backend, no tracer.
        "isolation": "none",
        "trace": False,
    }
    policy = preflight(declare(Path(root), overrides))
    key = _signing_key(sign_key)
    check = DomainCheck(policy)
    block = _Block(policy, label, time.perf_counter() - start, key)
    block.start()
    try:
        yield check
    except BaseException:
        block.exit_code = 1
        raise
    finally:
        check._result = block.finish()


@dataclass
class _Block:
    """Phases 1 and 3-5 of a run around a Python block (phase 2), mirroring runtime.execute."""

    policy: Policy
    label: str
    preflight_seconds: float
    key: SigningKey | None
    exit_code: int = 0

    def start(self) -> None:
        from catalytic.ledger.claim import claim
        from catalytic.ledger.documents import now as _now
        from catalytic.runtime import _Timer
        from catalytic.snapshot.domains import snapshot_all as _snapshot_all

        self.timer = _Timer()
        self.timer.timings["preflight"] = round(self.preflight_seconds, 6)
        self.started = _now()
        self.ledger = claim(self.policy.root / self.policy.runs_root, self.policy.run_id)
        self.ledger_dir = self.ledger.path
        with self.timer.phase("snapshot_pre"):
            self.pre, self.error = _snapshot_all(self.policy, "pre", lambda _m: None)
        self.block_start = time.perf_counter()

    def finish(self) -> RunResult:
        from dataclasses import replace

        from catalytic.diff import diff_entries
        from catalytic.ledger.documents import documents as _documents
        from catalytic.ledger.seal import seal
        from catalytic.ledger.writer import write_ledger
        from catalytic.outputs import collect_outputs, confine
        from catalytic.snapshot.domains import snapshot_all as _snapshot_all

        policy, timer = self.policy, self.timer
        timer.timings["execute"] = round(time.perf_counter() - self.block_start, 6)
        post: list[DomainSnapshot] = []
        diffs: dict[str, DomainDiff] = {}
        outputs: list[OutputRecord] = []
        missing: list[str] = []
        error = self.error
        if error is None:
            with timer.phase("snapshot_post"):
                post, error = _snapshot_all(policy, "post", lambda _m: None)
            with timer.phase("verify"):
                for before, after in zip(self.pre, post, strict=False):
                    diffs[before.domain] = diff_entries(before.entries, after.entries)
                outputs, missing = collect_outputs(policy.root, policy.durable_outputs)
        clean = (
            error is None
            and len(diffs) == len(policy.catalytic_domains)
            and all(d.clean for d in diffs.values())
        )
        result = RunResult(
            run_id=policy.run_id,
            ledger_dir=self.ledger_dir,
            status="restored" if clean else "dirty",
            restoration_verified=clean,
            exit_code=self.exit_code,
            diff=diffs,
            outputs=outputs,
            missing_outputs=missing,
            error=error,
            timings=timer.timings,
        )
        result = self.ledger.settle(confine(result, policy, lambda _m: None), lambda _m: None)
        with timer.phase("record"):
            documents = _documents(policy, [self.label], result, self.pre, post, self.started, None)
            write_ledger(self.ledger_dir, documents)
            digest = seal(
                self.ledger_dir, policy.root / policy.runs_root, policy.run_id, result.status, self.key
            )
        return replace(result, ledger_digest=digest)


def snapshot(path: str | os.PathLike[str], *, algorithm: str = DEFAULT_HASH, jobs: int = 0) -> DomainSnapshot:
    """Snapshot the tree at ``path``: every entry, sorted by path bytes, and its Merkle root."""
    return snapshot_tree(Path(path), algorithm, jobs=jobs)
