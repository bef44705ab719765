"""The C library of this process, for the few Linux calls the standard library lacks (prctl, inotify)."""

from __future__ import annotations

import functools
import sys
from typing import Any


@functools.cache
def libc() -> Any:
    """``ctypes.CDLL`` of the running process (which has libc loaded), or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        # dlopen(NULL): the symbols already loaded into this process; no library search, no subprocess.
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
