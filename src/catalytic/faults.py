"""Named fault points, so the adversarial suite can kill or pause the runtime at a precise moment.

Set ``CATALYTIC_FAULT=<point>[@<n>]:<action>`` in the environment of a run: when the runtime reaches
``<point>`` for the ``n``-th time (default the first), it performs ``<action>``:

- ``kill``: ``SIGKILL`` itself (nothing can clean up: the harshest crash there is);
- ``pause``: create the file named by ``CATALYTIC_FAULT_READY`` (if set), then sleep until that file
  is removed (or 120 seconds pass), so a test can act on the paused run (send a signal, write into a
  domain, remount the runs root) and then let it go on.

The variable is read once, at import; when it is unset every :func:`point` call is a single global
check, so the hooks cost nothing in normal runs. The points are listed in :data:`POINTS` and
:data:`ISOLATION_POINTS`. Points in
the walker (``entry``) are named after the phase that is walking: ``snapshot_pre.entry`` or
``snapshot_post.entry``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

ENV = "CATALYTIC_FAULT"
READY_ENV = "CATALYTIC_FAULT_READY"
PAUSE_LIMIT = 120.0

#: Every point the runtime reports, in the order a run reaches them.
POINTS = (
    "run.begin",  # execute() entered, nothing written yet
    "ledger.reserved",  # domains locked, ledger directory created (empty)
    "snapshot_pre.begin",
    "snapshot_pre.entry",  # inside the walker, before describing each entry
    "snapshot_pre.end",
    "execute.begin",
    "execute.spawned",  # the child is running
    "execute.end",
    "snapshot_post.begin",
    "snapshot_post.entry",
    "snapshot_post.end",
    "verify.end",
    "record.begin",  # ledger documents built, nothing of the ledger written yet
    "record.file",  # before each ledger file (the n-th is the n-th file of WRITE_ORDER)
    "record.synced",  # a ledger file's bytes are on disk but not yet under their name
    "record.status",  # every other ledger file under its name and durable, STATUS.json not yet
    "record.end",  # STATUS.json written
)

#: The points only runs with ``--isolation rollback`` or ``overlay`` reach (between ``verify.end`` and
#: ``record.begin``; the overlay ones only when outputs are committed, the rollback ones only when a
#: dirty run is put back; ``rollback.saved`` alone comes earlier, before ``execute.begin``).
ISOLATION_POINTS = (
    "rollback.saved",  # rollback: the pre-state's objects are stored, its state document not yet written
    "finish.begin",  # backend about to commit / roll back (verdict known, nothing written yet)
    "overlay.build",  # journal 'staging' written; before building each output in staging (n-th output)
    "overlay.staged",  # every output built in staging, commit journal 'swapping' written, nothing swapped
    "overlay.swap",  # before swapping each changed declared output into the real tree (n-th output)
    "overlay.swapped",  # every output swapped in; staging and journal not yet removed
    "rollback.tree",  # before restoring each domain / output tree (n-th tree)
    "rollback.entry",  # before each removal or re-creation inside a restored tree (n-th overall)
    "rollback.staged",  # a restored file is written beside its place, not yet renamed into it (n-th file)
)


def _parse(spec: str | None) -> tuple[str, int, str] | None:
    if not spec:
        return None
    target, _, action = spec.rpartition(":")
    name, _, count = target.partition("@")
    if action not in ("kill", "pause") or not name:
        return None
    try:
        nth = int(count) if count else 1
    except ValueError:
        return None
    return name, max(nth, 1), action


_TARGET = _parse(os.environ.get(ENV))
#: True when a fault is armed; callers in hot loops check this before calling :func:`point`.
ACTIVE = _TARGET is not None
_state: dict[str, Any] = {"phase": "", "hits": 0}


def point(name: str) -> None:
    """Report that the runtime reached ``name``; acts only when ``CATALYTIC_FAULT`` targets it."""
    if _TARGET is None:
        return
    if name.endswith(".begin"):
        _state["phase"] = name.rsplit(".", 1)[0]
    elif "." not in name:
        name = f"{_state['phase']}.{name}"
    target, nth, action = _TARGET
    if name != target:
        return
    _state["hits"] += 1
    if _state["hits"] != nth:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    ready = os.environ.get(READY_ENV)
    if not ready:
        time.sleep(PAUSE_LIMIT)
        return
    Path(ready).write_text(f"{os.getpid()}\n")
    deadline = time.monotonic() + PAUSE_LIMIT
    while os.path.exists(ready) and time.monotonic() < deadline:
        time.sleep(0.01)
