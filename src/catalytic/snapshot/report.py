"""What a snapshot reports: how many processes, how the cache was used, how many tasks it took."""

from __future__ import annotations

import os
from dataclasses import dataclass


def default_jobs() -> int:
    """The number of hashing processes to use by default: every core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class ScanReport:
    """How a scan used the cache and the processes."""

    cache: str = "disabled"  # disabled | used | rebuilt
    cache_hits: int = 0
    hashed_files: int = 0
    pool_started: bool = False


@dataclass
class StreamReport(ScanReport):
    """How the snapshot used the store (``cache``) and the processes, and how many tasks it took."""

    tasks: int = 0
