"""The few facts about the running system a run records, without importing the stdlib's ``platform``
and ``datetime`` (together ~3 ms of every run's start-up)."""

from __future__ import annotations

import os
import sys
import time


def system() -> str:
    """What ``platform.system()`` returns: ``Linux``, ``Darwin``, ``Windows``, ..."""
    if sys.platform == "win32":  # pragma: no cover - catalytic runs on POSIX
        return "Windows"
    return os.uname().sysname


def python_version() -> str:
    """What ``platform.python_version()`` returns, e.g. ``3.11.7`` (or ``3.13.0rc1``)."""
    return sys.version.split()[0]


def utc_timestamp(ns: int | None = None) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC: ``datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")``."""
    seconds, rest = divmod(time.time_ns() if ns is None else ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1000:06d}Z"


def utc_compact(ns: int | None = None) -> str:
    """``YYYYMMDDTHHMMSSffffff`` in UTC (the time part of a generated run id)."""
    seconds, rest = divmod(time.time_ns() if ns is None else ns, 1_000_000_000)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)) + f"{rest // 1000:06d}"
