"""The Python API behind ``catalytic.run`` and ``catalytic.snapshot``: the same code the CLI uses."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from catalytic.isolation import Options
from catalytic.policy import declare, preflight
from catalytic.runtime import ProgressCallback, RunResult, execute
from catalytic.snapshot import DomainSnapshot, snapshot_tree
from catalytic.snapshot.digest import DEFAULT_HASH


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
    rollback_on_failure: bool = False,
    discard: bool = False,
    trace: bool | None = None,
    trace_scope: str | None = None,
    trace_backend: str | None = None,
    jobs: int = 0,
    use_cache: bool = True,
) -> RunResult:
    """Run ``command`` under CMP-01 exactly as ``catalytic run`` does and return the result.

    ``jobs`` hashing processes (0: one per core); ``use_cache=False`` hashes every file (``--no-cache``).
    Settings not given come from ``catalytic.toml`` / ``[tool.catalytic]`` at ``root`` and then
    from the seed's defaults. ``isolation`` is ``none``, ``rollback``, ``overlay`` or ``auto``
    (see docs/isolation.md). Raises :class:`~catalytic.errors.DeclarationError` (nothing run or
    written) when preflight fails.
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
    }
    policy = preflight(declare(Path(root), overrides))
    from catalytic.runtime import SnapshotSettings

    options = Options(rollback_on_failure=rollback_on_failure, discard=discard)
    return execute(
        policy,
        list(command),
        progress=progress,
        preflight_seconds=time.perf_counter() - start,
        snapshots=SnapshotSettings(jobs=jobs, use_cache=use_cache),
        options=options,
    )


def snapshot(path: str | os.PathLike[str], *, algorithm: str = DEFAULT_HASH, jobs: int = 0) -> DomainSnapshot:
    """Snapshot the tree at ``path``: every entry, sorted by path bytes, and its Merkle root."""
    return snapshot_tree(Path(path), algorithm, jobs=jobs)
