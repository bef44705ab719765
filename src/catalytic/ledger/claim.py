"""The run's own ledger directory: catalytic's from preflight on, and proved still ours before it is written.

The command runs as the same user and can write into the runs root, so the directory ``<runs root>/<run
id>/`` is trusted only as the directory :func:`claim` created (the same device and inode) holding nothing
but what catalytic put there. Anything else found there (a planted ``RUN_INFO.json``, a symlink, a whole
directory put in its place) is moved aside into ``quarantine/foreign`` and makes the run dirty with the
reason (STATUS ``error.code`` ``LEDGER_FOREIGN``): it is never taken for catalytic's own ledger, and never
the cause of an internal error. Every step opens relative to a descriptor and never follows a symlink.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from catalytic.errors import ForeignLedgerError, LedgerError
from catalytic.events import Emit, event

if TYPE_CHECKING:
    from catalytic.runtime import RunResult

#: Where foreign entries go, inside the ledger directory (``quarantine/`` is CMP-01's place for leftovers).
QUARANTINE = "quarantine"
FOREIGN = "foreign"
#: What an isolation backend may create in the ledger directory after the command ended (isolation/).
BACKEND_ENTRIES = frozenset({QUARANTINE, "commit"})

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: How many foreign names a reason lists before it says "and N more".
_NAMED = 8


@dataclass
class Claim:
    """The ledger directory a run reserved, by identity; ``reasons`` says what was found foreign so far."""

    runs_root: Path
    run_id: str
    dev: int
    ino: int
    #: The runs root's own identity (device, inode).
    root_id: tuple[int, int]
    reasons: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.runs_root / self.run_id

    def check(self, *, after_backend: bool = False) -> None:
        """Check the directory is still ours and holds only our entries; move anything else aside.

        Before the isolation backend's ``finish`` nothing may be there; after it, only the backend's
        own directories (:data:`BACKEND_ENTRIES`), as real directories.
        """
        reason = _check(self, BACKEND_ENTRIES if after_backend else frozenset())
        if reason is not None and reason not in self.reasons:
            self.reasons.append(reason)

    def settle(self, result: RunResult, emit: Emit) -> RunResult:
        """The last check, just before the ledger is written; a foreign find makes the run dirty."""
        self.check(after_backend=True)
        if not self.reasons:
            return result
        from catalytic.ledger.documents import failed_after_proof

        message = "; ".join(self.reasons)
        emit(event("failure", reason=message))
        return failed_after_proof(result, ForeignLedgerError(message))


def claim(runs_root: Path, run_id: str) -> Claim:
    """Create ``runs_root/run_id`` exclusively (:func:`~catalytic.ledger.writer.reserve`), remember it."""
    from catalytic.ledger.writer import reserve

    ledger_dir = reserve(runs_root, run_id)
    try:
        st, root = os.lstat(ledger_dir), os.lstat(runs_root)
    except OSError as exc:
        raise LedgerError(f"cannot stat the ledger {ledger_dir}: {exc.strerror or exc}") from exc
    return Claim(runs_root, run_id, st.st_dev, st.st_ino, (root.st_dev, root.st_ino))


@contextlib.contextmanager
def _opened(name: str | Path, dir_fd: int | None = None) -> Iterator[int]:
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _check(claim: Claim, ours: frozenset[str]) -> str | None:
    try:
        runs_fd = os.open(claim.runs_root, _DIR_FLAGS)
    except OSError as exc:
        raise _root_gone(claim, exc.strerror or str(exc)) from exc
    try:
        st_root = os.fstat(runs_fd)
        if (st_root.st_dev, st_root.st_ino) != claim.root_id:
            raise _root_gone(claim, "another directory stands at its place")
        try:
            st: os.stat_result | None = os.stat(claim.run_id, dir_fd=runs_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is None or not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) != (claim.dev, claim.ino):
            _take_back(claim, runs_fd, st is not None)
            what = "removed" if st is None else "replaced"
            where = f"; what was there is in {QUARANTINE}/{FOREIGN}" if st is not None else ""
            return f"the ledger directory {claim.run_id} was {what} while the command ran{where}"
        with _opened(claim.run_id, runs_fd) as fd:
            if (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != (claim.dev, claim.ino):
                raise LedgerError(f"the ledger directory {claim.path} keeps being replaced")
            foreign = sorted(name for name in os.listdir(fd) if not _ours(fd, name, ours))
            if not foreign:
                return None
            moved = _move_aside(fd, foreign)
    except OSError as exc:
        raise LedgerError(f"cannot check the ledger directory {claim.path}: {exc.strerror or exc}") from exc
    finally:
        os.close(runs_fd)
    shown = ", ".join(foreign[:_NAMED]) + (
        f" and {len(foreign) - _NAMED} more" if len(foreign) > _NAMED else ""
    )
    return (
        f"files catalytic did not write were found in the ledger directory ({shown}); "
        f"moved to {QUARANTINE}/{moved}, never taken for the ledger"
    )


def _root_gone(claim: Claim, why: str) -> ForeignLedgerError:
    """The runs root itself is no longer the one the run reserved its ledger in: nowhere to write one."""
    return ForeignLedgerError(
        f"the runs root {claim.runs_root} was replaced or removed while the command ran ({why}); "
        f"no ledger of run {claim.run_id} can be written there"
    )


def _ours(dir_fd: int, name: str, ours: frozenset[str]) -> bool:
    if name not in ours:
        return False
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return True


def _quarantine_fd(dir_fd: int) -> int:
    with contextlib.suppress(FileExistsError):
        os.mkdir(QUARANTINE, 0o700, dir_fd=dir_fd)
    return os.open(QUARANTINE, _DIR_FLAGS, dir_fd=dir_fd)


def _free_name(dir_fd: int) -> str:
    name = FOREIGN
    while _exists(dir_fd, name):
        name = f"{FOREIGN}-{os.urandom(4).hex()}"
    return name


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _move_aside(dir_fd: int, names: list[str]) -> str:
    """Move ``names`` into ``quarantine/foreign`` (a planted ``quarantine`` is moved like any other name)."""
    hold = f".{FOREIGN}-{os.urandom(8).hex()}"
    os.mkdir(hold, 0o700, dir_fd=dir_fd)
    with _opened(hold, dir_fd) as hold_fd:
        for name in names:
            os.rename(name, name, src_dir_fd=dir_fd, dst_dir_fd=hold_fd)
    quarantine = _quarantine_fd(dir_fd)
    try:
        target = _free_name(quarantine)
        os.rename(hold, target, src_dir_fd=dir_fd, dst_dir_fd=quarantine)
        os.fsync(quarantine)
    finally:
        os.close(quarantine)
    os.fsync(dir_fd)
    return target


def _take_back(claim: Claim, runs_fd: int, present: bool) -> None:
    """Put a fresh, empty ledger directory of ours at the run id; what stood there goes in its quarantine."""
    fresh = f".{claim.run_id}.{os.urandom(8).hex()}"
    os.mkdir(fresh, 0o755, dir_fd=runs_fd)
    with _opened(fresh, runs_fd) as fresh_fd:
        st = os.fstat(fresh_fd)
        if present:
            quarantine = _quarantine_fd(fresh_fd)
            try:
                os.rename(claim.run_id, FOREIGN, src_dir_fd=runs_fd, dst_dir_fd=quarantine)
            finally:
                os.close(quarantine)
        os.rename(fresh, claim.run_id, src_dir_fd=runs_fd, dst_dir_fd=runs_fd)
    os.fsync(runs_fd)
    claim.dev, claim.ino = st.st_dev, st.st_ino
