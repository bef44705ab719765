"""Domain locks: two runs whose catalytic domains overlap never run at the same time.

Each run holds, for as long as it runs, an exclusive ``flock`` on a lock file for each of its domains
and a shared one on each ancestor of a domain (hierarchical intention locks). Two runs therefore
conflict exactly when a domain of one is, contains or lies inside a domain of the other: ``a`` and
``a/b`` conflict (exclusive ``a`` against shared ``a``), ``a/x`` and ``a/y`` do not (both only share
``a``). Locks are taken without waiting; a conflict raises :class:`~catalytic.errors.LockedError`
(code ``LOCKED``, exit 2) before anything is written. The kernel drops the locks when the process
ends, however it ends, so a killed run never leaves a stale lock. The lock files live in
``<runs root>/_locks/`` (a name no run id can take) and are reused, never deleted.

A run also holds, from before its ledger directory exists until its ledger is sealed and chained, an
exclusive lock named after its run id (:func:`run_lock`): the readers of ledgers (``validate``, ``runs``,
``show``, ``export``) ask :func:`in_progress` and report a run being written as such, instead of taking
its half-written directory for a broken or planted ledger.

Beside them, one lock guards the runs root's shared state (the store under ``_store``, the stat caches
under ``_cache``, the journals under ``_commits``): every run and every ``catalytic restore`` holds it
shared for as long as it runs (a run saves its pre-state, may need it until it ends, and uses the caches
throughout); ``catalytic gc``, which deletes from them, holds it exclusively, and is refused while any
other catalytic command holds it (code ``LOCKED``). A run or restore that finds gc holding it waits for it
(up to :data:`STORE_WAIT`) instead of failing.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from catalytic import paths
from catalytic.errors import LedgerError, LockedError

LOCK_DIR = "_locks"
#: The lock file of the runs root's shared state (not a hashed name: no domain lock can take it).
STORE_LOCK = "store.lock"
#: How long a command that uses the store waits for a ``catalytic gc`` in progress to end (gc is quick;
#: a run refused because gc ran beside it would fail a CI loop for nothing).
STORE_WAIT = 30.0


def _lock_name(rel: str) -> str:
    return hashlib.sha256(paths.to_bytes(rel)).hexdigest()[:32] + ".lock"


def lock_plan(domains: Sequence[str]) -> dict[str, bool]:
    """Path -> exclusive? for a set of domains: each domain exclusive, its ancestors shared."""
    plan: dict[str, bool] = {}
    for domain in domains:
        segments = paths.parts(domain)
        for depth in range(len(segments)):
            ancestor = "/".join(segments[:depth]) or paths.ROOT
            plan.setdefault(ancestor, False)
        plan[domain] = True
    return plan


def _open(runs_root: Path, name: str) -> int:
    lock_dir = runs_root / LOCK_DIR
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LedgerError(f"cannot create the lock directory {lock_dir}: {exc.strerror or exc}") from exc
    path = lock_dir / name
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise LedgerError(f"cannot open the lock file {path}: {exc.strerror or exc}") from exc


def _try_lock(fd: int, exclusive: bool, refused: str, wait: float = 0.0) -> None:
    """Take the lock, waiting up to ``wait`` seconds for it; ``refused``: the message of the LockedError
    when it is still held then."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LedgerError(f"cannot lock {LOCK_DIR}/: {exc.strerror or exc}") from exc
            if time.monotonic() >= deadline:
                raise LockedError(refused) from None
        time.sleep(0.05)


@contextmanager
def store_lock(runs_root: Path, *, exclusive: bool, who: str) -> Iterator[None]:
    """Hold the lock of the runs root's shared state (store, caches, journals) for the ``with`` block:
    shared to use it (waiting up to :data:`STORE_WAIT` for a ``gc`` in progress), exclusive to delete from
    it (never waiting: gc is refused while a run or restore is in progress). ``who`` names the command in
    the refusal."""
    fd = _open(runs_root, STORE_LOCK)
    try:
        _try_lock(
            fd,
            exclusive,
            f"{who} refused: another catalytic command is using the store and caches of {runs_root}"
            + ("; run it again once no run or restore is in progress" if exclusive else " exclusively"),
            0.0 if exclusive else STORE_WAIT,
        )
        yield
    finally:
        os.close(fd)


def _run_lock_name(run_id: str) -> str:
    return "run-" + hashlib.sha256(run_id.encode("utf-8", "surrogateescape")).hexdigest()[:32] + ".lock"


def in_progress(runs_root: Path, run_id: str) -> bool:
    """Whether a catalytic run is writing the ledger ``run_id`` of ``runs_root`` now (it holds its run lock).

    Creates nothing (a read-only copy of a runs root has no run in progress)."""
    try:
        path = runs_root / LOCK_DIR / _run_lock_name(run_id)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)
    return False


@contextmanager
def domain_locks(
    runs_root: Path, domains: Sequence[str], run_id: str, *, who: str = "", writes_ledger: bool = True
) -> Iterator[None]:
    """Hold the locks of ``domains`` for the duration of the ``with`` block, the shared lock of the runs
    root's store and caches (:func:`store_lock`) and, when the block ``writes_ledger`` ``run_id``, its run
    lock (see :func:`in_progress`). ``who`` names the command in a refusal (default: the run ``run_id``)."""
    who = who or f"run {run_id!r}"
    with ExitStack() as stack:
        stack.enter_context(store_lock(runs_root, exclusive=False, who=who))
        if writes_ledger:
            fd = _open(runs_root, _run_lock_name(run_id))
            stack.callback(os.close, fd)
            _try_lock(fd, True, f"{who} refused: a run with the id {run_id!r} is in progress")
        for rel, exclusive in sorted(lock_plan(domains).items(), key=lambda item: paths.sort_key(item[0])):
            fd = _open(runs_root, _lock_name(rel))
            stack.callback(os.close, fd)
            _try_lock(
                fd,
                exclusive,
                f"{who} refused: another catalytic command holds a catalytic domain that "
                f"overlaps {rel!r}; commands whose domains overlap cannot run at the same time",
            )
            if exclusive:
                # Who holds it, for a human looking at the lock file (informational only).
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {run_id} {rel}\n".encode(errors="surrogateescape"), 0)
        yield
