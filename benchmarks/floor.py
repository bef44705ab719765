"""Floors for the benchmark: the least a pure-Python tool must do for a case, measured in the same run.

    python floor.py ledger RUNS        # run `true`, then write a seven-document ledger under RUNS, durably
    python floor.py pass DIR JOBS      # one pass over DIR's files in JOBS forked processes

``ledger`` is the floor of the empty-domain case. Every run writes a ledger, and these are the only steps
it keeps: start the interpreter, import json (canonical JSON) and hashlib (the ledger's digests), run the
command, then write each document to a temporary file, fsync it, rename it into place and fsync the
directory. No declaration is read, no domain is walked, nothing is compared or verified.

``pass`` is one pass over many small files in tuned pure Python (DESIGN.md's "tuned pure Python, 2
processes, one pass"): forked workers take whole directories; for each file they ``lstat``, open, read,
``fstat``, close and sha256 it; nothing is written. A whole run reads every file at least once like this,
and lists every entry a second time after the command.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

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


def _hash_directories(root: str, directories: list[str]) -> int:
    sha256 = hashlib.sha256
    hashed = 0
    for rel in directories:
        dir_fd = os.open(os.path.join(root, rel), os.O_RDONLY | os.O_DIRECTORY)
        try:
            with os.scandir(dir_fd) as entries:
                for entry in entries:
                    st = entry.stat(follow_symlinks=False)
                    fd = os.open(entry.name, _FILE_FLAGS, dir_fd=dir_fd)
                    try:
                        data = os.read(fd, st.st_size + 1)
                        os.fstat(fd)
                    finally:
                        os.close(fd)
                    sha256(data).hexdigest()
                    hashed += 1
        finally:
            os.close(dir_fd)
    return hashed


def one_pass(root: str, jobs: int) -> None:
    """The tree generator's layout: directories of files under ``root``; each worker takes every jobs-th."""
    directories = sorted(os.listdir(root))
    pids = []
    for k in range(jobs):
        pid = os.fork()
        if pid == 0:  # the child: hash its share and leave without unwinding the parent's stack
            code = 1
            try:
                _hash_directories(root, directories[k::jobs])
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    failed = [pid for pid in pids if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0]
    if failed:
        raise SystemExit(f"{len(failed)} worker(s) failed")


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
