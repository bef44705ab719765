"""Declared durable outputs as they exist after the run: the records of ``OUTPUTS.json``.

An output counts only where it is declared: every component of its path under the workspace root up
to its allowed root, and every directory above the output, must be a real directory. One of them being a
symlink (``CORTEX/_generated -> /tmp/out``) means the bytes written "to the output" may lie anywhere,
outside every allowed root: CMP-01 invariant 2 is broken. :func:`escape` finds that with descriptor-relative
opens that never follow a symlink; ``catalytic run`` fails the run with it (STATUS ``error.code``
``OUTPUT_ESCAPED``) and ``catalytic validate`` fails the ledger with the same code and message.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from catalytic import paths
from catalytic.errors import OutputEscapedError
from catalytic.events import Emit, event
from catalytic.excludes import NONE, Excludes
from catalytic.ledger.format import OutputRecord
from catalytic.snapshot import snapshot_tree
from catalytic.snapshot.entry import DIR, SYMLINK_PREFIX, kind_of

if TYPE_CHECKING:
    from catalytic.policy import Policy
    from catalytic.runtime import RunResult

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _guarded(out: str, allowed: Sequence[str]) -> tuple[str, ...]:
    """The segments of the deepest path that must be real directories: the output's parent, or the
    output itself when it is an allowed root (an allowed root is a place, never a link to one)."""
    segments = paths.parts(out)
    if any(paths.parts(root) == segments for root in allowed):
        return segments
    return segments[:-1]


def escape(root: Path, out: str, allowed: Sequence[str] = ()) -> str | None:
    """Why the declared output ``out`` is reached through a symlink, or None when it is not.

    Walks from the workspace ``root`` one component at a time (``O_NOFOLLOW``, relative to the parent's
    descriptor); a missing component is not an escape (the output is then missing, said elsewhere).
    """
    segments = _guarded(out, allowed)
    try:
        current = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None  # the workspace root itself: a missing output, reported as such
    try:
        for depth, segment in enumerate(segments):
            try:
                fd = os.open(segment, _DIR_FLAGS, dir_fd=current)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    return None
                try:
                    target = os.readlink(segment, dir_fd=current)
                except OSError:
                    return None  # not a symlink: a file where a directory was; the output is missing
                where = "/".join(segments[: depth + 1])
                return (
                    f"{where} is a symbolic link (to {target!r}): the declared output {out} is reached "
                    "through it, so what was written there may lie outside its allowed root "
                    "(CMP-01 invariant 2)"
                )
            os.close(current)
            current = fd
    finally:
        os.close(current)
    return None


#: What identifies one state of an entry: any write to it (even of the same bytes) changes one of them.
State = tuple[int, int, int, int, int, int]


def _state(st: os.stat_result) -> State:
    return (st.st_mode, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def output_states(root: Path, declared: Sequence[str]) -> dict[str, State]:
    """The state of every entry of the declared outputs as they are now (before the command), keyed by
    the path :func:`collect_outputs` records; taken with ``lstat``, never following a symlink."""
    states: dict[str, State] = {}
    for out in declared:
        if escape(root, out):
            continue
        pending = [(out, root / out)]
        while pending:
            rel, path = pending.pop()
            try:
                st = os.lstat(path)
            except OSError:
                continue
            states[rel] = _state(st)
            if stat.S_ISDIR(st.st_mode):
                try:
                    names = os.listdir(path)
                except OSError:
                    continue
                pending.extend((paths.join(rel, name), path / name) for name in names)
    return states


def collect_outputs(
    root: Path,
    declared: Sequence[str],
    excludes: Sequence[str] = (),
    before: dict[str, State] | None = None,
) -> tuple[list[OutputRecord], list[str]]:
    """Hash every declared output (sha256, always); return the records and the missing outputs.

    What the run's exclude patterns match below an output is not recorded (:mod:`catalytic.excludes`).

    A declared directory is listed itself and then every entry below it. FIFOs, sockets and
    devices are not durable artifacts in the seed's format and are not listed (the snapshot of a
    domain is where such entries are tracked). An output reached through a symlinked parent is never
    followed: it is listed as missing (and :func:`confine` fails the run). With ``before`` (the
    :func:`output_states` taken before the command), an entry still in the same state was not produced
    by this run: its record says ``"produced": false``.
    """
    records: list[OutputRecord] = []
    missing: list[str] = []
    for out in declared:
        leave_out = Excludes(tuple(excludes)).within(out) if excludes else NONE
        snap = None if escape(root, out) else snapshot_tree(root / out, "sha256", leave_out=leave_out)
        if snap is None or snap.absent:
            missing.append(out)
            continue
        for entry in snap.entries:
            path = paths.join(out, entry.path)
            record: OutputRecord
            if entry.value == DIR:
                record = {"path": path, "type": "directory"}
            elif entry.value.startswith(SYMLINK_PREFIX):
                record = {"path": path, "type": "symlink", "target": entry.value[len(SYMLINK_PREFIX) :]}
            elif kind_of(entry.value) == "file":
                record = {"path": path, "type": "file", "sha256": entry.value}
            else:
                continue
            if before is not None and path in before and _unchanged(root / path, before[path]):
                record["produced"] = False
            records.append(record)
    records.sort(key=lambda r: paths.sort_key(r["path"]))
    return records, missing


def _unchanged(path: Path, state: State) -> bool:
    try:
        return _state(os.lstat(path)) == state
    except OSError:
        return False


def confine(result: RunResult, policy: Policy, emit: Emit) -> RunResult:
    """The run's result once every declared output is checked to lie where it was declared.

    An escaped output is not recorded (it is listed in ``missing_outputs``) and makes the run dirty
    with :class:`~catalytic.errors.OutputEscapedError`. A command that succeeded yet left a declared
    output missing makes it dirty with :class:`~catalytic.errors.OutputNotProducedError`, unless the
    policy allows missing outputs (a command that failed is already a failed run: its code says so).
    """
    escaped = {
        out: why for out in policy.durable_outputs if (why := escape(policy.root, out, policy.allowed_roots))
    }
    missing = [out for out in result.missing_outputs if out not in escaped]  # escaped: failed as such
    result = _confined(result, escaped, emit)
    if missing and result.exit_code == 0 and not policy.allow_missing_outputs:
        from catalytic.errors import OutputNotProducedError
        from catalytic.ledger.documents import failed_after_proof

        names = ", ".join(missing)
        why = (
            f"declared output(s) not produced by the command: {names} "
            "(pass --allow-missing-outputs if that is expected)"
        )
        emit(event("failure", reason=why))
        return failed_after_proof(result, OutputNotProducedError(why))
    return result


def _confined(result: RunResult, escaped: dict[str, str], emit: Emit) -> RunResult:
    """``result`` without the ``escaped`` outputs (output -> why), made dirty by them."""
    if not escaped:
        return result
    reasons = list(escaped.values())
    from catalytic.ledger.documents import failed_after_proof

    for why in reasons:
        emit(event("failure", reason=why))
    outputs = [r for r in result.outputs if not any(paths.is_within(r["path"], out) for out in escaped)]
    missing = [*result.missing_outputs, *(out for out in escaped if out not in result.missing_outputs)]
    kept = replace(result, outputs=outputs, missing_outputs=missing)
    return failed_after_proof(kept, OutputEscapedError("; ".join(reasons)))
