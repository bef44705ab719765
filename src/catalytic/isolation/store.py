"""A content-addressed store of file contents and per-run pre-states, shared by every run.

Layout under the runs root (names starting with ``_`` under the runs root are not runs)::

    <runs root>/_store/objects/<algorithm>/<ab>/<rest of the hex digest>   file contents
    <runs root>/_store/states/<run_id>.json                               what a run's domains and
                                                                          outputs held before it ran
    <runs root>/_store/states/<run_id>.json.index                         where each tree is in it

An object is named by the digest of its bytes in the run's manifest algorithm, so the same bytes are
stored once across runs. Objects are copied with a reflink (``FICLONE``) where the file system offers
one, else ``copy_file_range`` (in-kernel copy), else a plain read/write loop; every copy is re-hashed
before it enters the store, so an object is never stored under a wrong name, even when the source
changes while it is copied.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from catalytic.errors import CatalyticError
from catalytic.ledger.canonical import loads, write_atomic
from catalytic.snapshot.digest import hasher_factory
from catalytic.threads import may_fork

STORE_DIR = "_store"
STATE_VERSION = "catalytic.state/1"
_FICLONE = 0x40049409  # _IOW(0x94, 9, int) on Linux
_CHUNK = 1 << 20
_SMALL = 1 << 20
#: The suffix of a state's index (``<run_id>.json.index``, see :mod:`catalytic.isolation.state`).
INDEX_SUFFIX = ".index"
#: The suffix of a state's modification times (``<run_id>.json.times``).
TIMES_SUFFIX = ".times"
#: :meth:`Store.put_files` starts one process per this many files (up to its ``jobs``).
PARALLEL_FILES = 512


class StoreError(CatalyticError):
    """The store could not save or give back a file's contents."""

    code = "STORE"
    exit_code = 1


def _clone(src_fd: int, dst_fd: int, size: int) -> None:
    """Copy ``src_fd`` into ``dst_fd``: reflink, else copy_file_range, else read/write."""
    try:
        import fcntl

        fcntl.ioctl(dst_fd, _FICLONE, src_fd)
        return
    except (OSError, ImportError):
        pass
    copied = 0
    if hasattr(os, "copy_file_range"):
        try:
            while copied < size:
                n = os.copy_file_range(src_fd, dst_fd, size - copied)
                if n == 0:
                    break
                copied += n
            if copied >= size:
                return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
    os.lseek(src_fd, copied, os.SEEK_SET)
    os.lseek(dst_fd, copied, os.SEEK_SET)
    while True:
        chunk = os.read(src_fd, _CHUNK)
        if not chunk:
            break
        os.write(dst_fd, chunk)


def _hash_fd(fd: int, algorithm: str) -> str:
    h = hasher_factory(algorithm)()
    os.lseek(fd, 0, os.SEEK_SET)
    while True:
        chunk = os.read(fd, _CHUNK)
        if not chunk:
            break
        h.update(chunk)
    return h.hexdigest()


