"""What a run reports while it goes: structured events, and the one function that words them.

The runtime, the isolation backends and the tracer emit an :class:`Event` (a kind from the closed set
:data:`KINDS` and its fields) through an :data:`Emit` callback; they never write or word a line. The CLI
prints each event as the line :func:`render` makes of it; :func:`catalytic.run`'s ``progress`` callback
receives the same lines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

EventKind = Literal[
    "snapshot_taken",
    "store_fallback",
    "recovered",
    "move_check_limited",
    "pre_snapshots",
    "executing",
    "command_error",
    "command_exited",
    "cache_changed",
    "post_snapshots",
    "verifying",
    "restored",
    "unprovable",
    "interrupted_before_proof",
    "not_restored",
    "domain_diff",
    "diff_entry",
    "output_missing",
    "failure",
    "trace_summary",
    "trace_incomplete",
    "undeclared_write",
    "recording",
    "ledger",
    "trace_fallback",
    "untraced",
    "tracing",
    "overlay_post_snapshot",
    "real_tree_changed",
    "nothing_committed",
    "write_set_kept",
    "outputs_committed",
    "determinism_second_run",
    "determinism_real_changed",
    "determinism_result",
    "rollback_saved",
    "rollback_start",
    "rollback_proven",
    "rollback_failed",
]
KINDS: tuple[EventKind, ...] = get_args(EventKind)


@dataclass(frozen=True)
class Event:
    """One thing a run reports: its kind and the facts that go with it (JSON-ready values)."""

    kind: EventKind
    fields: Mapping[str, Any] = field(default_factory=dict)


def event(kind: EventKind, /, **fields: Any) -> Event:
    """An :class:`Event` of ``kind`` with ``fields``."""
    return Event(kind, fields)


#: Where events go.
Emit = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """An :data:`Emit` that drops every event."""


def _shown(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _undeclared(f: Mapping[str, Any]) -> str:
    write = f.get("write")  # what the overlay saw: created, modified, whiteout...
    return f"  undeclared write: {f['path']}" + (f" ({write})" if write else "")


def _overlay_post(f: Mapping[str, Any]) -> str:
    what = "absent" if f["absent"] else f"{f['files']} files"
    return f"Snapshots post: {f['domain']} ({what}, lower + upper)"


_LINES: dict[EventKind, Callable[[Mapping[str, Any]], str]] = {
    "snapshot_taken": lambda f: (
        f"Snapshots {f['label']}: {f['domain']} ({'absent' if f['absent'] else str(f['files']) + ' files'})"
    ),
    "store_fallback": lambda f: f"WARNING: {f['reason']}; snapshots are taken in memory instead",
    "recovered": lambda f: f"Recovered the interrupted {f['what']} of run {f['run_id']}: {f['action']}",
    "move_check_limited": lambda f: f"WARNING: domain-move check {f['state']}: {f['reason']}",
    "pre_snapshots": lambda f: "Phase 1: Capturing pre-snapshots...",
    "executing": lambda f: f"Phase 2: Executing command: {f['command']}",
    "command_error": lambda f: f"ERROR: {f['error']}",
    "command_exited": lambda f: f"Command exited with code {f['code']}",
    "cache_changed": lambda f: (
        f"WARNING: the stat cache was changed while the command ran ({_shown(f['changed'])}); nothing in "
        "it is trusted: every file is hashed again"
    ),
    "post_snapshots": lambda f: "Phase 3: Capturing post-snapshots...",
    "verifying": lambda f: "Phase 4: Verifying restoration...",
    "restored": lambda f: "SUCCESS: Catalytic domains fully restored",
    "unprovable": lambda f: f"FAILURE: cannot prove restoration: {f['code']}: {f['message']}",
    "interrupted_before_proof": lambda f: f"FAILURE: interrupted by {f['signal']} before the proof",
    "not_restored": lambda f: "FAILURE: Catalytic domains NOT restored",
    "domain_diff": lambda f: (
        f"  {f['domain']}: {f['added']} added, {f['removed']} removed, {f['changed']} changed"
    ),
    "diff_entry": lambda f: f"    {f['change']:<8}{f['path']}" + (f" ({f['what']})" if f.get("what") else ""),
    "output_missing": lambda f: f"WARNING: declared durable output {f['path']} does not exist",
    "failure": lambda f: f"FAILURE: {f['reason']}",
    "trace_summary": lambda f: (
        f"Write trace ({f['backend']}): {f['events']} events, "
        + ("complete" if f["complete"] else f"INCOMPLETE: {f['reason']}")
    ),
    "trace_incomplete": lambda f: (
        f"WARNING: the write trace is incomplete ({f['reason']}): writes outside the domains and "
        "outputs may have gone unrecorded (CMP-01 invariant 1 is not proven)"
    ),
    "undeclared_write": _undeclared,
    "recording": lambda f: "Phase 5: Saving run ledger...",
    "ledger": lambda f: f"Ledger: {f['path']}",
    "trace_fallback": lambda f: f"WARNING: trace backend {f['failure']}",
    "untraced": lambda f: (
        "WARNING: writes are not traced (no backend can watch here); the run goes on untraced"
    ),
    "tracing": lambda f: f"Tracing writes with {f['backend']} (scope: {f['scope']})",
    "overlay_post_snapshot": _overlay_post,
    "real_tree_changed": lambda f: (
        f"Snapshots post: {f['domain']} CHANGED on the real tree, past the overlay"
    ),
    "nothing_committed": lambda f: "Overlay: nothing committed to the real tree",
    "write_set_kept": lambda f: f"Overlay: the write set is kept in {f['path']}",
    "outputs_committed": lambda f: f"Overlay: declared outputs committed ({f['checked']} checked)",
    "determinism_second_run": lambda f: (
        "Determinism check: running the command a second time in its own overlay..."
    ),
    "determinism_real_changed": lambda f: "Determinism check: the real domains CHANGED during the second run",
    "determinism_result": lambda f: f"Determinism check: outputs {'identical' if f['equal'] else 'DIFFER'}",
    "rollback_saved": lambda f: (
        f"Rollback: pre-state saved ({f['files']} files, {f['new_objects']} new objects in the store)"
    ),
    "rollback_start": lambda f: f"Rollback: {f['why']}; putting the domains and outputs back...",
    "rollback_proven": lambda f: "Rollback: restoration proven by a fresh snapshot",
    "rollback_failed": lambda f: (
        f"Rollback: FAILED to restore everything; leftovers copied to {f['quarantine']}"
    ),
}


def render(item: Event) -> str:
    """The progress line of an event, as ``catalytic run`` prints it (without its ``[catalytic]`` prefix)."""
    return _LINES[item.kind](item.fields)


def lines(progress: Callable[[str], None] | None) -> Emit | None:
    """An :data:`Emit` that hands ``progress`` the rendered line of each event (None stays None)."""
    if progress is None:
        return None
    return lambda item: progress(render(item))
