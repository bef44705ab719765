"""Put a directory tree back to a recorded state, byte for byte, from the content-addressed store.

The wanted state is a stream of manifest entries (value + mode, as in PRE_MANIFEST / PRE_MODES); the
current state is a fresh snapshot, also a stream: both are read once, in path order, and only the
differences are kept. Entries that should not be there are removed (deepest first),
missing or different ones are recreated (parents first: files through a temporary file and a rename,
symlinks likewise), and permission bits are set last (directories deepest first, so a read-only
directory is still writable while its content is restored). What cannot be recreated (a socket, a
device without privilege, an object missing from the store) is reported, never silently skipped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING

from catalytic import faults, paths
from catalytic.diff import Triple, merge_join
from catalytic.errors import CatalyticError
from catalytic.isolation.store import Store
from catalytic.paths import ROOT, sort_key
from catalytic.snapshot import attrs
from catalytic.snapshot.attrs import bits_of
from catalytic.snapshot.entry import DIR, FIFO, SYMLINK_PREFIX, Entry, kind_of
from catalytic.snapshot.walker import DIR_FLAGS

if TYPE_CHECKING:
    from catalytic.isolation.journal import Staging

#: How the temporary file a restore writes before renaming it into place ends (``.<name>.<hex>.restore``).
STAGED_SUFFIX = ".restore"

_FIRST = itemgetter(0)
_ANCHOR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


@dataclass
class RestoreReport:
    """What a restoration did (or would do, in a dry run) and what it could not do."""

    actions: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class UnsafePathError(CatalyticError):
    """A component of a restored tree's path is a symlink or not a directory: a restore never follows one."""

    code = "UNSAFE_PATH"
    exit_code = 1


