"""Domain locks: two runs whose catalytic domains overlap never run at the same time.

Each run holds, for as long as it runs, an exclusive ``flock`` on a lock file for each of its domains
and a shared one on each ancestor of a domain (hierarchical intention locks). Two runs therefore
conflict exactly when a domain of one is, contains or lies inside a domain of the other: ``a`` and
``a/b`` conflict (exclusive ``a`` against shared ``a``), ``a/x`` and ``a/y`` do not (both only share
``a``). Locks are taken without waiting; a conflict raises :class:`~catalytic.errors.LockedError`
(code ``LOCKED``, exit 2) before anything is written. The kernel drops the locks when the process
ends, however it ends, so a killed run never leaves a stale lock. The lock files live in
``<runs root>/_locks/`` (a name no run id can take) and are reused, never deleted.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from catalytic import paths
from catalytic.errors import LedgerError, LockedError

LOCK_DIR = "_locks"


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


@contextmanager
def domain_locks(runs_root: Path, domains: Sequence[str], run_id: str) -> Iterator[None]:
    """Hold the locks of ``domains`` for the duration of the ``with`` block."""
    lock_dir = runs_root / LOCK_DIR
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LedgerError(f"cannot create the lock directory {lock_dir}: {exc.strerror or exc}") from exc
    with ExitStack() as stack:
        for rel, exclusive in sorted(lock_plan(domains).items(), key=lambda item: paths.sort_key(item[0])):
            path = lock_dir / _lock_name(rel)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise LedgerError(f"cannot open the lock file {path}: {exc.strerror or exc}") from exc
            stack.callback(os.close, fd)
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise LedgerError(f"cannot lock {path}: {exc.strerror or exc}") from exc
                raise LockedError(
                    f"run {run_id!r} refused: another catalytic run holds a catalytic domain that "
                    f"overlaps {rel!r}; runs whose domains overlap cannot run at the same time"
                ) from None
            if exclusive:
                # Who holds it, for a human looking at the lock file (informational only).
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {run_id} {rel}\n".encode(errors="surrogateescape"), 0)
        yield
