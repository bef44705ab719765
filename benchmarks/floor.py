"""Floors for the benchmark: the least a pure-Python tool must do for a case, measured in the same run.

    python floor.py ledger RUNS        # run `true`, then write a seven-document ledger under RUNS, durably
    python floor.py pass DIR JOBS      # one pass over DIR's files in JOBS forked processes

``ledger`` is the floor of the empty-domain case. Every run writes a ledger, and these are the only steps
it keeps: start the interpreter, import json (canonical JSON) and hashlib (the ledger's digests), run the
command, then write each document to a temporary file, fsync it, rename it into place and fsync the
directory. No declaration is read, no domain is walked, nothing is compared or verified.

``pass`` is one pass over many small files in tuned pure Python (DESIGN.md's "tuned pure Python, 2
processes, one pass"): the tree is listed once (``scandir``, one ``lstat`` per file, symlinks not
followed), then forked workers take runs of files of about the same cost; for each file they open, read
(in 1 MiB blocks past 1 MiB), ``fstat``, close and sha256 it; nothing is written. A whole run reads every
file at least once like this, and lists every entry a second time after the command. It works on any tree
(the flat ones of ``treegen.make_tree``, the nested ones, a copy of the standard library).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import sys
from collections.abc import Callable

DOCUMENTS = (
    "RUN_INFO",
    "PRE_MANIFEST",
    "POST_MANIFEST",
    "RESTORE_DIFF",
    "OUTPUTS",
    "STATUS",
    "LEDGER_DIGEST",
)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20  # files this big or bigger are read in blocks of this size
_PER_FILE = 4096  # what a file costs besides its bytes (open, fstat, close), in bytes of hashing


def write_durably(directory: str, name: str, data: bytes) -> None:
    temporary = os.path.join(directory, f".{name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, os.path.join(directory, name))


def ledger(runs: str) -> None:
    pid = os.posix_spawnp("true", ["true"], os.environ)
    _, status = os.waitpid(pid, 0)
    run = os.path.join(runs, f"floor-{os.getpid()}-{os.urandom(4).hex()}")
    os.makedirs(run)
    digests: dict[str, str] = {}
    for name in DOCUMENTS:
        document = {"document": name, "exit_code": os.waitstatus_to_exitcode(status), "digests": digests}
        text = json.dumps(document, sort_keys=True, ensure_ascii=False)
        data = (text + "\n").encode()
        write_durably(run, f"{name}.json", data)
        digests[name] = hashlib.sha256(data).hexdigest()
    fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _list(root: str) -> list[tuple[str, int]]:
    """Every regular file under ``root`` (not following symlinks) with its ``lstat`` size, in walk order:
    ``scandir`` gives the types, one ``lstat`` per file gives the size."""
    files: list[tuple[str, int]] = []
    stack = [root]
    while stack:
        directory = stack.pop()
        subdirs = []
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    files.append((entry.path, entry.stat(follow_symlinks=False).st_size))
        stack.extend(reversed(subdirs))
    return files


def _hash_files(files: list[tuple[str, int]]) -> int:
    sha256 = hashlib.sha256
    for path, size in files:
        fd = os.open(path, _FILE_FLAGS)
        try:
            if size < _CHUNK:
                data = os.read(fd, size + 1)
                os.fstat(fd)
                sha256(data).hexdigest()
            else:
                digest = sha256()
                while data := os.read(fd, _CHUNK):
                    digest.update(data)
                os.fstat(fd)
                digest.hexdigest()
        finally:
            os.close(fd)
    return len(files)


def balanced_runs(weights: list[int], parts: int) -> list[tuple[int, int]]:
    """Cut ``range(len(weights))`` into at most ``parts`` runs ``(first, last)`` of about equal weight."""
    total, cuts, running = sum(weights), [0], 0
    for index, weight in enumerate(weights):
        running += weight
        if len(cuts) < parts and running >= total * len(cuts) / parts and index + 1 < len(weights):
            cuts.append(index + 1)
    cuts.append(len(weights))
    return list(itertools.pairwise(cuts))


def one_pass(root: str, jobs: int) -> None:
    """List the tree under ``root`` once, then hash its files in ``jobs`` forked workers, each a run of
    files in walk order of about the same cost (its bytes plus a fixed cost per file)."""
    files = _list(root)
    runs = balanced_runs([size + _PER_FILE for _path, size in files], jobs)
    in_processes([functools.partial(_hash_files, files[first:last]) for first, last in runs])


def in_processes(tasks: list[Callable[[], object]]) -> None:
    """Run each task in a forked process of its own (one task: in this one) and wait for them all."""
    if len(tasks) == 1:
        tasks[0]()
        return
    pids = []
    for task in tasks:
        pid = os.fork()
        if pid == 0:  # the child: do its share and leave without unwinding the parent's stack
            code = 1
            try:
                task()
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    failed = [pid for pid in pids if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(pids)} forked processes failed")


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "ledger":
        ledger(argv[1])
        return 0
    if len(argv) == 3 and argv[0] == "pass":
        one_pass(argv[1], int(argv[2]))
        return 0
    print(__doc__.strip().splitlines()[0], file=sys.stderr)
    print("usage: floor.py ledger RUNS | floor.py pass DIR JOBS", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
