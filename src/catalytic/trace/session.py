"""Tracing for one run: the scope a policy asks for, started before the child and stopped after it."""

from __future__ import annotations

from catalytic import paths
from catalytic.events import Emit, event
from catalytic.policy import Policy
from catalytic.trace import Tracer, open_tracer
from catalytic.trace.log import TraceLog, TraceScope, now_iso


def scope_for(policy: Policy) -> TraceScope:
    """``domains``: the catalytic domains; ``workspace``: the whole root. The runs root never."""
    traced = (paths.ROOT,) if policy.trace_scope == "workspace" else policy.catalytic_domains
    return TraceScope(policy.root, policy.trace_scope, tuple(traced), (policy.runs_root,))  # type: ignore[arg-type]


def start_trace(policy: Policy, emit: Emit) -> Tracer:
    """Start the policy's backend (falling back as :func:`open_tracer` does) and report which one runs."""
    tracer, failures = open_tracer(policy.trace_backend, scope_for(policy))
    for line in failures:
        emit(event("trace_fallback", failure=line))
    if tracer.name == "none":
        emit(event("untraced"))
    else:
        emit(event("tracing", backend=tracer.name, scope=policy.trace_scope))
    return tracer


def stop_trace(tracer: Tracer, policy: Policy) -> TraceLog:
    """Stop ``tracer``; a tracer that fails never costs the run its ledger, only its log."""
    try:
        return tracer.stop()
    except Exception as exc:  # the snapshot is the authority: record the failure and go on
        scope = scope_for(policy)
        log = TraceLog(tracer.name, scope.name, list(scope.paths), now_iso(), now_iso())
        log.incomplete(f"the {tracer.name} tracer failed: {type(exc).__name__}: {exc}")
        return log


def undeclared_in(log: TraceLog, policy: Policy) -> list[str]:
    """The paths of ``log`` written outside the domains and declared outputs (CMP-01 invariant 1), by the
    rule overlay applies to its upper layer; a directory above a domain or an output (made for it) is not
    one."""
    from catalytic.isolation.upper import write_reason

    roots = [*policy.catalytic_domains, *policy.durable_outputs]
    found = {
        rel
        for rel in log.touched()
        if write_reason(policy, rel) is None and not any(paths.is_within(r, rel) for r in roots)
    }
    return sorted(found, key=paths.sort_key)
