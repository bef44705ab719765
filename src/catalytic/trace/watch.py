"""The watchdog backend: inotify on Linux (FSEvents on macOS, ReadDirectoryChangesW on Windows).

Unprivileged, but blind in three ways that the log always admits (``complete: false``):
a directory that appears during the run is watched only once its creation is seen, so what happens
inside it before that is missed; a watch that cannot be added (the ``max_user_watches`` limit) leaves
a subtree unwatched; and a kernel queue overflow drops events. watchdog reports the last two only by
logging, so its log records are captured while the tracer runs. No pid or process name is known.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
import time
import warnings
from typing import Any

from catalytic import paths
from catalytic.errors import TraceUnavailable
from catalytic.trace.log import Op, TraceEvent, TraceLog, TraceScope, now_iso

#: How long the event stream must be quiet before stop() trusts that it has drained. watchdog holds
#: an unpaired "moved from" for 0.5 s while it looks for the matching "moved to".
QUIET_AFTER_EVENTS = 0.6
QUIET_NO_EVENTS = 0.05
DRAIN_LIMIT = 30.0


class _Capture(logging.Handler):
    def __init__(self, tracer: WatchdogTracer) -> None:
        super().__init__(logging.WARNING)
        self.tracer = tracer

    def emit(self, record: logging.LogRecord) -> None:
        self.tracer.warn(record.getMessage())


class WatchdogTracer:
    """Recursive watchdog observers on each scope root; see the module docstring."""

    name = "watchdog"

    def __init__(self) -> None:
        self._log: TraceLog | None = None
        self._scope: TraceScope | None = None
        self._observer: Any = None
        self._lock = threading.Lock()
        self._last_event = 0.0
        self._seen_any = False
        self._new_dirs: list[str] = []
        self._capture = _Capture(self)
        self._logger = logging.getLogger("watchdog")
        self._filter: Any = None

    def warn(self, message: str) -> None:
        with self._lock:
            if self._log is not None:
                self._log.incomplete(f"watchdog: {message}")

    def start(self, scope: TraceScope) -> None:
        from watchdog import events as ev
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        tracer = self
        # Only what the log records: no open/close events, no "directory modified" echoes.
        wanted: list[type[FileSystemEvent]] = [
            ev.FileCreatedEvent,
            ev.DirCreatedEvent,
            ev.FileDeletedEvent,
            ev.DirDeletedEvent,
            ev.FileModifiedEvent,
            ev.FileMovedEvent,
            ev.DirMovedEvent,
        ]
        wanted += [getattr(ev, n) for n in ("FileAttribEvent", "DirAttribEvent") if hasattr(ev, n)]

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                tracer._on_event(event)

        self._scope = scope
        self._log = TraceLog(self.name, scope.name, list(scope.paths), now_iso())
        self._logger.addHandler(self._capture)
        # watchdog warns (RuntimeWarning, from its own thread) when a new directory is registered twice
        # in a race it resolves itself; nothing is lost, so keep it off the user's terminal.
        warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)
        self._filter = warnings.filters[0]
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGINT, signal.SIGTERM})
        try:
            observer = Observer()
            for root in scope.watch_roots():
                observer.schedule(Handler(), os.fsdecode(root), recursive=True, event_filter=wanted)
            observer.start()
        except OSError as exc:
            self._restore()
            # watchdog >= 6 raises ENOSPC where older versions skipped the directories silently.
            hint = " (fs.inotify.max_user_watches)" if exc.errno == errno.ENOSPC else ""
            raise TraceUnavailable(f"cannot watch: {exc.strerror or exc}{hint}") from None
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self._observer = observer
        self._check_watch_count(scope)

    def _restore(self) -> None:
        self._logger.removeHandler(self._capture)
        if self._filter in warnings.filters:
            warnings.filters.remove(self._filter)  # type: ignore[attr-defined]
            getattr(warnings, "_filters_mutated", lambda: None)()

    def _check_watch_count(self, scope: TraceScope) -> None:
        """watchdog skips subdirectories it cannot watch (ENOSPC) silently; count the watches."""
        fd = getattr(getattr(self._observer, "_inotify_fd", None), "_inotify_fd", None)
        if not isinstance(fd, int):
            return
        try:
            with open(f"/proc/self/fdinfo/{fd}") as fh:
                watches = sum(1 for line in fh if line.startswith("inotify wd:"))
        except OSError:
            return
        dirs = sum(1 for root in scope.watch_roots() for _entry in paths.walk_dirs(os.fsdecode(root)))
        if watches < dirs:
            self.warn(
                f"only {watches} of {dirs} directories are watched (inotify watch limit, "
                "fs.inotify.max_user_watches); writes in the others are missing"
            )

    def _name(self, raw: bytes | str) -> tuple[str, bool]:
        assert self._scope is not None
        path = os.fsencode(raw) if raw else b""
        rel = self._scope.relative(path) if path else None
        return self._scope.name_of(path), self._scope.contains(rel)

    def _on_event(self, event: Any) -> None:
        kind: str = event.event_type
        is_dir: bool = event.is_directory
        stamp = now_iso()
        op: Op | None = {
            "created": "mkdir" if is_dir else "create",
            "deleted": "rmdir" if is_dir else "delete",
            "modified": None if is_dir else "modify",
            "attrib": "chmod",
            "moved": "move",
        }.get(kind)
        if op is None:
            return
        src, src_in = self._name(event.src_path)
        dest: str | None = None
        dest_in = False
        if op == "move":
            dest, dest_in = self._name(event.dest_path)
        if not (src_in or dest_in):
            return
        with self._lock:
            self._last_event = time.monotonic()
            self._seen_any = True
            assert self._log is not None
            self._log.events.append(TraceEvent(stamp, src, op, dest))
            if is_dir and (op == "mkdir" or (op == "move" and dest_in)):
                self._new_dirs.append(dest if op == "move" and dest else src)

    def stop(self) -> TraceLog:
        assert self._log is not None, "stop() before start()"
        deadline = time.monotonic() + DRAIN_LIMIT
        drained = False
        while time.monotonic() < deadline:
            with self._lock:
                quiet = QUIET_AFTER_EVENTS if self._seen_any else QUIET_NO_EVENTS
                idle = time.monotonic() - self._last_event if self._seen_any else None
            pending = not self._observer.event_queue.empty()
            if not pending and (idle is None or idle >= quiet):
                if idle is None:
                    time.sleep(quiet)
                    with self._lock:
                        if self._seen_any:
                            continue
                drained = True
                break
            time.sleep(0.02)
        self._observer.stop()
        self._observer.join()
        self._restore()
        log = self._log
        log.stopped_at = now_iso()
        if not drained:
            log.incomplete(f"watchdog was still delivering events after {DRAIN_LIMIT:.0f} s")
        if self._new_dirs:
            first = ", ".join(self._new_dirs[:3])
            log.incomplete(
                f"{len(self._new_dirs)} directories appeared during the run ({first}"
                f"{', ...' if len(self._new_dirs) > 3 else ''}); inotify watches a new directory only "
                "after seeing it, so writes inside it just before that may be missing"
            )
        return log
