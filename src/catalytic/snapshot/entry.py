"""One entry of a manifest: its path in the domain, its manifest value and its permission bits.

Manifest values (the strings in ``PRE_MANIFEST.json`` / ``POST_MANIFEST.json``):

===================  ====================================================
regular file         lowercase hex digest of its bytes (sha256 by default)
directory            ``dir``
symbolic link        ``symlink:<target>`` (never followed)
FIFO / socket        ``fifo`` / ``socket`` (never opened)
device               ``chardev:<major>:<minor>`` / ``blockdev:<major>:<minor>``
===================  ====================================================

The domain itself is the entry ``.``. Permission bits (``mode & 0o7777`` as four octal digits), with the
owner, links and extended attributes where they are not the usual (:mod:`catalytic.snapshot.attrs`), live
beside the manifest in ``PRE_MODES.json`` / ``POST_MODES.json`` for every entry except symlinks.
"""

from __future__ import annotations

import functools
import os
import stat
from dataclasses import dataclass

DIR = "dir"
FIFO = "fifo"
SOCKET = "socket"
SYMLINK_PREFIX = "symlink:"
#: A regular expression matching every manifest value that is not a file's digest (the kinds above);
#: a digest is :data:`catalytic.snapshot.digest.DIGEST_PATTERN`.
OTHER_VALUES = r"dir|fifo|socket|symlink:[\s\S]+|(?:chardev|blockdev):[0-9]+:[0-9]+|other:[0-7]+"
#: The grammar of a MODES value: permission bits, then owner, links and xattrs where they are not the usual
#: (:mod:`catalytic.snapshot.attrs`). The schema's pattern is tested against it.
MODE_PATTERN = r"[0-7]{4}(?: o=[0-9]+:[0-9]+)?(?: n=[0-9]+)?(?: x=[0-9a-f]{64})?"


@dataclass(frozen=True, slots=True)
class Entry:
    """A manifest entry. ``mode`` is None for symlinks (their permission bits mean nothing)."""

    path: str
    value: str
    mode: str | None


@functools.cache  # a tree's files share a few modes: formatted once each
def mode_string(st_mode: int) -> str:
    """Permission bits (including setuid/setgid/sticky) as four octal digits."""
    return f"{stat.S_IMODE(st_mode):04o}"


def special_value(st: os.stat_result) -> str:
    """The manifest value of anything that is not a regular file, directory or symlink."""
    fmt = stat.S_IFMT(st.st_mode)
    if fmt == stat.S_IFIFO:
        return FIFO
    if fmt == stat.S_IFSOCK:
        return SOCKET
    if fmt == stat.S_IFCHR:
        return f"chardev:{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    if fmt == stat.S_IFBLK:
        return f"blockdev:{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return f"other:{fmt:o}"


def kind_of(value: str) -> str:
    """The entry type named by a manifest value: file, dir, symlink, fifo, socket, ..."""
    if value == DIR:
        return "dir"
    if value.startswith(SYMLINK_PREFIX):
        return "symlink"
    if ":" in value:
        return value.split(":", 1)[0]
    if value in (FIFO, SOCKET):
        return value
    return "file"