class _Tree:
    """A tree being restored, reached from a trusted directory (the workspace root) one component at a time
    with ``O_NOFOLLOW``: no operation of a restore follows a symlink, in the tree or on the way to it, so
    one that a command put in place of a parent cannot lead the restore's writes out of the workspace.
    Every operation opens its entry's parent anew (an open descriptor kept from before could meanwhile
    have been moved elsewhere)."""

    def __init__(self, target: Path, within: Path | None, staging: Staging | None) -> None:
        anchor = within if within is not None else next(p for p in target.parents if p.is_dir())
        rel = target.relative_to(anchor).as_posix()
        self.anchor = anchor
        self.top = paths.parts(rel) if rel not in ("", ".") else ()
        self.staging = staging
        if not self.top:
            raise ValueError(f"{target} must lie below {anchor}")

    def parent(self, rel: str, *, create: bool = False) -> tuple[int, str]:
        """An open descriptor of the directory that holds ``rel`` (the caller closes it), and ``rel``'s name
        in it; ``create``: make missing parents. Raises :class:`UnsafePathError` on a symlink or a
        non-directory."""
        comps = (*self.top, *(paths.parts(rel) if rel != ROOT else ()))
        fd = os.open(self.anchor, _ANCHOR_FLAGS)  # the anchor is trusted: its own path may hold symlinks
        try:
            for depth, comp in enumerate(comps[:-1]):
                try:
                    sub = os.open(comp, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(comp, 0o755, dir_fd=fd)
                    sub = os.open(comp, DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise _unsafe(fd, comp, "/".join(comps[: depth + 1]), exc) from None
                os.close(fd)
                fd = sub
        except BaseException:
            os.close(fd)
            raise
        return fd, comps[-1]

    def remove(self, rel: str) -> None:
        fd, name = self.parent(rel)
        try:
            remove_tree(name, dir_fd=fd)
        finally:
            os.close(fd)

    def make(self, entry: Entry, store: Store, algorithm: str) -> None:
        """Create ``entry`` (replacing what is there)."""
        fd, name = self.parent(entry.path, create=entry.path == ROOT)
        try:
            _make(entry, fd, name, store, algorithm, self)
        finally:
            os.close(fd)

    def chmod(self, rel: str, mode: int, *, add: bool = False) -> None:
        """Set ``rel``'s permission bits to ``mode`` (``add``: add them); a symlink's are left alone."""
        fd, name = self.parent(rel)
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            now = stat.S_IMODE(st.st_mode)
            wanted = now | mode if add else mode
            if not stat.S_ISLNK(st.st_mode) and now != wanted:
                try:
                    os.chmod(name, wanted, dir_fd=fd, follow_symlinks=False)
                except NotImplementedError:  # kernels before fchmodat2 (6.6): through a descriptor
                    _fchmod(fd, name, st, wanted)
        finally:
            os.close(fd)

    def settle(self, rel: str, text: str, store: Store) -> None:
        """Give ``rel`` the owner, extended attributes and permission bits the MODES value ``text`` names (a
        symlink is left alone); the xattrs come from the store's blob."""
        want = attrs.parse(text)
        wanted = {}
        if want.xattrs is not None:
            wanted = attrs.from_blob(store.read_blob(attrs.BLOB_ALGORITHM, want.xattrs))
        fd, name = self.parent(rel)
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                return
            owner = want.owner or attrs.RUNNER
            if (st.st_uid, st.st_gid) != owner:  # before the bits: a chown clears setuid and setgid
                os.chown(name, *owner, dir_fd=fd, follow_symlinks=False)
            # The entry through its parent's descriptor: no component of the path is looked up again.
            where = f"/proc/self/fd/{fd}/{name}"
            now = attrs.read_path(where)
            for xname in sorted(now.keys() - wanted.keys()):
                os.removexattr(where, xname, follow_symlinks=False)
            for xname, data in sorted(wanted.items()):
                if data is None:
                    raise OSError(errno.EACCES, f"the value of {xname} could not be read when it was saved")
                if now.get(xname) != data:
                    os.setxattr(where, xname, data, follow_symlinks=False)
        finally:
            os.close(fd)
        self.chmod(rel, want.bits)

    def set_mtime(self, rel: str, mtime_ns: int) -> None:
        """Give ``rel`` the modification time ``mtime_ns`` (its access time is left as it is)."""
        fd, name = self.parent(rel)
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if st.st_mtime_ns != mtime_ns:
                os.utime(name, ns=(st.st_atime_ns, mtime_ns), dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(fd)

    def stage(self, rel: str) -> str:
        """A fresh temporary name beside ``rel``, recorded in the staging journal before it is created."""
        full = (*self.top, *(paths.parts(rel) if rel != ROOT else ()))
        name = f".{full[-1]}.{os.urandom(8).hex()}{STAGED_SUFFIX}"
        if self.staging is not None:
            self.staging.record(self.anchor, "/".join((*full[:-1], name)))
        return name


def unsafe_path(target: Path, within: Path | None = None) -> str | None:
    """Why ``target`` cannot be restored safely (a component between ``within``, default its nearest
    existing ancestor, and it is a symlink or not a directory), or None. A missing component is no
    reason: a restore creates it."""
    try:
        os.close(_Tree(target, within, None).parent(ROOT)[0])
    except FileNotFoundError:
        return None
    except (OSError, CatalyticError) as exc:
        return _why(exc)
    return None


def tree_parent(anchor: Path, rel: str) -> tuple[int, str]:
    """An open descriptor of the directory holding ``anchor/rel`` and its name there, every component opened
    from ``anchor`` without following a symlink (raises :class:`UnsafePathError` or ``OSError``)."""
    return _Tree(anchor / rel, anchor, None).parent(ROOT)


def _unsafe(fd: int, name: str, prefix: str, exc: OSError) -> Exception:
    """The error for a component ``name`` (``prefix`` from the anchor) that could not be opened as a
    directory without following a symlink (the kernel says ELOOP or ENOTDIR for a symlink)."""
    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
        return exc
    with contextlib.suppress(OSError):
        if stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
            return UnsafePathError(
                f"{prefix!r} is a symlink; a restore never follows a symlink in a tree's path"
            )
    return UnsafePathError(f"{prefix!r} is not a directory; a restore cannot write below it")


def remove_tree(path: Path | str, *, dir_fd: int | None = None) -> None:
    """Remove ``path`` (relative to ``dir_fd`` if given) and everything below it, read-only directories
    included, at any depth (a stack of open directories, not recursion: ``shutil.rmtree`` recurses and
    stops at Python's recursion limit); a symlink is removed, never followed."""
    try:
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path, dir_fd=dir_fd)
        return
    # A read-only directory would stop the removal: each is opened up before it is listed.
    os.chmod(path, stat.S_IMODE(st.st_mode) | 0o700, dir_fd=dir_fd)
    top = os.open(path, DIR_FLAGS, dir_fd=dir_fd)
    stack = [(top, os.listdir(top), "")]  # (directory, names left in it, its name in its parent)
    try:
        while stack:
            fd, names, own = stack[-1]
            if not names:
                stack.pop()
                os.close(fd)
                if stack:
                    os.rmdir(own, dir_fd=stack[-1][0])
                continue
            name = names.pop()
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=fd)
                continue
            if stat.S_IMODE(st.st_mode) & 0o700 != 0o700:
                os.chmod(name, stat.S_IMODE(st.st_mode) | 0o700, dir_fd=fd)
            sub = os.open(name, DIR_FLAGS, dir_fd=fd)
            try:
                listed = os.listdir(sub)
            except BaseException:
                os.close(sub)
                raise
            stack.append((sub, listed, name))
    finally:
        for fd, _names, _own in stack:
            os.close(fd)
    os.rmdir(path, dir_fd=dir_fd)


def _write_file(
    store: Store, algorithm: str, digest: str, fd: int, name: str, mode: int, tree: _Tree, rel: str
) -> None:
    tmp = tree.stage(rel)
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd)
    try:
        try:
            store.copy_out(algorithm, digest, out)
            os.fchmod(out, mode)
            os.fsync(out)
        finally:
            os.close(out)
        faults.point("rollback.staged")
        st = _lstat(name, fd)
        if st is not None and stat.S_ISDIR(st.st_mode):
            remove_tree(name, dir_fd=fd)
        os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=fd)
        raise


