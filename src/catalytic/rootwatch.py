"""Notice a catalytic domain (or a directory above it) being moved away or deleted during the run.

A command can rename a domain away, put a symlink to somewhere else in its place, write through it,
and put the real directory back before the post-run snapshot: the domain is then byte-identical,
yet the command's writes to it went elsewhere. The snapshots cannot see that, so while the command
runs (and until the post-run snapshot is done) the runtime watches the directory inodes of every
domain and of every directory between it and the workspace root with Linux inotify
(``IN_MOVE_SELF``, ``IN_DELETE_SELF``, ``IN_UNMOUNT``). Any such event fails the proof. Where
inotify is not available the watch is inactive (documented in docs/adversarial.md).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from catalytic import paths
from catalytic._libc import libc

_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_IN_MOVE_SELF = 0x800
_IN_DELETE_SELF = 0x400
_IN_UNMOUNT = 0x2000
_IN_Q_OVERFLOW = 0x4000
_IN_ONLYDIR = 0x01000000
_IN_DONT_FOLLOW = 0x02000000
_EVENT = struct.Struct("iIII")
_MOVED = _IN_MOVE_SELF | _IN_DELETE_SELF | _IN_UNMOUNT


# Closing an inotify descriptor waits for the kernel (~8 ms here, an RCU grace period), so
# descriptors are kept and reused, one per run in progress; the process's exit closes them cheaply.
_POOL: list[int] = []
_POOL_LOCK = threading.Lock()


class RootWatch:
    """The watches of one run; :meth:`moved` lists the watched directories that moved."""

    def __init__(self, fd: int | None, watches: dict[int, str], reason: str | None = None) -> None:
        self.fd = fd
        self.watches = watches
        #: Why the check is off (no inotify, no instance left) or partial; None when fully on.
        self.reason = reason
        self._moved: set[str] = set()

    def describe(self) -> dict[str, Any]:
        """For RUN_INFO ``domain_move_check``: ``{"active", "reason"}``."""
        return {"active": self.fd is not None and self.reason is None, "reason": self.reason}

    @property
    def active(self) -> bool:
        return self.fd is not None

    def close(self) -> None:
        """Remove this run's watches and hand the descriptor back for the next run."""
        if self.fd is None:
            return
        lib = _inotify()
        for wd in self.watches:
            lib.inotify_rm_watch(self.fd, wd)  # fails harmlessly for watches the kernel removed
        self._drain()
        with _POOL_LOCK:
            _POOL.append(self.fd)
        self.fd = None

    def moved(self) -> list[str]:
        """Watched directories (relative to the root) moved, deleted or unmounted so far."""
        if self.fd is None:
            return []
        self._drain()
        return sorted(self._moved, key=paths.sort_key)

    def _drain(self) -> None:
        assert self.fd is not None
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                break
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + length
                if mask & _IN_Q_OVERFLOW:
                    self._moved.add("(inotify queue overflow)")
                elif mask & _MOVED and wd in self.watches:
                    self._moved.add(self.watches[wd])


def _inotify() -> Any:
    lib = libc()
    if lib is None or not hasattr(lib, "inotify_init1"):
        return None
    lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    return lib


def watched_dirs(domains: Sequence[str]) -> list[str]:
    """Each domain and every directory above it up to the workspace root (``.``)."""
    found: set[str] = set()
    for domain in domains:
        segments = paths.parts(domain)
        for depth in range(len(segments) + 1):
            found.add("/".join(segments[:depth]) or paths.ROOT)
    return sorted(found, key=paths.sort_key)


def start(root: Path, domains: Sequence[str]) -> RootWatch:
    """Start watching the domains of a run and the directories above them; call ``close()`` after."""
    lib = _inotify()
    if lib is None:
        return RootWatch(None, {}, "inotify is not available on this platform")
    with _POOL_LOCK:
        fd = _POOL.pop() if _POOL else -1
    if fd < 0:
        fd = lib.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        detail = os.strerror(err) if err else "inotify_init1 failed"
        if err == errno.EMFILE:
            detail += " (inotify instance limit: fs.inotify.max_user_instances)"
        return RootWatch(None, {}, f"inotify could not be started: {detail}")
    watches: dict[int, str] = {}
    unwatched: list[str] = []
    for rel in watched_dirs(domains):
        target = root if rel == paths.ROOT else root / rel
        wd = lib.inotify_add_watch(fd, os.fsencode(target), _MOVED | _IN_ONLYDIR | _IN_DONT_FOLLOW)
        if wd >= 0:
            watches[wd] = rel
        elif ctypes.get_errno() not in (errno.ENOENT, errno.ENOTDIR):
            unwatched.append(rel)  # absent domains (or not directories) have nothing to watch
    reason = None
    if unwatched:
        reason = f"not watched (inotify watch limit?): {', '.join(unwatched)}"
    return RootWatch(fd, watches, reason)
