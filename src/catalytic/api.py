"""The Python API behind ``catalytic.run``, ``catalytic.catalytic_domains`` and ``catalytic.snapshot``.

The same code the CLI uses: both entry points return the :class:`~catalytic.runtime.RunResult` of
``catalytic run`` and write the same ledger.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from catalytic import descendants, runtime
from catalytic.errors import UsageError
from catalytic.isolation import Options
from catalytic.policy import Policy, declare, preflight
from catalytic.runner import ChildResult
from catalytic.runtime import ProgressCallback, RunResult, execute
from catalytic.snapshot import DomainSnapshot, snapshot_tree
from catalytic.snapshot.digest import DEFAULT_HASH

if TYPE_CHECKING:
    from catalytic.integrations.signing import SigningKey


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
    exclude: Sequence[str] | None = None,
    exclude_from_gitignore: bool | None = None,
    allow_absent: bool | None = None,
    allow_no_domains: bool | None = None,
    allow_missing_outputs: bool | None = None,
) -> RunResult:
    """Run ``command`` under CMP-01 exactly as ``catalytic run`` does and return the result.

    ``jobs`` hashing processes (0: one per core); ``use_cache=False`` hashes every file (``--no-cache``).
    Settings not given come from ``catalytic.toml`` / ``[tool.catalytic]`` at ``root`` and then
    from the profile (``profile``, else the one the layout of ``root`` implies: see
    :mod:`catalytic.profiles`). ``isolation`` is ``none``, ``rollback``, ``overlay`` or ``auto``
    (see docs/isolation.md). Raises :class:`~catalytic.errors.DeclarationError` (nothing run or
    written) when preflight fails. ``sign_key`` is the private key file of ``catalytic keygen``.
    ``exclude``, ``exclude_from_gitignore``: what the run leaves out (``--exclude``, docs/excludes.md).
    ``allow_absent``, ``allow_no_domains``, ``allow_missing_outputs``: the opt-ins of the flags of the same
    names (a domain that does not exist, no domain at all, a declared output not produced).
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
        "exclude": exclude,
        "exclude_from_gitignore": exclude_from_gitignore,
        "allow_absent": allow_absent,
        "allow_no_domains": allow_no_domains,
        "allow_missing_outputs": allow_missing_outputs,
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
    # The same path as `catalytic run` (locks, interrupt guard, domain-move watch, processes left running):
    # the block is phase 2, in this process.
    session = runtime.session(
        policy, [label], preflight_seconds=time.perf_counter() - start, sign_key=key, cwd=Path.cwd()
    )
    step: runtime.Step | None = None
    try:
        with session as step, descendants.watch() as tree:
            code = 0
            try:
                yield check
            except BaseException:
                code = 1
                raise
            finally:
                lingering = tuple(descendants.lingering(tree, -1))
                step.child = ChildResult(code, True, lingering=lingering)
    finally:
        if step is not None:  # None: refused before the block (a domain is locked)
            check._result = step.result


def snapshot(path: str | os.PathLike[str], *, algorithm: str = DEFAULT_HASH, jobs: int = 0) -> DomainSnapshot:
    """Snapshot the tree at ``path``: every entry, sorted by path bytes, and its Merkle root."""
    return snapshot_tree(Path(path), algorithm, jobs=jobs)
