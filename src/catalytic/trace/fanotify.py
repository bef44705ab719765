"""The fanotify backend (Linux >= 5.17, CAP_SYS_ADMIN): filesystem-wide marks, writer pid and name.

One fanotify group with ``FAN_REPORT_DFID_NAME | FAN_REPORT_FID | FAN_REPORT_TARGET_FID`` and a
``FAN_MARK_FILESYSTEM`` mark on every filesystem the scope lives on. Each event names its directory by
file handle; the handles of every directory in scope are learnt before the child starts (walk +
``name_to_handle_at``) and from the child's own mkdir/rename events, so a temporary directory removed
before its events are read is still named. Handles we have never seen are resolved once with
``open_by_handle_at``; those outside the scope (the rest of the filesystem) are remembered and skipped.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import struct
import threading
from dataclasses import dataclass
from typing import Any

from catalytic import paths
from catalytic.errors import TraceUnavailable
from catalytic.trace.log import TraceEvent, TraceLog, TraceScope, now_iso

FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_CLASS_NOTIF = 0x0
FAN_REPORT_FID = 0x200
FAN_REPORT_DIR_FID = 0x400
FAN_REPORT_NAME = 0x800
FAN_REPORT_TARGET_FID = 0x1000
FAN_MARK_ADD = 0x1
FAN_MARK_FILESYSTEM = 0x100

FAN_MODIFY = 0x2
FAN_ATTRIB = 0x4
FAN_MOVED_FROM = 0x40
FAN_MOVED_TO = 0x80
FAN_OPEN_EXEC = 0x1000
FAN_CREATE = 0x100
FAN_DELETE = 0x200
FAN_Q_OVERFLOW = 0x4000
FAN_RENAME = 0x10000000
FAN_ONDIR = 0x40000000
MASK = FAN_MODIFY | FAN_ATTRIB | FAN_CREATE | FAN_DELETE | FAN_RENAME | FAN_ONDIR | FAN_OPEN_EXEC

INFO_FID = 1
INFO_DFID_NAME = 2
INFO_DFID = 3
INFO_OLD_DFID_NAME = 10
INFO_NEW_DFID_NAME = 12

_META = struct.Struct("=IBBHQii")
_INFO = struct.Struct("=BBH")
_FID_HEAD = struct.Struct("=iiIi")  # fsid[2], handle_bytes, handle_type
MAX_HANDLE_SZ = 128
_BUFFER = 1 << 18
_AT_FDCWD = -100

Key = tuple[int, int, bytes]  # (fsid, handle type, handle bytes)


class _FileHandle(ctypes.Structure):
    _fields_ = (
        ("handle_bytes", ctypes.c_uint),
        ("handle_type", ctypes.c_int),
        ("f_handle", ctypes.c_ubyte * MAX_HANDLE_SZ),
    )


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
    libc.fanotify_mark.argtypes = [
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint64,
        ctypes.c_int,
        ctypes.c_char_p,
    ]
    libc.name_to_handle_at.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.POINTER(_FileHandle),
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_int,
    ]
    libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.POINTER(_FileHandle), ctypes.c_int]
    return libc


def _fsid(path: bytes) -> int:
    return os.statvfs(path).f_fsid & 0xFFFFFFFFFFFFFFFF


def _event_fsid(a: int, b: int) -> int:
    return (a & 0xFFFFFFFF) | ((b & 0xFFFFFFFF) << 32)


@dataclass
class _Raw:
    mask: int
    pid: int
    dir_key: Key | None = None
    name: bytes = b""
    old_key: Key | None = None
    old_name: bytes = b""
    new_key: Key | None = None
    new_name: bytes = b""
    target: Key | None = None


def _parse_fid(buf: bytes, at: int) -> tuple[Key, int]:
    fsid0, fsid1, nbytes, htype = _FID_HEAD.unpack_from(buf, at)
    start = at + _FID_HEAD.size
    return (_event_fsid(fsid0, fsid1), htype, bytes(buf[start : start + nbytes])), start + nbytes


def parse(buf: bytes) -> tuple[list[_Raw], int]:
    """Parse a read() of fanotify events; returns the events and how many overflow markers."""
    events: list[_Raw] = []
    overflows = 0
    pos = 0
    while pos + _META.size <= len(buf):
        event_len, _vers, _res, meta_len, mask, fd, pid = _META.unpack_from(buf, pos)
        if event_len < meta_len:
            break
        if fd >= 0:
            os.close(fd)
        if mask & FAN_Q_OVERFLOW:
            overflows += 1
            pos += event_len
            continue
        raw = _Raw(mask, pid)
        info = pos + meta_len
        end = pos + event_len
        while info + _INFO.size <= end:
            itype, _pad, ilen = _INFO.unpack_from(buf, info)
            if ilen == 0:
                break
            body = info + _INFO.size
            if itype in (INFO_FID, INFO_DFID, INFO_DFID_NAME, INFO_OLD_DFID_NAME, INFO_NEW_DFID_NAME):
                key, after = _parse_fid(buf, body)
                name = b""
                if itype in (INFO_DFID_NAME, INFO_OLD_DFID_NAME, INFO_NEW_DFID_NAME):
                    name = bytes(buf[after : info + ilen]).split(b"\0", 1)[0]
                if itype == INFO_FID:
                    raw.target = key
                elif itype in (INFO_DFID_NAME, INFO_DFID):
                    raw.dir_key, raw.name = key, name
                elif itype == INFO_OLD_DFID_NAME:
                    raw.old_key, raw.old_name = key, name
                else:
                    raw.new_key, raw.new_name = key, name
            info += ilen
        events.append(raw)
        pos += event_len
    return events, overflows


def _place_deferred(log: TraceLog, deferred: list[tuple[int, TraceEvent]]) -> None:
    """Insert merged-away deletes after the last event at or under their path (deepest first)."""
    for position, event in sorted(deferred, key=lambda item: (-item[1].path.count("/"), item[0])):
        prefix = event.path + "/"
        at = position
        for i in range(position, len(log.events)):
            other = log.events[i]
            if other.path == event.path or other.path.startswith(prefix) or (
                other.dest is not None and (other.dest == event.path or other.dest.startswith(prefix))
            ):
                at = i + 1
        stamp = log.events[at - 1].timestamp if 0 < at <= len(log.events) else event.timestamp
        stamp = max(stamp, event.timestamp)
        log.events.insert(at, TraceEvent(stamp, event.path, event.op, None, event.pid, event.process))


def _is_loader(name: bytes) -> bool:
    return name.startswith(b"ld-") or b".so" in name


def _wanted(scope: TraceScope, path: bytes) -> bool:
    rel = scope.relative(path)
    if rel is None:
        return False
    if scope.contains(rel):
        return True
    return any(paths.is_within(p, rel) for p in scope.paths) and not any(
        paths.is_within(rel, ex) for ex in scope.exclude
    )


class FanotifyTracer:
    """Filesystem-wide fanotify marks; see the module docstring."""

    name = "fanotify"

    def __init__(self, *, hold: threading.Event | None = None) -> None:
        # ``hold``: tests keep the reader from reading until it is set, to force a queue overflow.
        self._hold = hold
        self._fd = -1
        self._mount_fds: dict[int, int] = {}
        self._paths: dict[Key, bytes] = {}
        self._outside: set[Key] = set()
        self._comm: dict[int, str] = {}
        self._deferred: list[tuple[int, TraceEvent]] = []
        self._stop_r, self._stop_w = -1, -1
        self._thread: threading.Thread | None = None
        self._log: TraceLog | None = None
        self._scope: TraceScope | None = None
        self._error: BaseException | None = None
        self._self_pid = os.getpid()
        self._libc: Any = None

    # -- setup ---------------------------------------------------------------------------------
    def start(self, scope: TraceScope) -> None:
        if not hasattr(os, "statvfs") or not os.path.isdir("/proc/self/fd"):
            raise TraceUnavailable("fanotify needs Linux")
        try:
            libc = _libc()
        except (OSError, AttributeError) as exc:
            raise TraceUnavailable(f"libc has no fanotify: {exc}") from None
        self._libc = libc
        flags = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK
        flags |= FAN_REPORT_DIR_FID | FAN_REPORT_NAME | FAN_REPORT_FID | FAN_REPORT_TARGET_FID
        fd = libc.fanotify_init(flags, os.O_RDONLY | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            why = {
                errno.EPERM: "needs CAP_SYS_ADMIN (run as root)",
                errno.EINVAL: "this kernel lacks FAN_REPORT_TARGET_FID (needs Linux >= 5.17)",
                errno.ENOSYS: "the kernel was built without fanotify",
            }.get(err, os.strerror(err))
            raise TraceUnavailable(f"fanotify_init failed: {errno.errorcode.get(err, err)}: {why}")
        self._fd = fd
        try:
            self._mark(scope)
            self._scope = scope
            self._log = TraceLog(self.name, scope.name, list(scope.paths), now_iso())
            self._learn_tree(scope)
        except BaseException:
            self._close()
            raise
        self._stop_r, self._stop_w = os.pipe()
        # Threads inherit the signal mask: keep SIGCHLD/SIGINT/SIGTERM for the runner's sigtimedwait.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGINT, signal.SIGTERM})
        try:
            self._thread = threading.Thread(target=self._run, name="catalytic-fanotify", daemon=True)
            self._thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def _mark(self, scope: TraceScope) -> None:
        for root in scope.watch_roots():
            path = os.fsencode(root)
            fsid = _fsid(path)
            if fsid in self._mount_fds:
                continue
            if (
                self._libc.fanotify_mark(self._fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, MASK, _AT_FDCWD, path)
                < 0
            ):
                err = ctypes.get_errno()
                raise TraceUnavailable(
                    f"fanotify_mark(FAN_MARK_FILESYSTEM) on {root} failed: "
                    f"{errno.errorcode.get(err, err)}: {os.strerror(err)}"
                )
            self._mount_fds[fsid] = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _handle_of(self, path: bytes) -> Key | None:
        handle = _FileHandle()
        handle.handle_bytes = MAX_HANDLE_SZ
        mount_id = ctypes.c_int()
        if self._libc.name_to_handle_at(_AT_FDCWD, path, ctypes.byref(handle), ctypes.byref(mount_id), 0) < 0:
            return None
        data = bytes(handle.f_handle[: handle.handle_bytes])
        return (_fsid(path), handle.handle_type, data)

    def _learn_tree(self, scope: TraceScope) -> None:
        """Remember the handle of every directory in scope (after the marks, so none is missed)."""
        for root in scope.watch_roots():
            self._learn(os.fsencode(root))

    def _learn(self, top_dir: bytes) -> None:
        assert self._scope is not None
        scope = self._scope
        for top, dirs, _files in os.walk(top_dir):
            found = self._handle_of(top)
            if found is not None:
                self._paths[found] = top
            # Ancestors of an absent domain are walked only towards it; the runs root never.
            dirs[:] = [d for d in dirs if _wanted(scope, os.path.join(top, d))]

    # -- reading -------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            if self._hold is not None:
                self._hold.wait()
            poller = select.poll()
            poller.register(self._fd, select.POLLIN)
            poller.register(self._stop_r, select.POLLIN)
            while True:
                ready = {fd for fd, _ in poller.poll()}
                if self._fd in ready:
                    self._read_available()
                if self._stop_r in ready:
                    self._read_available()  # drain: the child has exited, so nothing new is ours
                    return
        except BaseException as exc:  # surfaced by stop()
            self._error = exc

    def _read_available(self) -> None:
        while True:
            try:
                buf = os.read(self._fd, _BUFFER)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            if not buf:
                return
            self._process(buf)

    def _process(self, buf: bytes) -> None:
        assert self._log is not None and self._scope is not None
        raws, overflows = parse(buf)
        if overflows:
            self._log.incomplete("fanotify queue overflow: the kernel dropped events")
        stamp = now_iso()
        comms: dict[int, str | None] = {}
        for raw in raws:
            if raw.pid == self._self_pid:
                continue
            if raw.mask & FAN_OPEN_EXEC:
                # A process that exits before we read /proc/<pid>/comm is still named by what it ran
                # (the dynamic loader is opened for exec too, after the program: skip it).
                if raw.name and not _is_loader(raw.name):
                    self._comm[raw.pid] = raw.name.decode("utf-8", "replace")[:15]
                if not raw.mask & ~(FAN_OPEN_EXEC | FAN_ONDIR):
                    continue
            for event in self._translate(raw, stamp):
                if event.pid is not None:
                    if event.pid not in comms:
                        comms[event.pid] = self._process_name(event.pid)
                    event = TraceEvent(
                        event.timestamp, event.path, event.op, event.dest, event.pid, comms[event.pid]
                    )
                self._log.events.append(event)

    def _process_name(self, pid: int) -> str | None:
        try:
            with open(f"/proc/{pid}/comm", "rb") as fh:
                name = fh.read().rstrip(b"\n").decode("utf-8", "replace")
        except OSError:
            return self._comm.get(pid)  # exited already: the name it had when last seen
        self._comm[pid] = name
        return name

    def _dir(self, key: Key | None) -> bytes | None:
        if key is None or key in self._outside:
            return None
        known = self._paths.get(key)
        if known is not None:
            return known
        path = self._open_by_handle(key)
        assert self._scope is not None
        # Every directory in scope is known before the child starts or learnt from the event that made
        # it appear, so a handle that cannot be opened (already removed) belongs to another part of
        # the filesystem: other processes' temporary directories, not ours.
        if path is None or not self._scope.contains(self._scope.relative(path)):
            self._outside.add(key)
            return None
        self._paths[key] = path
        return path

    def _open_by_handle(self, key: Key) -> bytes | None:
        mount_fd = self._mount_fds.get(key[0])
        if mount_fd is None:
            return None
        handle = _FileHandle()
        handle.handle_bytes = len(key[2])
        handle.handle_type = key[1]
        ctypes.memmove(handle.f_handle, key[2], len(key[2]))
        fd = self._libc.open_by_handle_at(mount_fd, ctypes.byref(handle), os.O_PATH | os.O_CLOEXEC)
        if fd < 0:
            return None
        try:
            path = os.readlink(f"/proc/self/fd/{fd}".encode())
        finally:
            os.close(fd)
        return None if path.endswith(b" (deleted)") else path

    def _translate(self, raw: _Raw, stamp: str) -> list[TraceEvent]:
        scope = self._scope
        assert scope is not None
        is_dir = bool(raw.mask & FAN_ONDIR)
        if raw.mask & FAN_RENAME:
            old_dir, new_dir = self._dir(raw.old_key), self._dir(raw.new_key)
            old = os.path.join(old_dir, raw.old_name) if old_dir is not None else None
            new = os.path.join(new_dir, raw.new_name) if new_dir is not None else None
            if is_dir and new is not None:
                self._moved_dir(old, new, raw.target)
            if old is None and new is None:
                return []
            src = scope.name_of(old) if old is not None else "?"
            dst = scope.name_of(new) if new is not None else "?"
            return [TraceEvent(stamp, src, "move", dst, raw.pid)]
        parent = self._dir(raw.dir_key)
        if parent is None:
            return []
        full = parent if raw.name in (b"", b".") else os.path.join(parent, raw.name)
        rel = scope.relative(full)
        if not scope.contains(rel):
            return []
        name = scope.name_of(full)
        out: list[TraceEvent] = []
        if raw.mask & FAN_CREATE:
            out.append(TraceEvent(stamp, name, "mkdir" if is_dir else "create", None, raw.pid))
            if is_dir and raw.target is not None:
                self._paths[raw.target] = full
                self._outside.discard(raw.target)
        if raw.mask & FAN_MODIFY:
            out.append(TraceEvent(stamp, name, "modify", None, raw.pid))
        if raw.mask & FAN_ATTRIB:
            out.append(TraceEvent(stamp, name, "chmod", None, raw.pid))
        if raw.mask & FAN_DELETE:
            gone = TraceEvent(stamp, name, "rmdir" if is_dir else "delete", None, raw.pid)
            if out:
                # The kernel merged this delete into an earlier queued event of the same object and
                # process (e.g. mkdir + rmdir): it happened after that one, and after everything
                # inside the directory. stop() puts it back in its place.
                assert self._log is not None
                self._deferred.append((len(self._log.events) + len(out), gone))
            else:
                out.append(gone)
        return out

    def _moved_dir(self, old: bytes | None, new: bytes, target: Key | None) -> None:
        """Keep the handle -> path map true after a directory rename (its whole subtree moves)."""
        assert self._scope is not None
        if old is not None:
            prefix = old + b"/"
            for key, path in list(self._paths.items()):
                if path == old:
                    self._paths[key] = new
                elif path.startswith(prefix):
                    self._paths[key] = new + path[len(old) :]
        elif target is not None:
            # Moved in from outside what we know: learn its subtree now.
            self._paths[target] = new
            self._outside.clear()
            self._learn(new)

    # -- stopping ------------------------------------------------------------------------------
    def stop(self) -> TraceLog:
        assert self._log is not None, "stop() before start()"
        if self._hold is not None:
            self._hold.set()
        if self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join()
        self._close()
        log = self._log
        _place_deferred(log, self._deferred)
        log.stopped_at = now_iso()
        if self._error is not None:
            log.incomplete(f"fanotify reader failed: {type(self._error).__name__}: {self._error}")
        return log

    def _close(self) -> None:
        for fd in (self._fd, self._stop_r, self._stop_w, *self._mount_fds.values()):
            if fd >= 0:
                os.close(fd)
        self._fd = self._stop_r = self._stop_w = -1
        self._mount_fds = {}
