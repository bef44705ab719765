"""The stat cache lives where the command can write: whether it changed while the command ran.

The runs root, and so the cache under it, is writable by the command (it runs as the same user). Rows that
the command wrote into the store could make a changed file look unchanged, or make the pre-run state the
post-run snapshot is compared with say what the command wants. So the cache is sealed once the pre-run
snapshot is taken and checked before the post-run snapshot: the directory and every file in it by
``lstat`` (type, inode, device, links, owner, size, ``mtime_ns`` and ``ctime_ns``). Any write, rename,
replacement, new file or removal changes one of these; ``ctime`` is set by the kernel and cannot be put back
by a process without changing the system clock. A broken seal means nothing from the cache is trusted: the
post-run snapshot hashes every file and is compared with the pre-run snapshot's own documents.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_Fields = tuple[int, int, int, int, int, int, int, int]


def _fields(st: os.stat_result) -> _Fields:
    return (
        st.st_mode,
        st.st_ino,
        st.st_dev,
        st.st_nlink,
        st.st_uid,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
    )


def _look(directory: Path) -> dict[str, _Fields | None]:
    seen: dict[str, _Fields | None] = {}
    try:
        seen["."] = _fields(os.lstat(directory))
    except OSError:
        return {".": None}
    try:
        names = os.listdir(directory)
    except OSError:
        return seen
    for name in names:
        try:
            seen[name] = _fields(os.lstat(directory / name))
        except OSError:
            seen[name] = None
    return seen


@dataclass(frozen=True)
class CacheSeal:
    """What the cache directory held when it was sealed (:meth:`take`)."""

    directory: Path
    seen: dict[str, _Fields | None]

    @classmethod
    def take(cls, directory: Path) -> CacheSeal:
        return cls(directory, _look(directory))

    def broken(self) -> list[str]:
        """The names (``.`` for the directory itself) that are not as they were, sorted; empty when intact."""
        now = _look(self.directory)
        return sorted(name for name in self.seen.keys() | now.keys() if self.seen.get(name) != now.get(name))
