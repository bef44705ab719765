"""Write tracing: which paths a command created, modified, moved or deleted, when, and by which process.

Backends implement :class:`Tracer` and are listed in :data:`BACKENDS`; :func:`open_tracer` picks one
(``auto``: fanotify, then watchdog/inotify, then none) and starts it. Optional modules are imported
inside the factories. A trace is a hint that explains the snapshot diff; it never replaces it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from catalytic.errors import TraceUnavailable
from catalytic.trace.scopes import SCOPES, ScopeName

if TYPE_CHECKING:
    from catalytic.trace.log import TraceEvent, TraceLog, TraceScope

#: Names re-exported from :mod:`catalytic.trace.log`, imported on first use: the names of the backends
#: (:data:`BACKEND_NAMES`) are read by every run's argument parser, the log only by runs that trace.
_FROM_LOG = ("TraceEvent", "TraceLog", "TraceScope")


def __getattr__(name: str) -> Any:
    if name in _FROM_LOG:
        from catalytic.trace import log

        return getattr(log, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "BACKEND_NAMES",
    "SCOPES",
    "NoTracer",
    "ScopeName",
    "TraceEvent",
    "TraceLog",
    "TraceScope",
    "TraceUnavailable",
    "Tracer",
    "open_tracer",
]


class Tracer(Protocol):
    """A running write tracer: started before the child, stopped (and drained) after it exits."""

    name: str

    def start(self, scope: TraceScope) -> None:
        """Begin recording writes under ``scope``; raise :class:`TraceUnavailable` if impossible."""

    def stop(self) -> TraceLog:
        """Stop, read every event still queued, and return the log."""


class NoTracer:
    """The backend of last resort: records nothing and says why."""

    name = "none"

    def __init__(self, reason: str = "tracing backend 'none' was chosen") -> None:
        self.reason = reason
        self._log: TraceLog | None = None

    def start(self, scope: TraceScope) -> None:
        from catalytic.trace.log import TraceLog, now_iso

        self._log = TraceLog(self.name, scope.name, list(scope.paths), now_iso())
        self._log.incomplete(f"untraced: {self.reason}")

    def stop(self) -> TraceLog:
        from catalytic.trace.log import now_iso

        assert self._log is not None, "stop() before start()"
        self._log.stopped_at = now_iso()
        return self._log


def _fanotify() -> Tracer:
    from catalytic.trace.fanotify import FanotifyTracer

    return FanotifyTracer()


def _watchdog() -> Tracer:
    try:
        import watchdog  # noqa: F401
    except ImportError:
        raise TraceUnavailable(
            "the watchdog backend needs the 'watchdog' package: pip install 'catalytic[trace]'"
        ) from None
    from catalytic.trace.watch import WatchdogTracer

    return WatchdogTracer()


def _none() -> Tracer:
    return NoTracer()


#: Backend name -> factory. ``inotify`` is the watchdog backend under its Linux name.
BACKENDS: dict[str, Callable[[], Tracer]] = {
    "fanotify": _fanotify,
    "watchdog": _watchdog,
    "inotify": _watchdog,
    "none": _none,
}
BACKEND_NAMES = ("auto", *BACKENDS)
AUTO_ORDER = ("fanotify", "watchdog")


def open_tracer(backend: str, scope: TraceScope) -> tuple[Tracer, list[str]]:
    """Start the tracer named ``backend`` (or the first that works, for ``auto``).

    Never raises for an unavailable backend: it falls back to :class:`NoTracer`, whose log says why.
    Returns the running tracer and one line per backend that could not be used.
    """
    names = AUTO_ORDER if backend == "auto" else (backend,)
    if backend != "auto" and backend not in BACKENDS:
        raise TraceUnavailable(f"unknown trace backend {backend!r} (known: {', '.join(BACKEND_NAMES)})")
    failures: list[str] = []
    for name in names:
        try:
            tracer = BACKENDS[name]()
            tracer.start(scope)
        except TraceUnavailable as exc:
            failures.append(f"{name}: {exc.message}")
            continue
        except OSError as exc:
            failures.append(f"{name}: {exc.strerror or exc}")
            continue
        return tracer, failures
    fallback = NoTracer("no backend could watch (" + "; ".join(failures) + ")")
    fallback.start(scope)
    return fallback, failures
