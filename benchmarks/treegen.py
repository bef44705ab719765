"""Build and remove the benchmark trees quickly (plain os calls, one forked writer per core)."""

from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from floor import balanced_runs, in_processes

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


# The nested trees (`nested100k`, `nested1m`): what a source tree or a data directory looks like, not 100
# directories of 1000. Every directory holds 10-50 entries (a seeded random mix of files and subdirectories),
# leaves lie 4-5 levels down, and file sizes are mixed. Share of the files, sizes log-uniform in each band:
SIZE_BANDS = (
    (0.8949, 64, 8 << 10),  # mostly small
    (0.1000, 8 << 10, 128 << 10),  # some KiB
    (0.0050, 128 << 10, 2 << 20),  # some MiB
    (0.0001, 8 << 20, 32 << 20),  # a few large
)
EMPTY_FILES = 0.02  # and a few empty files
ENTRIES = (10, 50)
LEAF_FILES = 30  # the mean a leaf aims at; the subdirectory count is chosen to reach it in DEPTH levels
DEPTH = 5
SUFFIXES = (".py", ".txt", ".json", ".c", ".dat", ".md", "")
BLOCK = 1 << 20


@dataclass(frozen=True)
class Directory:
    path: str  # relative to the tree's root, "" for the root itself
    files: tuple[tuple[str, int], ...]  # (name, size)


def _size(rng: random.Random) -> int:
    if rng.random() < EMPTY_FILES:
        return 0
    pick = rng.random()
    for share, low, high in SIZE_BANDS:
        if pick < share:
            return int(math.exp(rng.uniform(math.log(low), math.log(high))))
        pick -= share
    return SIZE_BANDS[0][1]


def plan_nested(files: int, seed: int = 0) -> list[Directory]:
    """The directories of a nested tree of ``files`` files, top-down, decided by ``seed`` alone."""
    rng = random.Random(seed)
    plan: list[Directory] = []
    stack = [("", files, 0)]
    while stack:
        path, budget, depth = stack.pop()
        entries = rng.randint(*ENTRIES)
        if budget <= ENTRIES[1]:  # a leaf: its files only
            subdirs, own = 0, budget
        else:
            levels = max(1, DEPTH - depth)
            subdirs = math.ceil((budget / LEAF_FILES) ** (1 / levels))
            subdirs = max(2, min(subdirs, entries - 2, budget // ENTRIES[0]))
            own = min(entries - subdirs, budget - subdirs * ENTRIES[0])
        names = [f"f{i:03d}{rng.choice(SUFFIXES)}" for i in range(own)]
        plan.append(Directory(path, tuple((name, _size(rng)) for name in names)))
        if subdirs:
            # Split what is left between the subdirectories, each within half to one and a half times
            # the mean, so leaves land near LEAF_FILES files.
            weights = [rng.uniform(0.5, 1.5) for _ in range(subdirs)]
            left, total = budget - own, sum(weights)
            shares = [int(left * w / total) for w in weights]
            shares[0] += left - sum(shares)
            children = [(f"{path}/d{k:02d}".lstrip("/"), share, depth + 1) for k, share in enumerate(shares)]
            stack.extend(reversed([child for child in children if child[1] > 0]))
    return plan


def _write_plan(root: str, plan: list[Directory], first: int, block: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    number = first
    for directory in plan:
        base = os.path.join(root, directory.path)
        for name, size in directory.files:
            fd = os.open(os.path.join(base, name), flags, 0o644)
            try:
                # Distinct contents: the file number, then the seeded block, repeated for big files.
                head = number.to_bytes(8, "little")
                os.write(fd, (head + block)[: min(size, BLOCK)])
                left = size - BLOCK
                while left > 0:
                    left -= os.write(fd, block[: min(left, BLOCK)])
            finally:
                os.close(fd)
            number += 1


def make_nested(root: Path, files: int, seed: int = 0, jobs: int = 1) -> list[Directory]:
    """Write the nested tree :func:`plan_nested` decides (contents from ``seed`` too): directories first,
    then the files by ``jobs`` forked writers, each a run of directories of about the same bytes."""
    plan = plan_nested(files, seed)
    block = random.Random(seed).randbytes(BLOCK)
    root.mkdir(parents=True)
    for directory in plan[1:]:
        os.mkdir(os.path.join(root, directory.path))
    firsts, weights, count = [], [], 0
    for directory in plan:
        firsts.append(count)
        count += len(directory.files)
        weights.append(sum(size for _name, size in directory.files) + 4096 * len(directory.files))
    runs = balanced_runs(weights, max(1, jobs))
    in_processes([partial(_write_plan, str(root), plan[a:b], firsts[a], block) for a, b in runs])
    return plan


def copy_stdlib(target: Path, files: int | None = None) -> Path:
    """Copy the running interpreter's standard library directory to ``target`` as it is (``__pycache__``,
    ``site-packages`` and all; symlinks kept as links). With ``files``, only the first ``files`` files in
    the walk's (sorted) order and the directories on their way: the smoke size."""
    source = Path(sysconfig.get_paths()["stdlib"])
    if files is None:
        shutil.copytree(source, target, symlinks=True)
        return source
    left = files

    def keep_only(directory: str, names: list[str]) -> set[str]:
        nonlocal left
        ignored = set()
        for name in sorted(names):
            path = os.path.join(directory, name)
            if left <= 0:
                ignored.add(name)
            elif os.path.islink(path) or not os.path.isdir(path):
                left -= 1
        return ignored

    shutil.copytree(source, target, symlinks=True, ignore=keep_only)
    return source
