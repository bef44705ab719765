"""Build and remove the benchmark trees quickly (plain os calls, one forked writer per core)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

PER_DIR = 1000


def _write_dirs(root: str, first_dir: int, last_dir: int, files: int, size: int, block: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for d in range(first_dir, last_dir):
        sub = os.path.join(root, f"d{d:05d}")
        os.mkdir(sub)
        for i in range(d * PER_DIR, min(files, (d + 1) * PER_DIR)):
            fd = os.open(os.path.join(sub, f"f{i:07d}"), flags, 0o644)
            try:
                # Distinct contents: the file number, then a shared random block.
                os.write(fd, (i.to_bytes(8, "little") + block)[:size])
            finally:
                os.close(fd)


def make_tree(root: Path, files: int, size: int, jobs: int = 1) -> None:
    """``files`` files of ``size`` bytes (distinct contents) in directories of 1000, written by ``jobs``
    forked processes (each writes whole directories)."""
    root.mkdir(parents=True)
    block = os.urandom(max(size, 1))
    dirs = -(-files // PER_DIR)
    jobs = max(1, min(jobs, dirs))
    bounds = [dirs * k // jobs for k in range(jobs + 1)]
    if jobs == 1:
        _write_dirs(str(root), 0, dirs, files, size, block)
        return
    pids = []
    for k in range(jobs):
        pid = os.fork()
        if pid == 0:  # child: write its share, never return into the caller's stack
            code = 0
            try:
                _write_dirs(str(root), bounds[k], bounds[k + 1], files, size, block)
            except BaseException:
                code = 1
            os._exit(code)
        pids.append(pid)
    failed = [pid for pid in pids if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0]
    if failed:
        raise SystemExit(f"tree generation failed in {len(failed)} writer process(es)")


def make_large(root: Path, files: int, size: int) -> None:
    root.mkdir(parents=True)
    chunk = os.urandom(1 << 20)
    for i in range(files):
        with open(root / f"big{i}", "wb") as out:
            left = size
            out.write(i.to_bytes(8, "little"))
            left -= 8
            while left > 0:
                out.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)


def remove(path: Path, jobs: int = 1) -> None:
    """Remove a tree. With ``jobs`` > 1 and ``rm``/``xargs`` at hand, the entries two levels down (the
    directories of 1000 files) are removed by ``jobs`` parallel ``rm -rf``: unlinking 1M files one at a time
    takes minutes here. ``shutil.rmtree`` removes whatever is left."""
    if not path.exists():
        return
    if jobs > 1 and shutil.which("rm") and shutil.which("xargs") and shutil.which("find"):
        subprocess.run(
            [
                "bash",
                "-c",
                f'find "$1" -mindepth 2 -maxdepth 2 -print0 | xargs -0 -r -n 16 -P{jobs} rm -rf --',
                "-",
                str(path),
            ],
            check=False,
        )
    shutil.rmtree(path, ignore_errors=True)
