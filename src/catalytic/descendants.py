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
import ctypes.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


@dataclass
class Watch:
    """Our children before the command started, and whether orphans come back to us."""

    active: bool
    before: set[int] = field(default_factory=set)


def _prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


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


@contextmanager
def watch() -> Iterator[Watch]:
    """Make this process a child subreaper for the ``with`` block (restored afterwards)."""
    prctl = _prctl()
    if prctl is None:
        yield Watch(active=False)
        return
    previous = ctypes.c_int(0)
    if prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(previous), 0, 0, 0) != 0:
        yield Watch(active=False)
        return
    if prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        yield Watch(active=False)
        return
    try:
        yield Watch(active=True, before=children())
    finally:
        prctl(_PR_SET_CHILD_SUBREAPER, previous.value, 0, 0, 0)


def lingering(state: Watch, main_pid: int) -> list[int]:
    """Processes of the command still alive now that its main process ``main_pid`` has exited.

    Descendants that already exited are reaped; pids that were our children before are ignored.
    """
    if not state.active:
        return []
    alive: list[int] = []
    for pid in sorted(children() - state.before - {main_pid}):
        with suppress(ChildProcessError):
            done, _status = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                continue
            alive.append(pid)
    return alive
