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
import os
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

from catalytic import faults
from catalytic.diff import Triple, merge_join
from catalytic.isolation.store import Store, StoreError
from catalytic.paths import ROOT, sort_key
from catalytic.snapshot.entry import DIR, FIFO, SYMLINK_PREFIX, Entry, kind_of
from catalytic.snapshot.walker import DIR_FLAGS

_FIRST = itemgetter(0)


@dataclass
class RestoreReport:
    """What a restoration did (or would do, in a dry run) and what it could not do."""

    actions: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _abs(base: Path, rel: str) -> Path:
    return base if rel == ROOT else base / rel


def remove_tree(path: Path) -> None:
    """Remove ``path`` and everything below it, read-only directories included, at any depth (a stack of
    open directories, not recursion: ``shutil.rmtree`` recurses and stops at Python's recursion limit)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    # A read-only directory would stop the removal: each is opened up before it is listed.
    os.chmod(path, stat.S_IMODE(st.st_mode) | 0o700)
    top = os.open(path, DIR_FLAGS)
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
    os.rmdir(path)


def _write_file(store: Store, algorithm: str, digest: str, path: Path, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".restore", dir=path.parent)
    try:
        try:
            store.copy_out(algorithm, digest, fd)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        if os.path.isdir(path) and not os.path.islink(path):
            remove_tree(path)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _make(entry: Entry, path: Path, store: Store, algorithm: str) -> None:
    value = entry.value
    kind = kind_of(value)
    mode = int(entry.mode, 8) if entry.mode else 0o644
    if kind == "dir":
        if os.path.lexists(path) and not (os.path.isdir(path) and not os.path.islink(path)):
            remove_tree(path)
        if not os.path.isdir(path):
            os.mkdir(path, 0o700)
        return
    if kind == "file":
        _write_file(store, algorithm, value, path, mode)
        return
    if os.path.lexists(path):
        remove_tree(path)
    if kind == "symlink":
        os.symlink(value[len(SYMLINK_PREFIX) :], path)
    elif value == FIFO:
        os.mkfifo(path, mode)
    elif kind in ("chardev", "blockdev"):
        _, major, minor = value.split(":")
        kind_bits = stat.S_IFCHR if kind == "chardev" else stat.S_IFBLK
        os.mknod(path, mode | kind_bits, os.makedev(int(major), int(minor)))
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
) -> RestoreReport:
    """Make the tree at ``target`` hold exactly ``want`` (it holds ``have`` now); both are streams of
    ``(path, value, mode)`` in path order, read once, and only what differs is kept.

    ``want`` empty means the tree must not exist. ``label`` prefixes paths in the report.
    """
    report = RestoreReport()

    def name(rel: str) -> str:
        return (label if rel == ROOT else f"{label}/{rel}" if label and label != ROOT else rel) or rel

    doomed: list[str] = []  # present now and not wanted, or wanted with another type
    build: list[Triple] = []  # missing or different, in path order
    modes: list[Triple] = []  # wanted entries whose permission bits are put back at the end
    opened: list[Triple] = []  # directories kept and opened up to write into (their modes put back too)
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
        elif now[1] == DIR and now[2] is not None and int(now[2], 8) & 0o700 != 0o700:
            opened.append(wanted)
        if now[1] != wanted[1]:
            build.append(wanted)
            report.actions.append(("replace", name(wanted[0])))
        if now[1] != wanted[1] or now[2] != wanted[2]:
            modes.append(wanted)
    removal = sorted(doomed, key=sort_key, reverse=True)
    build_paths = {entry[0] for entry in build}
    chmods = sorted({e[0] for e in modes} - build_paths, key=sort_key)
    report.actions[:0] = [("remove", name(rel)) for rel in removal]
    report.actions.extend(("chmod", name(rel)) for rel in chmods)
    if dry_run:
        return report

    # Open up directories we will write into (their real modes are put back at the end).
    for entry in opened:
        p = _abs(target, entry[0])
        with contextlib.suppress(OSError):
            os.chmod(p, stat.S_IMODE(os.lstat(p).st_mode) | 0o700)
    for rel in removal:
        faults.point("rollback.entry")
        try:
            remove_tree(_abs(target, rel))
        except OSError as exc:
            report.problems.append(f"{name(rel)}: cannot remove: {exc.strerror or exc}")
    for rel, value, mode in build:
        faults.point("rollback.entry")
        try:
            if rel == ROOT:
                target.parent.mkdir(parents=True, exist_ok=True)
            _make(Entry(rel, value, mode), _abs(target, rel), store, algorithm)
        except (OSError, StoreError) as exc:
            message = exc.message if isinstance(exc, StoreError) else (exc.strerror or str(exc))
            report.problems.append(f"{name(rel)}: cannot recreate {kind_of(value)}: {message}")
    # Permission bits last; directories deepest first.
    for rel, _value, mode in sorted([*modes, *opened], key=lambda e: sort_key(e[0]), reverse=True):
        if mode is None:
            continue
        p = _abs(target, rel)
        try:
            if stat.S_IMODE(os.lstat(p).st_mode) != int(mode, 8):
                os.chmod(p, int(mode, 8))
        except OSError as exc:
            report.problems.append(f"{name(rel)}: cannot set mode {mode}: {exc.strerror or exc}")
    return report
