"""Phase 5's content: the ledger documents of a finished run (written by :mod:`catalytic.ledger.writer`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalytic import __version__, paths
from catalytic import _sysinfo as platform  # not the stdlib module: importing that costs a run ~1.5 ms
from catalytic._sysinfo import utc_timestamp
from catalytic.errors import (
    DomainMovedError,
    ForeignLedgerError,
    LingeringError,
    OutputEscapedError,
    OutputNotProducedError,
    UndeclaredWriteError,
)
from catalytic.isolation import Facts
from catalytic.ledger import format as fmt
from catalytic.policy import Policy, left_out
from catalytic.snapshot.domains import Snapshot, SnapshotSettings

if TYPE_CHECKING:
    from catalytic.runtime import RunResult

#: The phases whose durations RUN_INFO records, in order.
PHASES = ("preflight", "snapshot_pre", "execute", "snapshot_post", "verify", "record")


def now() -> str:
    """The current UTC time as RUN_INFO writes it."""
    return utc_timestamp()


def _spooled(snaps: Sequence[Snapshot]) -> tuple[Any, Any]:
    """The MANIFEST and MODES documents of streamed snapshots (written from their spools)."""
    from catalytic.ledger.writer import Spooled

    ordered = sorted(snaps, key=lambda s: paths.sort_key(s.domain))
    return (
        Spooled([(s.domain, s.manifest.chunks) for s in ordered]),
        Spooled([(s.domain, s.modes.chunks) for s in ordered]),
    )


def _same(first: Any, second: Any) -> bool:
    """True when two documents have the same canonical bytes (spooled ones are compared by digest)."""
    from catalytic.ledger.writer import Spooled

    if isinstance(first, Spooled) and isinstance(second, Spooled):
        digests = []
        for document in (first, second):
            hasher = hashlib.sha256()
            for chunk in document.chunks():
                hasher.update(chunk)
            digests.append(hasher.digest())
        return digests[0] == digests[1]
    return not isinstance(first, Spooled) and not isinstance(second, Spooled) and first == second


#: Errors found after the domains' proof (the ledger directory, the outputs): they fail the run and
#: are reported after the domains' own verdict.
AFTER_PROOF = (ForeignLedgerError, OutputEscapedError, OutputNotProducedError, UndeclaredWriteError)
AfterProof = ForeignLedgerError | OutputEscapedError | OutputNotProducedError | UndeclaredWriteError


def failed_after_proof(result: RunResult, error: AfterProof) -> RunResult:
    """``result`` made dirty and unverified by ``error`` (an earlier error is kept in its message)."""
    if result.error is not None:
        error = type(error)(f"{error.message}; also {result.error.code}: {result.error.message}")
    return replace(result, status="dirty", restoration_verified=False, error=error)


def _reason(result: RunResult) -> str | None:
    if result.restored:
        return None
    if isinstance(result.error, AFTER_PROOF):
        # Found after the proof: the domains' own verdict still counts, and is said first.
        found = f"{result.error.code}: {result.error.message}"
        rest = replace(result, error=None)
        failed = result.interrupted or any(not d.clean for d in result.diff.values())
        if failed or (result.facts is not None and result.facts.failed):
            return f"{_reason(rest)}; {found}"
        return found
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


def documents(
    policy: Policy,
    command: Sequence[str],
    result: RunResult,
    pre: list[Snapshot],
    post: list[Snapshot],
    started: str,
    cwd: Path | None,
    settings: SnapshotSettings | None = None,
) -> dict[str, Any]:
    from catalytic.snapshot.merkle import MERKLE_FORMAT
    from catalytic.snapshot.report import default_jobs

    def root_of(snap: Snapshot) -> str:
        return str(snap.merkle_root)

    settings = settings or SnapshotSettings()
    post_by_domain = {s.domain: s for s in post if s.domain in result.diff}
    merkle_roots = {
        s.domain: {
            "pre": root_of(s),
            "post": root_of(post_by_domain[s.domain]) if s.domain in post_by_domain else None,
        }
        for s in pre
    }
    if settings.distrusted:
        cache = "distrusted"
    elif not settings.use_cache:
        cache = "disabled"
    else:
        cache = "used" if pre and all(s.cache == "used" for s in pre) else "rebuilt"
    post_done = [s for s in post if s.domain in result.diff]
    pre_manifest, pre_modes = _spooled(pre)
    post_manifest, post_modes = _spooled(post_done)
    # Nothing changed: the POST documents are the PRE ones, written once under both names.
    if _same(pre_manifest, post_manifest):
        post_manifest = pre_manifest
    if _same(pre_modes, post_modes):
        post_modes = pre_modes
    run_info: dict[str, Any] = {
        "run_id": policy.run_id,
        "timestamp": started,
        "finished_at": now(),
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
        "allow_missing_outputs": policy.allow_missing_outputs,
        "command": list(command),
        "cwd": str(cwd or Path.cwd()),
        "root": str(policy.root),
        "root_found_by": policy.found_by,
        "profile": policy.profile,
        "left_out": {d: found for d in policy.catalytic_domains if (found := left_out(policy, d))},
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
        "excludes": {"patterns": list(policy.excludes), "from_gitignore": policy.exclude_from_gitignore},
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
