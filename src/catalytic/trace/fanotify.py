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
_U32 = struct.Struct("=I")
_PID_AT = 20  # offset of pid in fanotify_event_metadata
MAX_HANDLE_SZ = 128
_BUFFER = 1 << 20
BACKLOG_LIMIT = 64 << 20
_AT_FDCWD = -100
_FID_INFOS = (INFO_FID, INFO_DFID, INFO_DFID_NAME, INFO_OLD_DFID_NAME, INFO_NEW_DFID_NAME)

#: A directory's identity as fanotify reports it: the raw bytes of fsid + struct file_handle.
Key = bytes
IN, PARTIAL, OUT = 0, 1, 2


@dataclass(slots=True)
class _Dir:
    """A directory we know by handle: where it is and whether its children are in scope."""

    path: bytes
    rel: str
    mode: int


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


def _fsid_bytes(path: bytes) -> bytes:
    """``__kernel_fsid_t`` of the filesystem holding ``path``, as fanotify reports it."""
    fsid = os.statvfs(path).f_fsid & 0xFFFFFFFFFFFFFFFF
    return struct.pack("=II", fsid & 0xFFFFFFFF, fsid >> 32)


def _place_deferred(log: TraceLog, deferred: list[tuple[int, TraceEvent]]) -> None:
    """Insert merged-away deletes after the last event at or under their path (deepest first)."""
    for position, event in sorted(deferred, key=lambda item: (-item[1].path.count("/"), item[0])):
        prefix = event.path + "/"
        at = position
        for i in range(position, len(log.events)):
            other = log.events[i]
            if (
                other.path == event.path
                or other.path.startswith(prefix)
                or (other.dest is not None and (other.dest == event.path or other.dest.startswith(prefix)))
            ):
                at = i + 1
        stamp = log.events[at - 1].timestamp if 0 < at <= len(log.events) else event.timestamp
        event.timestamp = max(stamp, event.timestamp)
        log.events.insert(at, event)


def _is_loader(name: bytes) -> bool:
    return name.startswith(b"ld-") or b".so" in name