class Store:
    """The content-addressed store at ``<runs root>/_store``."""

    def __init__(self, runs_root: Path) -> None:
        self.runs_root = runs_root
        self.path = runs_root / STORE_DIR

    def object_path(self, algorithm: str, digest: str) -> Path:
        return Path(self.object_name(algorithm, digest))

    def state_path(self, run_id: str) -> Path:
        return self.path / "states" / f"{run_id}.json"

    def index_path(self, run_id: str) -> Path:
        """Where the index of a run's state is (see :mod:`catalytic.isolation.state`)."""
        return self.path / "states" / f"{run_id}.json{INDEX_SUFFIX}"

    def times_path(self, run_id: str) -> Path:
        """Where the modification times of a run's saved trees are (see :mod:`catalytic.isolation.state`)."""
        return self.path / "states" / f"{run_id}.json{TIMES_SUFFIX}"

    def has(self, algorithm: str, digest: str) -> bool:
        return os.path.isfile(self.object_name(algorithm, digest))

    def object_name(self, algorithm: str, digest: str) -> str:
        """:meth:`object_path` as a string (no Path objects per file when many are stored)."""
        return f"{self.path}/objects/{algorithm}/{digest[:2]}/{digest[2:]}"

    def put_file(self, source: Path | str, algorithm: str, digest: str) -> bool:
        """Store the file ``source`` whose bytes must hash to ``digest``; False if already stored.

        Objects are not fsynced one by one (that dominates for small files); call :meth:`sync`
        once after a batch, before relying on the objects.
        """
        target = self.object_name(algorithm, digest)
        if os.path.isfile(target):
            return False
        try:
            src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise StoreError(f"cannot save {source}: {exc.strerror or exc}") from exc
        folder = os.path.dirname(target)
        tmp = f"{folder}/.{digest[2:]}.{os.getpid()}.tmp"
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o444)
            except FileNotFoundError:
                os.makedirs(folder, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o444)
            try:
                size = os.fstat(src).st_size
                if size <= _SMALL:
                    # Small files: one read, hashed as it is copied (no second pass).
                    data = os.read(src, size + 1)
                    h = hasher_factory(algorithm)()
                    h.update(data)
                    got = h.hexdigest()
                    os.write(fd, data)
                else:
                    _clone(src, fd, size)
                    os.close(fd)
                    fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
                    got = _hash_fd(fd, algorithm)
                if got != digest:
                    raise StoreError(
                        f"{source} changed while it was saved (expected {digest[:12]}, got {got[:12]})",
                        code="STORE_UNSTABLE",
                    )
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            os.close(src)
        return True

    def put_blob(self, kind: str, digest: str, data: bytes) -> bool:
        """Store ``data``, whose sha256 must be ``digest``, as an object of ``kind`` (e.g. the blob of a
        file's extended attributes, :mod:`catalytic.snapshot.attrs`); False if already stored."""
        if hashlib.sha256(data).hexdigest() != digest:
            raise StoreError(f"a {kind} blob does not hash to {digest[:12]}", code="STORE_UNSTABLE")
        target = self.object_name(kind, digest)
        if os.path.isfile(target):
            return False
        os.makedirs(os.path.dirname(target), exist_ok=True)
        write_atomic(Path(target), data)
        return True

    def read_blob(self, kind: str, digest: str) -> bytes:
        """The stored blob ``digest`` of ``kind``, checked against its name."""
        try:
            data = self.object_path(kind, digest).read_bytes()
        except OSError as exc:
            raise StoreError(
                f"object {digest[:12]} is not in the store {self.path}", code="STORE_MISSING"
            ) from exc
        if hashlib.sha256(data).hexdigest() != digest:
            raise StoreError(
                f"object {digest[:12]} of the store {self.path} is damaged",
                code="STORE_MISSING",
            )
        return data

    def put_files(self, files: dict[str, str], algorithm: str, jobs: int) -> int:
        """Store many files (``{digest: source path}``, none stored yet) with up to ``jobs`` forked
        processes; returns how many objects were new. The first file that cannot be saved stops the
        batch with its :class:`StoreError`.

        Processes, not threads: each small file costs a few system calls and some Python, and threads
        contending for the interpreter store small files about three times slower than one thread.
        """
        items = list(files.items())
        jobs = max(1, min(jobs, len(items) // PARALLEL_FILES))
        if jobs == 1 or not may_fork():
            answers = [_put_batch(self, algorithm, items)]
        else:
            import functools

            from catalytic.snapshot.forkpool import ForkPool

            pool = ForkPool(jobs, functools.partial(_put_batch, self, algorithm))
            try:
                for worker in range(jobs):
                    pool.submit(items[worker::jobs], worker)
                answers = [pool.result(worker) for worker in range(jobs)]
            except BaseException:  # an interrupt: the workers stop now, not after their batches
                pool.close(kill=True)
                raise
            pool.close()
        for _count, error in answers:
            if error is not None:
                raise StoreError(error[0], code=error[1])
        return sum(count for count, _error in answers)

    def sync(self) -> None:
        """Make every object written so far durable (one ``sync`` for the whole batch)."""
        if hasattr(os, "sync"):
            os.sync()

    def copy_out(self, algorithm: str, digest: str, dest_fd: int) -> None:
        """Write the stored object ``digest`` into the open file ``dest_fd``."""
        path = self.object_path(algorithm, digest)
        try:
            src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise StoreError(
                f"object {digest[:12]} is not in the store {self.path}", code="STORE_MISSING"
            ) from exc
        try:
            _clone(src, dest_fd, os.fstat(src).st_size)
        finally:
            os.close(src)

    def save_state(
        self, run_id: str, text: Iterable[bytes], index: Callable[[int], bytes] | None = None
    ) -> Path:
        """Record what a run's domains and outputs held before it ran: the state document's canonical JSON
        text (:data:`STATE_VERSION`), in pieces; then, given ``index`` (the document's size -> the text of
        its index, :mod:`catalytic.isolation.state`), the index beside it."""
        path = self.state_path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        index_path = self.index_path(run_id)
        with contextlib.suppress(FileNotFoundError):
            index_path.unlink()  # an index never describes another document than the one beside it
        write_atomic(path, text)
        if index is not None:
            write_atomic(index_path, index(path.stat().st_size))
        return path

    def save_times(self, run_id: str, text: Iterable[bytes]) -> None:
        """Record the modification times of a run's saved trees (:class:`.state.Times`)."""
        path = self.times_path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)

    def load_state(self, run_id: str) -> dict[str, Any]:
        path = self.state_path(run_id)
        try:
            data = loads(path.read_bytes())
        except FileNotFoundError:
            raise StoreError(
                f"no saved pre-state for run {run_id!r} in {self.path} (was it run with "
                "--isolation rollback, or collected by catalytic gc?)",
                code="NO_STATE",
            ) from None
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise StoreError(f"{path} is not a {STATE_VERSION} document")
        return data

    def states(self) -> list[str]:
        directory = self.path / "states"
        if not directory.is_dir():
            return []
        return sorted(n[: -len(".json")] for n in os.listdir(directory) if n.endswith(".json"))


def _put_batch(
    store: Store, algorithm: str, items: list[tuple[str, str]]
) -> tuple[int, tuple[str, str] | None]:
    """Store ``(digest, source)`` pairs; (how many were new, the first failure as (message, code) or None).

    Runs in a worker of :meth:`Store.put_files`: the failure travels back as data, not as an exception."""
    new = 0
    for digest, source in items:
        try:
            new += store.put_file(source, algorithm, digest)
        except StoreError as exc:
            return new, (exc.message, exc.code)
        except OSError as exc:  # the store's own side (a full disk, say)
            return new, (f"cannot save {source} in the store: {exc.strerror or exc}", "STORE")
    return new, None
