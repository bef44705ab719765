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

from catalytic import descendants, runtime, settings
from catalytic.errors import UsageError
from catalytic.events import lines
from catalytic.policy import Policy, declare
from catalytic.runner import ChildResult
from catalytic.runtime import ProgressCallback, RunResult, execute, prepare
from catalytic.snapshot import DomainSnapshot, snapshot_tree
from catalytic.snapshot.digest import DEFAULT_HASH


def run(
    command: Sequence[str],
    *,
    run_id: str | None = None,
    catalytic_domains: Sequence[str] | None = None,
    durable_outputs: Sequence[str] | None = None,
    allow_absent: bool | None = None,
    allow_no_domains: bool | None = None,
    allow_missing_outputs: bool | None = None,
    intent: str | None = None,
    determinism: str | None = None,
    allowed_roots: Sequence[str] | None = None,
    forbidden_paths: Sequence[str] | None = None,
    runs_root: str | None = None,
    profile: str | None = None,
    root: str | os.PathLike[str] = ".",
    hash: str | None = None,
    exclude: Sequence[str] | None = None,
    exclude_from_gitignore: bool | None = None,
    jobs: int | None = None,
    use_cache: bool | None = None,
    sign_key: str | os.PathLike[str] | None = None,
    isolation: str | None = None,
    rollback_on_failure: bool | None = None,
    discard: bool | None = None,
    check_determinism: bool | None = None,
    trace: bool | None = None,
    trace_scope: str | None = None,
    trace_backend: str | None = None,
    progress: ProgressCallback | None = None,
) -> RunResult:
    """Run ``command`` under CMP-01 exactly as ``catalytic run`` does and return the result.

    Every keyword but ``progress`` is the setting of the flag of the same name (``use_cache=False`` is
    ``--no-cache``; the table is in docs/cli.md): None (not given) leaves it to ``catalytic.toml`` /
    ``[tool.catalytic]`` at ``root``, then to the profile (``profile``, else the one the layout of ``root``
    implies: see :mod:`catalytic.profiles`), then to the setting's default (:mod:`catalytic.settings`).
    ``isolation`` is ``none``, ``rollback``, ``overlay`` or ``auto`` (see docs/isolation.md); ``jobs``
    hashing processes (0: one per core); ``sign_key`` the private key file of ``catalytic keygen``.
    ``progress`` receives the progress lines ``catalytic run`` prints (without its ``[catalytic]``
    prefix). Raises :class:`~catalytic.errors.DeclarationError` (nothing run or written) when preflight
    fails, :class:`~catalytic.errors.UsageError` for a value no run can take.
    """
    start = time.perf_counter()
    given = dict(locals())  # first: the keyword arguments, which are the settings (and command, progress)
    decl = declare(Path(root), settings.overrides(given))
    policy, how = prepare(decl, started=start, events=lines(progress))
    return execute(policy, list(command), how)


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
    run_id: str | None = None,
    durable_outputs: Sequence[str] | None = None,
    allow_absent: bool | None = None,
    allow_no_domains: bool | None = None,
    allow_missing_outputs: bool | None = None,
    intent: str | None = None,
    determinism: str | None = None,
    allowed_roots: Sequence[str] | None = None,
    forbidden_paths: Sequence[str] | None = None,
    runs_root: str | None = None,
    profile: str | None = None,
    root: str | os.PathLike[str] = ".",
    hash: str | None = None,
    exclude: Sequence[str] | None = None,
    exclude_from_gitignore: bool | None = None,
    jobs: int | None = None,
    use_cache: bool | None = None,
    sign_key: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    label: str = "python:catalytic_domains",
) -> Iterator[DomainCheck]:
    """Snapshot ``domains`` on enter; on exit snapshot again, verify, and write the run's ledger.

    ::

        with catalytic.catalytic_domains(["build/_tmp"]) as check:
            do_work()
        assert check.result.restored

    The block plays the part of the command (``label`` in the ledger): its exit code is 0, or 1 when it
    raised (the exception propagates after the ledger is written). The keywords are those of
    :func:`run`, less what a block running in this process on the real tree cannot have (isolation,
    tracing: :data:`catalytic.settings.BLOCK_FIXED`, whatever the config file says). Preflight errors
    raise before the block runs.
    """
    start = time.perf_counter()
    given = dict(locals())
    overrides = {**settings.overrides(given), "catalytic_domains": list(domains), **settings.BLOCK_FIXED}
    policy, how = prepare(
        declare(Path(root), overrides), started=start, events=lines(progress), cwd=Path.cwd()
    )
    check = DomainCheck(policy)
    # The same path as `catalytic run` (locks, interrupt guard, domain-move watch, processes left running):
    # the block is phase 2, in this process.
    session = runtime.session(policy, [label], how)
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
