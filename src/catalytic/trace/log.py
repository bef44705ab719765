"""The write log: events ``{timestamp, path, op}`` and the scope they are filtered to.

Paths in a log are relative to the workspace root (POSIX separators, raw bytes preserved as in
:mod:`catalytic.paths`). A path outside the workspace (the far end of a move) is absolute.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from catalytic import paths
from catalytic.trace.scopes import ScopeName

SCHEMA = "catalytic.write_log/1"
_encode_ascii = json.JSONEncoder(ensure_ascii=False).encode
Op = Literal["create", "modify", "delete", "move", "mkdir", "rmdir", "chmod"]


def _json_string(value: str) -> str:
    if value.isascii():
        return _encode_ascii(value)
    from catalytic.ledger.canonical import dumps

    return dumps(value)[:-1]


def now_iso() -> str:
    """The current time, UTC ISO-8601 with microseconds (the ledger's timestamp format)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class TraceEvent:
    """One write seen by a backend. ``dest`` only for moves; ``pid``/``process`` when known.

    Not frozen: a run can log hundreds of thousands of these, and slots make them cheap.
    """

    timestamp: str
    path: str
    op: Op
    dest: str | None = None
    pid: int | None = None
    process: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "timestamp": self.timestamp,
            "path": self.path,
            "op": self.op,
            "pid": self.pid,
            "process": self.process,
        }
        if self.op == "move":
            doc["dest"] = self.dest
        return doc


@dataclass
class TraceLog:
    """What a backend saw; ``complete`` is false (with reasons) whenever an event may be missing."""

    backend: str
    scope: str
    paths: list[str]
    started_at: str
    stopped_at: str = ""
    events: list[TraceEvent] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.reasons

    @property
    def reason(self) -> str | None:
        return "; ".join(self.reasons) if self.reasons else None

    def incomplete(self, reason: str) -> None:
        """Record why events may be missing (each reason once)."""
        if reason not in self.reasons:
            self.reasons.append(reason)

    def touched(self) -> set[str]:
        """Every path named by an event (both ends of moves)."""
        seen = {e.path for e in self.events}
        seen.update(e.dest for e in self.events if e.dest is not None)
        return seen

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA,
            "backend": self.backend,
            "scope": self.scope,
            "paths": self.paths,
            "complete": self.complete,
            "reason": self.reason,
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "events": [e.to_json() for e in self.events],
        }

    def encode(self) -> bytes:
        """Canonical JSON of :meth:`to_json`, byte for byte, built without the generic encoder.

        A traced run can log hundreds of thousands of events; the generic canonical encoder spends
        most of a traced run's overhead on them, while every event has the same keys.
        """
        from catalytic.ledger.canonical import dumps

        head = self.to_json()
        head["events"] = []
        text = dumps(head)
        cut = text.rindex('"events":[]') + len('"events":[')
        cache: dict[str | None, str] = {}

        def s(value: str | None) -> str:
            found = cache.get(value)
            if found is None:
                found = "null" if value is None else _json_string(value)
                cache[value] = found
            return found

        parts = []
        for e in self.events:
            pid = "null" if e.pid is None else str(e.pid)
            dest = f'"dest":{s(e.dest)},' if e.op == "move" else ""
            parts.append(
                f'{{{dest}"op":"{e.op}","path":{s(e.path)},"pid":{pid},"process":{s(e.process)},'
                f'"timestamp":{s(e.timestamp)}}}'
            )
        return (text[:cut] + ",".join(parts) + text[cut:]).encode("utf-8")

    def summary(self) -> dict[str, Any]:
        """The ``trace`` object of RUN_INFO."""
        return {
            "backend": self.backend,
            "scope": self.scope,
            "complete": self.complete,
            "reason": self.reason,
            "events": len(self.events),
        }


@dataclass(frozen=True)
class TraceScope:
    """Where to trace: ``paths`` (relative to ``root``) minus ``exclude`` (the runs root)."""

    root: Path
    name: ScopeName
    paths: tuple[str, ...]
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_root_b", os.fsencode(os.path.abspath(self.root)))

    @property
    def root_bytes(self) -> bytes:
        return self._root_b  # type: ignore[attr-defined, no-any-return]

    def relative(self, absolute: bytes) -> str | None:
        """``absolute`` relative to the root, or None when it is not inside the root."""
        root = self.root_bytes
        if absolute == root:
            return paths.ROOT
        if root == b"/":
            rest = absolute[1:]
        elif absolute.startswith(root + b"/"):
            rest = absolute[len(root) + 1 :]
        else:
            return None
        return rest.decode("utf-8", "surrogateescape")

    def contains(self, rel: str | None) -> bool:
        """True when ``rel`` (from :meth:`relative`) is in the traced part of the workspace."""
        if rel is None:
            return False
        if any(paths.is_within(rel, ex) for ex in self.exclude):
            return False
        return any(paths.is_within(rel, p) for p in self.paths)

    def name_of(self, absolute: bytes) -> str:
        """How a log names ``absolute``: relative when inside the root, else absolute."""
        rel = self.relative(absolute)
        return rel if rel is not None else absolute.decode("utf-8", "surrogateescape")

    def watch_roots(self) -> list[Path]:
        """Existing directories to watch: each scope path, or its nearest existing ancestor."""
        roots: list[Path] = []
        for rel in self.paths:
            path = self.root if rel == paths.ROOT else self.root / rel
            while not path.is_dir() and path != self.root:
                path = path.parent
            if path not in roots:
                roots.append(path)
        # Drop roots inside another root: a recursive watch of the outer one covers them.
        return [r for r in roots if not any(o != r and o in r.parents for o in roots)]
