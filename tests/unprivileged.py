"""Run a function as an unprivileged user (uid/gid 65534 when we are root), in a forked child.

Root reads every file whatever its mode, so tests of unreadable entries drop privileges first. The
child's result comes back as JSON through a pipe.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any


def run_unprivileged(func: Callable[[], Any]) -> Any:
    """Call ``func()`` in a forked child (as uid/gid 65534 when we are root); return its JSON result."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(read_fd)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
            os.write(write_fd, json.dumps(func()).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(data)
