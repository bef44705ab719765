"""The commit journal: an overlay run's declared outputs reach the real tree all together or not at all.

Committing several outputs cannot be one atomic rename, so the overlay backend commits in two steps:

1. every output is built complete in a staging directory (``<ledger>/commit/<n>``, or next to the
   output when the runs root is on another filesystem) while a journal in state ``staging`` lists
   the staging paths; the real tree is untouched;
2. the journal is rewritten (atomically) in state ``swapping``; from then on the commit is decided,
   and each output is swapped in by two renames (the old tree aside to ``<staging>.old``, the staged
   tree into place). The staging directories are removed, then the journal.

The journal lives at ``<runs root>/_commits/<run_id>.json`` with the committing process's pid. If
that process dies (SIGKILL, power loss) the next ``catalytic run`` on the same runs root calls
:func:`recover`: a ``staging`` journal is undone (staging removed, real tree never touched), a
``swapping`` journal is rolled forward (every output not yet swapped in is). Each step is
idempotent, so a recovery that is itself killed is simply redone. ``catalytic restore RUN_ID``
recovers too before doing anything else.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from catalytic import faults
from catalytic.isolation.restore import remove_tree
from catalytic.ledger.canonical import write_json

COMMITS_DIR = "_commits"


def journal_path(runs_root: Path, run_id: str) -> Path:
    return runs_root / COMMITS_DIR / f"{run_id}.json"


def write(runs_root: Path, run_id: str, state: str, root: Path, entries: list[dict[str, Any]]) -> Path:
    """Write (or replace, atomically) the journal of ``run_id`` in ``state``."""
    path = journal_path(runs_root, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"run_id": run_id, "pid": os.getpid(), "state": state, "root": str(root), "entries": entries}
    write_json(path, doc)
    return path


def apply(root: Path, entry: dict[str, Any]) -> None:
    """Swap one output in (idempotent: redoing a finished or half-finished swap completes it)."""
    target = root / entry["path"]
    staged = Path(entry["staged"])
    old = Path(entry["staged"] + ".old")
    if entry["action"] == "deleted":
        if os.path.lexists(target) and not os.path.lexists(old):
            os.rename(target, old)
        return
    if not os.path.lexists(staged):
        return  # already in place
    if os.path.lexists(target) and not os.path.lexists(old):
        os.rename(target, old)
    elif os.path.lexists(target):
        remove_tree(target)  # a previous attempt moved the old tree aside already
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staged, target)


def swap_all(root: Path, entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        faults.point("overlay.swap")
        apply(root, entry)
    faults.point("overlay.swapped")


def cleanup(path: Path, entries: list[dict[str, Any]]) -> None:
    """Remove the staging paths (and what was swapped out), then the journal itself."""
    for entry in entries:
        for p in (Path(entry["staged"]), Path(entry["staged"] + ".old")):
            remove_tree(p)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return False  # a journal of ours we are not writing now is a leftover
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(runs_root: Path) -> list[dict[str, str]]:
    """Complete (``swapping``) or undo (``staging``) the commits of dead processes; what was done."""
    directory = runs_root / COMMITS_DIR
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    done: list[dict[str, str]] = []
    for name in names:
        if not name.endswith(".json"):
            continue
        path = directory / name
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or _alive(doc.get("pid")):
            continue
        entries = [e for e in doc.get("entries", []) if isinstance(e, dict)]
        try:
            if doc.get("state") == "swapping":
                root = Path(str(doc.get("root")))
                for entry in entries:
                    apply(root, entry)
                action = "completed"
            else:
                action = "undone"
            cleanup(path, entries)
        except (OSError, KeyError, TypeError):
            continue
        done.append({"run_id": str(doc.get("run_id")), "action": action})
    return done