def _lstat(name: str, fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _make(entry: Entry, fd: int, name: str, store: Store, algorithm: str, tree: _Tree) -> None:
    value = entry.value
    kind = kind_of(value)
    mode = bits_of(entry.mode) if entry.mode else 0o644
    st = _lstat(name, fd)
    if kind == "dir":
        if st is not None and not stat.S_ISDIR(st.st_mode):
            remove_tree(name, dir_fd=fd)
            st = None
        if st is None:
            os.mkdir(name, 0o700, dir_fd=fd)
        return
    if kind == "file":
        _write_file(store, algorithm, value, fd, name, mode, tree, entry.path)
        return
    if st is not None:
        remove_tree(name, dir_fd=fd)
    if kind == "symlink":
        os.symlink(value[len(SYMLINK_PREFIX) :], name, dir_fd=fd)
    elif value == FIFO:
        os.mkfifo(name, mode, dir_fd=fd)
    elif kind in ("chardev", "blockdev"):
        _, major, minor = value.split(":")
        kind_bits = stat.S_IFCHR if kind == "chardev" else stat.S_IFBLK
        os.mknod(name, mode | kind_bits, os.makedev(int(major), int(minor)), dir_fd=fd)
    else:
        raise OSError(f"a {kind} cannot be recreated")


def restore_tree(
    target: Path,
    want: Iterable[Triple],
    have: Iterable[Triple],
    store: Store,
    algorithm: str,
    *,
    dry_run: bool = False,
    label: str = "",
    within: Path | None = None,
    staging: Staging | None = None,
    times: Iterable[tuple[str, int]] = (),
) -> RestoreReport:
    """Make the tree at ``target`` hold exactly ``want`` (it holds ``have`` now); both are streams of
    ``(path, value, mode)`` in path order, read once, and only what differs is kept.

    ``want`` empty means the tree must not exist. ``label`` prefixes paths in the report. ``within``: the
    trusted directory from which every component of ``target``'s path is opened without following a
    symlink (default: its nearest existing ancestor). ``staging`` records the temporary files of the restore.
    ``times``: the saved modification times, ``(path, mtime_ns)`` in path order; what the restore wrote, and
    the directories it added to or removed from, get theirs back.
    """
    report = RestoreReport()
    tree = _Tree(target, within, staging)

    def name(rel: str) -> str:
        return (label if rel == ROOT else f"{label}/{rel}" if label and label != ROOT else rel) or rel

    doomed: list[str] = []  # present now and not wanted, or wanted with another type
    build: list[Triple] = []  # missing or different, in path order
    modes: list[Triple] = []  # wanted entries whose permission bits are put back at the end
    opened: list[Triple] = []  # directories kept and opened up to write into (their modes put back too)
    attributes: set[str] = set()  # kept entries whose owner, links or xattrs are put back
    for now, wanted in merge_join(have, want, _FIRST):
        if wanted is None:
            assert now is not None
            doomed.append(now[0])
            continue
        if now is None:
            build.append(wanted)
            modes.append(wanted)
            report.actions.append(("create", name(wanted[0])))
            continue
        if kind_of(now[1]) != kind_of(wanted[1]):
            doomed.append(now[0])
        elif now[1] == DIR and now[2] is not None and bits_of(now[2]) & 0o700 != 0o700:
            opened.append(wanted)
        if now[1] != wanted[1] or (kind_of(now[1]) == "file" and _links(now[2]) != _links(wanted[2])):
            # A file with a link it did not have (a hard link made from outside) is written anew: the
            # other name keeps the old inode, the domain's file is its own again.
            build.append(wanted)
            report.actions.append(("replace", name(wanted[0])))
        if now[1] != wanted[1] or now[2] != wanted[2]:
            modes.append(wanted)
            if (now[2] or "")[4:] != (wanted[2] or "")[4:]:  # owner, links or xattrs, not only the bits
                attributes.add(wanted[0])
    removal = sorted(doomed, key=sort_key, reverse=True)
    build_paths = {entry[0] for entry in build}
    chmods = sorted({e[0] for e in modes} - build_paths, key=sort_key)
    report.actions[:0] = [("remove", name(rel)) for rel in removal]
    report.actions.extend(("set attributes" if rel in attributes else "chmod", name(rel)) for rel in chmods)
    if dry_run:
        return report

    # A command may have put a symlink (or a file) in place of a parent of the tree: refuse the tree.
    unsafe = unsafe_path(target, within)
    if unsafe is not None:
        report.problems.append(f"cannot restore {name(ROOT)}: {unsafe}")
        return report
    # Open up directories we will write into (their real modes are put back at the end).
    for entry in opened:
        with contextlib.suppress(OSError, CatalyticError):
            tree.chmod(entry[0], 0o700, add=True)
    for rel in removal:
        faults.point("rollback.entry")
        try:
            tree.remove(rel)
        except (OSError, CatalyticError) as exc:
            report.problems.append(f"{name(rel)}: cannot remove: {_why(exc)}")
    for rel, value, mode in build:
        faults.point("rollback.entry")
        try:
            tree.make(Entry(rel, value, mode), store, algorithm)
        except (OSError, CatalyticError) as exc:
            report.problems.append(f"{name(rel)}: cannot recreate {kind_of(value)}: {_why(exc)}")
    # Owner, xattrs and permission bits last; directories deepest first.
    for rel, _value, mode in sorted([*modes, *opened], key=lambda e: sort_key(e[0]), reverse=True):
        if mode is None:
            continue
        try:
            tree.settle(rel, mode, store)
        except (OSError, CatalyticError, ValueError) as exc:
            report.problems.append(f"{name(rel)}: cannot set mode {mode}: {_why(exc)}")
    # Times last of all: every write above is done.
    touched = build_paths | {e[0] for e in modes} | {_parent(rel) for rel in (*build_paths, *removal)}
    for rel, mtime_ns in times:
        if rel in touched:
            try:
                tree.set_mtime(rel, mtime_ns)
            except (OSError, CatalyticError) as exc:
                report.problems.append(f"{name(rel)}: cannot set its modification time: {_why(exc)}")
    return report


def _parent(rel: str) -> str:
    return rel.rpartition("/")[0] or ROOT


def _links(mode: str | None) -> int:
    """The link count a MODES value names (1 when it names none or is not one)."""
    if mode is None or " n=" not in mode:
        return 1
    try:
        return attrs.parse(mode).links
    except ValueError:
        return 1


def _fchmod(dir_fd: int, name: str, st: os.stat_result, mode: int) -> None:
    """Set the mode of the entry ``name`` of ``dir_fd`` that ``st`` describes, through a descriptor opened
    without following a symlink (checked to be that very entry)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(name, flags, dir_fd=dir_fd)
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise OSError(errno.ESTALE, "was replaced while its mode was set")
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _why(exc: OSError | CatalyticError | ValueError) -> str:
    if isinstance(exc, CatalyticError):
        return exc.message
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
