"""Run one command and print (as JSON) its wall time and the peak RSS of its whole process tree.

    python benchmarks/measure_tree.py CMD [ARG ...]

``wall`` is from just before the fork of CMD to its exit (this wrapper's own start-up is not in it).
Memory, in KiB as the kernel reports ``ru_maxrss`` (a maximum over single processes, never a sum):

- ``main_maxrss``: ``wait4`` on CMD. Linux reports the maximum over CMD *and the descendants it reaped*
  (a forked worker that its parent waits for is counted);
- ``tree_maxrss``: the maximum over every process of the tree. This wrapper makes itself a child
  subreaper (``PR_SET_CHILD_SUBREAPER``), so a descendant that outlives its parent is reparented here and
  reaped here rather than by init; ``getrusage(RUSAGE_CHILDREN)`` then covers all of them.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def make_subreaper() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def reap_orphans(deadline: float) -> int:
    """Wait for reparented descendants (until none is left or ``deadline``); return their peak RSS."""
    peak = 0
    while time.monotonic() < deadline:
        try:
            pid, _status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.01)
            continue
        peak = max(peak, usage.ru_maxrss)
    return peak


def main() -> int:
    import resource

    cmd = sys.argv[1:]
    subreaper = make_subreaper()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    orphans = reap_orphans(time.monotonic() + 10) if subreaper else 0
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        json.dumps(
            {
                "returncode": proc.returncode,
                "wall": wall,
                "main_maxrss": usage.ru_maxrss,
                "tree_maxrss": max(usage.ru_maxrss, orphans, children),
                "subreaper": subreaper,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
