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
import re
import stat
from pathlib import Path
from typing import Any

from catalytic import faults, paths
from catalytic.errors import CatalyticError
from catalytic.isolation.restore import STAGED_SUFFIX, remove_tree, tree_parent
from catalytic.ledger.canonical import write_json

COMMITS_DIR = "_commits"
#: The suffix of a restore's staging journal (``<run_id>.<pid>.staged``), beside the commit journals.
STAGING_SUFFIX = ".staged"
_STAGED_NAME = re.compile(r"\..+\.[0-9a-f]{16}" + re.escape(STAGED_SUFFIX))


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


class Staging:
    """The journal of the temporary files a restore writes in the real tree before renaming them into place.

    Each name is appended (one JSON line: the trusted directory and the path below it) before the file is
    created, with a plain ``write``: the kernel keeps it however the process dies (a power loss may lose
    it). The journal is removed when the restore ends; one left behind by a killed process is read by
    :func:`recover`, which removes the files it names that are still there.
    """

    def __init__(self, runs_root: Path, run_id: str) -> None:
        self.path = runs_root / COMMITS_DIR / f"{run_id}.{os.getpid()}{STAGING_SUFFIX}"
        self.run_id = run_id
        self.fd: int | None = None

    def record(self, anchor: Path, rel: str) -> None:
        if self.fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644
            )
            self._line({"pid": os.getpid(), "run_id": self.run_id})
        self._line([str(anchor), rel])

    def _line(self, doc: object) -> None:
        assert self.fd is not None
        os.write(self.fd, json.dumps(doc).encode() + b"\n")

    def close(self) -> None:
        """The restore is over (each staged file was renamed into place or removed): drop the journal."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _remove_staged(path: Path) -> dict[str, str] | None:
    """Remove what the staging journal ``path`` of a dead process names; None if it is not one of those.

    The journal lies in the runs root, which the command can write: only a regular file whose name has the
    form of a staged restore (``.<name>.<16 hex digits>.restore``) is removed, reached without following
    a symlink from the directory the journal names."""
    try:
        lines = path.read_bytes().splitlines()
        head = json.loads(lines[0]) if lines else {}
    except (OSError, ValueError):
        return None
    if not isinstance(head, dict) or _alive(head.get("pid")):
        return None
    removed: list[str] = []
    for line in lines[1:]:
        try:
            anchor, rel = json.loads(line)
            if not (isinstance(anchor, str) and isinstance(rel, str)):
                continue
        except (ValueError, TypeError):
            continue
        if not _STAGED_NAME.fullmatch(paths.parts(rel)[-1] if rel else ""):
            continue
        try:
            fd, name = tree_parent(Path(anchor), rel)
        except (OSError, CatalyticError):  # a missing or unsafe directory: nothing of ours to remove there
            continue
        try:
            if stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                os.unlink(name, dir_fd=fd)
                removed.append(rel)
        except OSError:
            pass
        finally:
            os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return {
        "run_id": str(head.get("run_id")),
        "what": "restore",
        "action": f"removed {len(removed)} file(s) it had staged: {', '.join(removed) or 'none left'}",
    }


def recover(runs_root: Path) -> list[dict[str, str]]:
    """Complete (``swapping``) or undo (``staging``) the commits of dead processes, and remove the files
    their restores had staged; what was done (``run_id``, ``what``, ``action``)."""
    directory = runs_root / COMMITS_DIR
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    done: list[dict[str, str]] = []
    for name in names:
        if name.endswith(STAGING_SUFFIX):
            staged = _remove_staged(directory / name)
            if staged is not None:
                done.append(staged)
            continue
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
        done.append({"run_id": str(doc.get("run_id")), "what": "output commit", "action": action})
    return done
