"""Descriptors the command inherits that reach the real workspace past an overlay.

An overlay changes what the command sees when it opens a path, not what it already holds open. The
shell opens ``> build.log`` or ``>> d/log`` before catalytic starts, and the command inherits that
descriptor: its writes land in the real file, where the upper layer never sees them. The same goes
for any directory descriptor at, inside or above the workspace root (``openat`` reaches every real
file below it). Catalytic spawns the command with every inheritable descriptor of its own process
(stdin, stdout, stderr and anything else not marked close-on-exec), so those are the ones checked.

A file open read-only is no way in by itself and is allowed (``sort < data``). What a descriptor names
is found with ``readlink`` of ``/proc/self/fd/N``, a path in catalytic's own mount namespace: a file
reached through another mount of the same filesystem (a bind mount) is not recognised here; the check
of the real domains after the run (:mod:`catalytic.isolation.overlay`) is what catches such writes.
"""

from __future__ import annotations

import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from catalytic import paths

_FD_DIR = "/proc/self/fd"
_STDIO = {0: "stdin", 1: "stdout", 2: "stderr"}


@dataclass(frozen=True)
class Inherited:
    """One inherited descriptor through which the command could change the real workspace."""

    fd: int
    path: str  # absolute, as /proc names it
    directory: bool

    def describe(self, root: Path) -> str:
        """E.g. ``stdout (fd 1) is open for writing on d/log inside the workspace``."""
        name = f"{_STDIO[self.fd]} (fd {self.fd})" if self.fd in _STDIO else f"fd {self.fd}"
        real_root = os.path.realpath(root)
        if _within(self.path, real_root):
            rel = os.path.relpath(self.path, real_root)
            where = "the workspace root" if rel == paths.ROOT else f"{rel} inside the workspace"
        else:
            where = f"{self.path}, above the workspace root"
        return f"{name} is open {'on the directory' if self.directory else 'for writing on'} {where}"


def _within(child: str, parent: str) -> bool:
    """Whether absolute path ``child`` is ``parent`` or below it, by whole segments."""
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def reaching(root: Path) -> list[Inherited]:
    """The descriptors a command spawned now would inherit that can change the real tree under ``root``.

    Raises OSError when the descriptors cannot be listed (no ``/proc``): the caller cannot rule them out.
    """
    real_root = os.path.realpath(root)
    found: list[Inherited] = []
    for name in sorted(os.listdir(_FD_DIR), key=int):
        fd = int(name)
        try:
            if not os.get_inheritable(fd):
                continue  # close-on-exec: the command never gets it (the listing's own descriptor too)
            st = os.fstat(fd)
            target = os.readlink(f"{_FD_DIR}/{fd}")
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        except OSError:
            continue  # closed meanwhile
        if not target.startswith("/"):
            continue  # a pipe, socket or anonymous inode: not a path in any tree
        if stat.S_ISDIR(st.st_mode):
            if _within(target, real_root) or _within(real_root, target):
                found.append(Inherited(fd, target, True))
            continue
        writable = flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
        if stat.S_ISREG(st.st_mode) and writable and st.st_nlink > 0 and _within(target, real_root):
            found.append(Inherited(fd, target, False))
    return found


def bypass_reason(root: Path) -> str | None:
    """None when no inherited descriptor reaches the real tree under ``root``, else why (one line)."""
    try:
        found = reaching(root)
    except OSError as exc:
        return f"the descriptors the command would inherit cannot be listed ({_FD_DIR}: {exc.strerror})"
    if not found:
        return None
    first = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return (
        f"{first.describe(root)}{more}: the command would inherit it and write the real tree past the overlay"
    )


__all__ = ["Inherited", "bypass_reason", "reaching"]