class FanotifyTracer:
    """Filesystem-wide fanotify marks; see the module docstring.

    While the child runs, the reader thread only copies the queue into memory (and reads
    ``/proc/<pid>/comm`` for each new writer), so a burst of writes cannot overflow the kernel
    queue behind a slow parser; the events are decoded in order when the child has exited.
    """

    name = "fanotify"

    def __init__(self, *, hold: threading.Event | None = None) -> None:
        # ``hold``: tests keep the reader from reading until it is set, to force a queue overflow.
        self._hold = hold
        self._fd = -1
        self._libc: Any = None
        self._mount_fds: dict[bytes, int] = {}
        self._dirs: dict[Key, _Dir] = {}
        self._buffers: list[tuple[str, bytes]] = []
        self._backlog = 0
        self._draining = False
        self._comm: dict[int, str] = {}
        self._exe: dict[int, str] = {}
        self._deferred: list[tuple[int, TraceEvent]] = []
        self._stop_r, self._stop_w = -1, -1
        self._thread: threading.Thread | None = None
        self._log: TraceLog | None = None
        self._scope: TraceScope | None = None
        self._error: BaseException | None = None
        self._self_pid = os.getpid()

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
            self._scope = scope
            self._mark(scope)
            self._log = TraceLog(self.name, scope.name, list(scope.paths), now_iso())
            for root in scope.watch_roots():
                self._learn(os.fsencode(root))
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
            fsid = _fsid_bytes(path)
            if fsid in self._mount_fds:
                continue
            flags = FAN_MARK_ADD | FAN_MARK_FILESYSTEM
            if self._libc.fanotify_mark(self._fd, flags, MASK, _AT_FDCWD, path) < 0:
                err = ctypes.get_errno()
                hint = " (filesystem marks need CAP_SYS_ADMIN: run as root)" if err == errno.EPERM else ""
                raise TraceUnavailable(
                    f"fanotify_mark(FAN_MARK_FILESYSTEM) on {root} failed: "
                    f"{errno.errorcode.get(err, err)}: {os.strerror(err)}{hint}"
                )
            self._mount_fds[fsid] = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _handle_of(self, path: bytes) -> Key | None:
        handle = _FileHandle()
        handle.handle_bytes = MAX_HANDLE_SZ
        mount_id = ctypes.c_int()
        if self._libc.name_to_handle_at(_AT_FDCWD, path, ctypes.byref(handle), ctypes.byref(mount_id), 0) < 0:
            return None
        head = struct.pack("=Ii", handle.handle_bytes, handle.handle_type)
        return _fsid_bytes(path) + head + bytes(handle.f_handle[: handle.handle_bytes])

    def _describe(self, path: bytes) -> _Dir:
        """Where ``path`` is, and whether all, some or none of its children are in scope."""
        scope = self._scope
        assert scope is not None
        rel = scope.relative(path)
        if rel is None:
            return _Dir(path, "", OUT)
        if scope.contains(rel):
            below = any(ex != rel and paths.is_within(ex, rel) for ex in scope.exclude)
            return _Dir(path, rel, PARTIAL if below else IN)
        towards = any(paths.is_within(p, rel) for p in scope.paths)
        excluded = any(paths.is_within(rel, ex) for ex in scope.exclude)
        return _Dir(path, rel, PARTIAL if towards and not excluded else OUT)

    def _learn(self, top_dir: bytes) -> None:
        """Remember the handle of every directory in scope (after the marks, so none is missed)."""
        for top, dirs, _files in paths.walk_dirs(top_dir):
            found = self._handle_of(top)
            if found is not None:
                self._dirs[found] = self._describe(top)
            # Ancestors of an absent domain are walked only towards it; the runs root never.
            dirs[:] = [d for d in dirs if self._describe(os.path.join(top, d)).mode != OUT]

    # -- reading (while the child runs) --------------------------------------------------------
    def _run(self) -> None:
        try:
            if self._hold is not None:
                self._hold.wait()
            poller = select.poll()
            poller.register(self._fd, select.POLLIN)
            poller.register(self._stop_r, select.POLLIN)
            while True:
                ready = {fd for fd, _ in poller.poll()}
                if self._stop_r in ready:
                    self._draining = True  # stop() decodes the rest
                    self._read_available()  # drain: the child has exited, so nothing new is ours
                    return
                if self._fd in ready:
                    self._read_available()
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
            self._buffers.append((now_iso(), buf))
            self._backlog += len(buf)
            self._note_processes(buf)
        if self._backlog > BACKLOG_LIMIT and not self._draining:
            # A long run on a busy filesystem: decode now (the queue is empty this instant) so that
            # memory holds only the events in scope, not everything the filesystem saw.
            self._decode_all()

    def _note_processes(self, buf: bytes) -> None:
        """Read the name of each new writer now, while it may still be running."""
        pos, size, comm, unpack = 0, len(buf), self._comm, _U32.unpack_from
        while pos + 24 <= size:
            pid = unpack(buf, pos + _PID_AT)[0]
            if pid not in comm:
                try:
                    with open(f"/proc/{pid}/comm", "rb") as fh:
                        comm[pid] = fh.read().rstrip(b"\n").decode("utf-8", "replace")
                except OSError:
                    comm[pid] = ""
            pos += unpack(buf, pos)[0] or size

    # -- decoding (after the child exited) -----------------------------------------------------
    def _decode_all(self) -> None:
        log = self._log
        assert log is not None
        for stamp, buf in self._buffers:
            self._decode(stamp, buf, log)
        self._buffers = []
        self._backlog = 0

    def _decode(self, stamp: str, buf: bytes, log: TraceLog) -> None:
        pos, size = 0, len(buf)
        meta, info_s = _META.unpack_from, _INFO.unpack_from
        while pos + 24 <= size:
            event_len, _v, _r, meta_len, mask, fd, pid = meta(buf, pos)
            if event_len < meta_len:
                break
            end = pos + event_len
            if fd >= 0:
                os.close(fd)
            if mask & FAN_Q_OVERFLOW:
                log.incomplete("fanotify queue overflow: the kernel dropped events")
                pos = end
                continue
            if pid == self._self_pid:
                pos = end
                continue
            dir_key = old_key = new_key = target = None
            name = old_name = new_name = b""
            info = pos + meta_len
            while info + 4 <= end:
                itype, _pad, ilen = info_s(buf, info)
                if ilen == 0:
                    break
                if itype in _FID_INFOS:
                    body = info + 4
                    nbytes = _U32.unpack_from(buf, body + 8)[0]
                    after = body + 16 + nbytes
                    key = buf[body:after]
                    if itype == INFO_FID:
                        target = key
                    else:
                        fname = buf[after : info + ilen].split(b"\0", 1)[0]
                        if itype == INFO_OLD_DFID_NAME:
                            old_key, old_name = key, fname
                        elif itype == INFO_NEW_DFID_NAME:
                            new_key, new_name = key, fname
                        else:
                            dir_key, name = key, fname
                info += ilen
            pos = end
            if mask & FAN_OPEN_EXEC:
                # Names a process that exited before /proc/<pid>/comm could be read, in order (the
                # dynamic loader is opened for exec too, after the program: skip it).
                if name and not _is_loader(name):
                    self._exe[pid] = name.decode("utf-8", "replace")[:15]
                mask &= ~FAN_OPEN_EXEC
                if not mask & ~FAN_ONDIR:
                    continue
            if mask & FAN_RENAME:
                self._rename(stamp, mask, pid, old_key, old_name, new_key, new_name, target, log)
            elif dir_key is not None:
                self._entry(stamp, mask, pid, dir_key, name, target, log)

    def _process(self, pid: int) -> str | None:
        return self._exe.get(pid) or self._comm.get(pid) or None

    def _dir(self, key: Key) -> _Dir:
        known = self._dirs.get(key)
        if known is None:
            # Every directory in scope is known before the child starts or learnt from the event
            # that made it appear, so a handle we do not know (and that may be gone) lies elsewhere
            # on the filesystem; resolve it once to be sure, and remember the answer.
            path = self._open_by_handle(key)
            known = self._describe(path) if path is not None else _Dir(b"", "", OUT)
            self._dirs[key] = known
        return known

    def _child(self, parent: _Dir, name: bytes) -> tuple[bytes, str] | None:
        """The absolute path and the log's name for ``name`` in ``parent``, or None if out of scope."""
        if parent.mode == OUT:
            return None
        full = parent.path if name in (b"", b".") else parent.path + b"/" + name
        if parent.mode == IN:
            if name in (b"", b"."):
                return full, parent.rel
            text = name.decode("utf-8", "surrogateescape")
            return full, text if parent.rel == paths.ROOT else f"{parent.rel}/{text}"
        assert self._scope is not None
        rel = self._scope.relative(full)
        return (full, rel) if rel is not None and self._scope.contains(rel) else None

    def _entry(
        self, stamp: str, mask: int, pid: int, key: Key, name: bytes, target: Key | None, log: TraceLog
    ) -> None:
        parent = self._dir(key)
        found = self._child(parent, name)
        if found is None:
            if mask & FAN_CREATE and mask & FAN_ONDIR and target is not None and parent.mode != OUT:
                # A directory on the way to an absent domain (or the domain itself, being made).
                self._dirs[target] = self._describe(parent.path + b"/" + name)
            return
        full, rel = found
        is_dir = bool(mask & FAN_ONDIR)
        proc = self._process(pid)
        events = log.events
        first = len(events)
        if mask & FAN_CREATE:
            events.append(TraceEvent(stamp, rel, "mkdir" if is_dir else "create", None, pid, proc))
            if is_dir and target is not None:
                self._dirs[target] = self._describe(full)
        if mask & FAN_MODIFY:
            events.append(TraceEvent(stamp, rel, "modify", None, pid, proc))
        if mask & FAN_ATTRIB:
            events.append(TraceEvent(stamp, rel, "chmod", None, pid, proc))
        if mask & FAN_DELETE:
            gone = TraceEvent(stamp, rel, "rmdir" if is_dir else "delete", None, pid, proc)
            if len(events) > first:
                # The kernel merged this delete into an earlier queued event of the same object and
                # process (e.g. mkdir + rmdir): it happened after that one, and after everything
                # inside the directory. stop() puts it back in its place.
                self._deferred.append((len(events), gone))
            else:
                events.append(gone)

    def _rename(
        self,
        stamp: str,
        mask: int,
        pid: int,
        old_key: Key | None,
        old_name: bytes,
        new_key: Key | None,
        new_name: bytes,
        target: Key | None,
        log: TraceLog,
    ) -> None:
        assert self._scope is not None
        old = self._child(self._dir(old_key), old_name) if old_key is not None else None
        new = self._child(self._dir(new_key), new_name) if new_key is not None else None
        if mask & FAN_ONDIR:
            old_path = None
            if old_key is not None:
                old_dir = self._dir(old_key)
                old_path = old_dir.path + b"/" + old_name if old_dir.path else None
            new_dir = self._dir(new_key) if new_key is not None else None
            if new_dir is not None and new_dir.path:
                self._moved_dir(old_path, new_dir.path + b"/" + new_name, target)
        if old is None and new is None:
            return
        src = old[1] if old is not None else self._outside_name(old_key, old_name)
        dst = new[1] if new is not None else self._outside_name(new_key, new_name)
        log.events.append(TraceEvent(stamp, src, "move", dst, pid, self._process(pid)))

    def _outside_name(self, key: Key | None, name: bytes) -> str:
        parent = self._dir(key) if key is not None else None
        if parent is None or not parent.path:
            return "?/" + name.decode("utf-8", "surrogateescape")
        assert self._scope is not None
        return self._scope.name_of(parent.path + b"/" + name)

    def _moved_dir(self, old: bytes | None, new: bytes, target: Key | None) -> None:
        """Keep the handle -> directory map true after a directory rename (its subtree moves too)."""
        moved = False
        if old is not None:
            prefix = old + b"/"
            for key, known in list(self._dirs.items()):
                if known.path == old or known.path.startswith(prefix):
                    self._dirs[key] = self._describe(new + known.path[len(old) :])
                    moved = True
        if not moved and target is not None:
            # Moved in from a part of the filesystem we did not follow: learn its subtree now.
            self._dirs[target] = self._describe(new)
            self._dirs = {k: d for k, d in self._dirs.items() if d.mode != OUT}
            self._learn(new)

    def _open_by_handle(self, key: Key) -> bytes | None:
        mount_fd = self._mount_fds.get(key[:8])
        if mount_fd is None:
            return None
        nbytes, htype = struct.unpack_from("=Ii", key, 8)
        handle = _FileHandle()
        handle.handle_bytes = nbytes
        handle.handle_type = htype
        ctypes.memmove(handle.f_handle, key[16:], nbytes)
        fd = self._libc.open_by_handle_at(mount_fd, ctypes.byref(handle), os.O_PATH | os.O_CLOEXEC)
        if fd < 0:
            return None
        try:
            path = os.readlink(f"/proc/self/fd/{fd}".encode())
        finally:
            os.close(fd)
        return None if path.endswith(b" (deleted)") else path

    # -- stopping ------------------------------------------------------------------------------
    def stop(self) -> TraceLog:
        assert self._log is not None, "stop() before start()"
        if self._hold is not None:
            self._hold.set()
        if self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join()
        log = self._log
        try:
            self._decode_all()
        finally:
            self._close()
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
