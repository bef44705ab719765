"""Processes the command left running: they could change a domain after the proof, so they fail it.

While the command runs, the runtime is a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``):
every process the command starts and then orphans, even through ``setsid`` and a double fork, is
re-parented to the runtime instead of to init. When the command's main process has exited, any such
process that is still alive is *lingering*: it may write into a domain during or after the post-run
snapshot, so the run cannot be proved restored. Lingering processes are reported, never killed.
Elsewhere (no ``prctl``) the check is not available and :func:`watch` reports ``active=False``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, NamedTuple

from catalytic._libc import libc

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


class Watch(NamedTuple):
    """Our children before the command started, and whether orphans come back to us."""

    active: bool
    before: frozenset[int] = frozenset()


def _prctl() -> Any:
    lib = libc()
    return getattr(lib, "prctl", None) if lib is not None else None


def children() -> set[int]:
    """Pids whose parent is this process (from ``/proc``)."""
    me = os.getpid()
    found: set[int] = set()
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
        fields = data.rpartition(b")")[2].split()
        if len(fields) > 1 and int(fields[1]) == me:
            found.add(int(name))
    return found


def _children_listed(*, exact: bool = False) -> set[int]:
    """Our children as the kernel lists them (``/proc/self/task/*/children``), without reading the
    ``stat`` of every process on the machine as :func:`children` does.

    The kernel walks the list without a lock across reads, so a child can be skipped while another
    is *removed* from it (reaped, or moved to another thread when its thread exits). Without
    ``exact`` that is accepted (:func:`watch`'s "before" set: a skipped pid can only make a run
    fail, reported lingering, never pass). With ``exact`` the list is used only when nothing can be
    removed while it is read: this process has one thread (only it reaps its children, and it is busy
    reading), no other run in progress and SIGCHLD not ignored (the kernel would reap on its own);
    otherwise every process's ``stat`` is read.
    """
    found: set[int] = set()
    try:
        tasks = os.listdir("/proc/self/task")
        if exact and (
            len(tasks) != 1 or _USERS["count"] > 1 or signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN
        ):
            return children()
        for tid in tasks:
            with open(f"/proc/self/task/{tid}/children", "rb") as fh:
                found.update(int(pid) for pid in fh.read().split())
    except (OSError, ValueError):  # no /proc, or a kernel without CONFIG_PROC_CHILDREN
        return children()
    return found


# Runs in several threads of one process share the subreaper flag and see each other's children:
# the flag is set by the first and restored by the last, and each run's main pid is registered so
# that another run never mistakes it for a lingering process.
_LOCK = threading.Lock()
_USERS = {"count": 0, "previous": 0}
_MAIN_PIDS: set[int] = set()


@contextmanager
def watch() -> Iterator[Watch]:
    """Make this process a child subreaper for the ``with`` block (restored afterwards)."""
    prctl = _prctl()
    if prctl is None:
        yield Watch(active=False)
        return
    with _LOCK:
        if _USERS["count"] == 0:
            previous = ctypes.c_int(0)
            if prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(previous), 0, 0, 0) != 0 or (
                prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0
            ):
                active = False
            else:
                _USERS["previous"] = previous.value
                active = True
        else:
            active = True
        if active:
            _USERS["count"] += 1
        before = _children_listed() if active else set()
    if not active:
        yield Watch(active=False)
        return
    try:
        yield Watch(active=True, before=frozenset(before))
    finally:
        with _LOCK:
            _USERS["count"] -= 1
            if _USERS["count"] == 0:
                prctl(_PR_SET_CHILD_SUBREAPER, _USERS["previous"], 0, 0, 0)


def register(pid: int) -> None:
    """Record the main pid of a running command (see :func:`lingering`)."""
    with _LOCK:
        _MAIN_PIDS.add(pid)


def unregister(pid: int) -> None:
    with _LOCK:
        _MAIN_PIDS.discard(pid)


def lingering(state: Watch, main_pid: int) -> list[int]:
    """Processes of the command still alive now that its main process ``main_pid`` has exited.

    Descendants that already exited are reaped; pids that were our children before are ignored.
    """
    if not state.active:
        return []
    alive: list[int] = []
    with _LOCK:
        others = set(_MAIN_PIDS)
    for pid in sorted(_children_listed(exact=True) - state.before - others - {main_pid}):
        with suppress(ChildProcessError):
            done, _status = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                continue
            alive.append(pid)
    return alive
