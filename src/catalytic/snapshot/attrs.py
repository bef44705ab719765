"""What a MODES value records of an entry beyond its bytes: permission bits, owner, links, xattrs.

A MODES value (``PRE_MODES.json`` / ``POST_MODES.json``, every entry except symlinks) is the permission
bits as four octal digits, followed by what differs from the usual, each as a space and a field, in this
order::

    0644                      the usual: owned by the user running catalytic, one link, no xattrs
    0644 o=0:0                owned by uid 0, gid 0
    0644 n=2                  a non-directory with two links (a hard link to it exists somewhere)
    0644 x=<sha256 hex>       extended attributes: the sha256 of their canonical blob (:func:`blob`)

So a tree as people have it (theirs, no hard links, no xattrs) keeps the MODES documents of before, and a
``chown``, a ``setfattr`` or a ``ln`` of a domain file from outside changes the entry's MODES value: it is
a change in ``RESTORE_DIFF`` (``mode_before`` / ``mode_after``), in the Merkle root, and in what
``catalytic validate`` recomputes, with no new document. The owner is written whenever it is not the
runner's (``o=`` with both ids); "the runner" is the effective uid and gid of the process that takes the
snapshot. A directory's link count follows its subdirectories and is not recorded.

Every xattr ``listxattr`` shows is recorded (``user.*``, ``security.*``, ``system.posix_acl_*``, and
``trusted.*`` when running as root), except the overlay file system's own (``trusted.overlay.*``,
``user.overlay.*``) in the upper layer of an overlay run, which :mod:`catalytic.isolation.upper` leaves out.
Not recorded: access and change times, and anything of a symlink but its target.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from typing import NamedTuple

from catalytic.ledger.canonical import encode, loads
from catalytic.snapshot.entry import MODE_PATTERN

VALUE = re.compile(MODE_PATTERN)
#: Where a store keeps the blobs of extended attributes (by the sha256 of the blob).
BLOB_ALGORITHM = "xattrs"
#: The overlay file system's own xattrs (never the command's).
OVERLAY_PREFIXES = ("trusted.overlay.", "user.overlay.")
_NOT_HERE = (errno.ENOTSUP, errno.ENODATA, errno.EOPNOTSUPP)

RUNNER = (os.geteuid(), os.getegid())
_DIR = stat.S_IFDIR
_FMT = 0o170000


class Attributes(NamedTuple):
    """A MODES value taken apart."""

    bits: int
    owner: tuple[int, int] | None  # None: the runner's
    links: int
    xattrs: str | None  # sha256 of the blob, None: no xattrs


def parse(text: str) -> Attributes:
    """The fields of a MODES value (:data:`~catalytic.snapshot.entry.MODE_PATTERN`; else ValueError)."""
    if not VALUE.fullmatch(text):
        raise ValueError(f"not a MODES value: {text!r}")
    bits, *fields = text.split(" ")
    owner: tuple[int, int] | None = None
    links = 1
    xattrs = None
    for field in fields:
        key, value = field[0], field[2:]
        if key == "o":
            uid, gid = value.split(":")
            owner = (int(uid), int(gid))
        elif key == "n":
            links = int(value)
        else:
            xattrs = value
    return Attributes(int(bits, 8), owner, links, xattrs)


def xattrs_named(text: str | None) -> str | None:
    """The digest of the xattr blob a MODES value names (None: none, or not a MODES value at all)."""
    if text is None or " x=" not in text or not VALUE.fullmatch(text):
        return None
    return text.rsplit(" x=", 1)[1]


def bits_of(text: str) -> int:
    """The permission bits of a MODES value."""
    return int(text[:4], 8)


def value_of(st: os.stat_result, xattrs: str | None, bits: str) -> str:
    """The MODES value of an entry whose ``lstat`` is ``st``, ``bits`` its permission bits as text
    (:func:`~catalytic.snapshot.entry.mode_string`) and ``xattrs`` the sha256 of its xattr blob."""
    text = bits
    if (st.st_uid, st.st_gid) != RUNNER:
        text += f" o={st.st_uid}:{st.st_gid}"
    if st.st_nlink > 1 and st.st_mode & _FMT != _DIR:
        text += f" n={st.st_nlink}"
    if xattrs is not None:
        text += " x=" + xattrs
    return text


def usual(st: os.stat_result) -> bool:
    """Whether an entry with no xattrs has the plain MODES value (its bits alone)."""
    return (st.st_uid, st.st_gid) == RUNNER and (st.st_nlink == 1 or st.st_mode & _FMT == _DIR)


def read(dir_fd: int, name: str, skip: tuple[str, ...] = ()) -> dict[str, bytes | None]:
    """The extended attributes of the entry ``name`` of ``dir_fd`` (never following a symlink), by name; a
    value that cannot be read (permission) is None. Empty when the file system has none. ``skip``: name
    prefixes left out."""
    path = f"/proc/self/fd/{dir_fd}/{name}" if name else f"/proc/self/fd/{dir_fd}"
    return read_path(path, skip)


def read_path(path: str | bytes | int, skip: tuple[str, ...] = ()) -> dict[str, bytes | None]:
    """:func:`read` for a path (its last component is never followed) or an open descriptor."""
    follow = {} if isinstance(path, int) else {"follow_symlinks": False}
    try:
        names = os.listxattr(path, **follow)
    except OSError as exc:
        if exc.errno in _NOT_HERE:
            return {}
        raise
    found: dict[str, bytes | None] = {}
    for xname in names:
        if skip and xname.startswith(skip):
            continue
        try:
            found[xname] = os.getxattr(path, xname, **follow)
        except OSError as exc:
            if exc.errno == errno.ENODATA:  # removed since it was listed
                continue
            if exc.errno not in (errno.EACCES, errno.EPERM):
                raise
            found[xname] = None
    return found


def blob(xattrs: dict[str, bytes | None]) -> bytes:
    """The canonical blob of a set of xattrs: ``{name: hex value or null}`` as canonical JSON."""
    return encode({name: None if data is None else data.hex() for name, data in xattrs.items()})


def digest(xattrs: dict[str, bytes | None]) -> str | None:
    """The sha256 of the blob of ``xattrs``; None when there are none."""
    if not xattrs:
        return None
    return hashlib.sha256(blob(xattrs)).hexdigest()


def from_blob(data: bytes) -> dict[str, bytes | None]:
    """The xattrs of a blob (:func:`blob`); ValueError when it is not one."""
    doc = loads(data)
    if not isinstance(doc, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in doc.items()
    ):
        raise ValueError("not a blob of extended attributes")
    return {name: None if text is None else bytes.fromhex(text) for name, text in doc.items()}


def fd_digest(fd: int) -> str | None:
    """The digest of the xattrs of the file open as ``fd`` (None: it has none): no name is looked up, so
    it is the very file just read (a file's usual case, no xattr, costs one ``flistxattr``)."""
    try:
        if not os.listxattr(fd):
            return None
    except OSError as exc:
        if exc.errno in _NOT_HERE:
            return None
        raise
    return digest(read_path(fd))


def read_xattrs_digest(dir_fd: int, name: str, skip: tuple[str, ...] = ()) -> str | None:
    """The digest of the xattrs of the entry ``name`` of ``dir_fd`` (None: it has none)."""
    return digest(read(dir_fd, name, skip))


def entry_value(dir_fd: int, name: str, st: os.stat_result, bits: str, skip: tuple[str, ...] = ()) -> str:
    """The MODES value of the entry ``name`` of ``dir_fd`` whose ``lstat`` is ``st`` (xattrs read now)."""
    return value_of(st, read_xattrs_digest(dir_fd, name, skip), bits)
