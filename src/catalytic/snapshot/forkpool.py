"""A minimal pool of forked hashing processes, with no threads anywhere.

``multiprocessing.Pool`` runs helper threads in the parent and may fork a replacement worker from one of
them while another holds a lock; the child then waits forever on that lock. This pool forks every worker
up front from the calling thread, talks to each over a pair of pipes (length-prefixed pickles from our
own children), hands out batches round-robin and reads results back in submission order. Each worker
has at most ``depth`` batches outstanding and the pipes are enlarged, so neither side blocks the other.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import struct
from collections.abc import Callable
from typing import Any

_LEN = struct.Struct("<Q")
_F_SETPIPE_SZ = 1031


def _grow(fd: int) -> None:
    with contextlib.suppress(OSError):
        import fcntl

        fcntl.fcntl(fd, _F_SETPIPE_SZ, 1 << 20)


def _write_frame(fd: int, payload: bytes) -> None:
    data = memoryview(_LEN.pack(len(payload)) + payload)
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _read_exact(fd: int, size: int) -> bytes | None:
    parts: list[bytes] = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


def _read_frame(fd: int) -> bytes | None:
    head = _read_exact(fd, _LEN.size)
    if head is None:
        return None
    return _read_exact(fd, _LEN.unpack(head)[0])


def _serve(inbox: int, outbox: int, work: Callable[[Any], Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt means
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # A worker lives for one snapshot, and its tasks leave no reference cycles behind (tested): the cyclic
    # collector would only walk the objects it allocates, and those inherited from the parent, about 2.5 %
    # of a first snapshot's CPU.
    gc.disable()
    while True:
        frame = _read_frame(inbox)
        if frame is None:
            return
        try:
            reply: tuple[str, Any] = ("ok", work(pickle.loads(frame)))
        except BaseException as exc:  # reported to the parent, which raises
            reply = ("crash", f"{type(exc).__name__}: {exc}")
        _write_frame(outbox, pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))


class WorkerCrashed(RuntimeError):
    """A worker died or raised: the snapshot cannot be trusted."""


class ForkPool:
    """``size`` forked workers applying ``work`` to submitted arguments, results in order."""

    def __init__(self, size: int, work: Callable[[Any], Any]) -> None:
        self.workers: list[tuple[int, int, int]] = []  # pid, to worker, from worker
        self.next = 0
        try:
            for _ in range(size):
                to_r, to_w = os.pipe()
                from_r, from_w = os.pipe()
                _grow(to_w)
                _grow(from_w)
                pid = os.fork()
                if pid == 0:  # pragma: no cover - runs in the child
                    code = 0
                    try:
                        os.close(to_w)
                        os.close(from_r)
                        for _pid, a, b in self.workers:
                            os.close(a)
                            os.close(b)
                        _serve(to_r, from_w, work)
                    except BaseException:
                        code = 1
                    finally:
                        os._exit(code)
                os.close(to_r)
                os.close(from_w)
                self.workers.append((pid, to_w, from_r))
        except BaseException:
            self.close(kill=True)
            raise

    def submit(self, argument: Any, worker: int | None = None) -> int:
        """Send ``argument`` to ``worker`` (default: the next); returns the ticket for :meth:`result`."""
        if worker is None:
            index = self.next
            self.next = (self.next + 1) % len(self.workers)
        else:
            index = worker
        _write_frame(self.workers[index][1], pickle.dumps(argument, protocol=pickle.HIGHEST_PROTOCOL))
        return index

    def result(self, ticket: int) -> Any:
        """The oldest outstanding result of worker ``ticket`` (call in submission order)."""
        frame = _read_frame(self.workers[ticket][2])
        if frame is None:
            raise WorkerCrashed("a hashing process exited unexpectedly")
        status, value = pickle.loads(frame)
        if status != "ok":
            raise WorkerCrashed(f"a hashing process failed: {value}")
        return value

    def close(self, *, kill: bool = False) -> None:
        """Stop the workers (EOF on their inbox; SIGKILL with ``kill``) and reap them."""
        for pid, to_w, from_r in self.workers:
            if kill:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for fd in (to_w, from_r):
                with contextlib.suppress(OSError):
                    os.close(fd)
        for pid, _a, _b in self.workers:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.workers = []
