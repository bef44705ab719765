"""A tree with every kind of entry the snapshot engines must describe, shared by their tests."""

from __future__ import annotations

import os
from pathlib import Path


def build_tree(root: Path, files: int = 40, *, extras: bool = True) -> Path:
    """Files (some with equal contents), nested and empty directories, names that sort around ``/`` and
    before the domain's own entry ``.`` (``+page``, ``-dir/``), an executable, symlinks, a FIFO and an
    undecodable name; ``extras`` adds a dangling symlink and a 3 MiB file.
    """
    (root / "a" / "b").mkdir(parents=True)
    (root / "empty").mkdir()
    for i in range(files):
        (root / "a" / f"f{i:02d}").write_bytes(b"same content\n" if i % 2 else os.urandom(i * 100))
    (root / "a" / "b" / "deep").write_text("deep\n")
    (root / "a.txt").write_text("sorted between a and a/\n")
    (root / "a-1").write_text("x")
    (root / "+page").write_text("sorted before the domain itself\n")
    (root / "-dir").mkdir()
    (root / "-dir" / "in").write_text("and so is everything below it\n")
    (root / "exec.sh").write_text("#!/bin/sh\n")
    (root / "exec.sh").chmod(0o755)
    os.symlink("a/f01", root / "link")
    os.mkfifo(root / "pipe")
    (root / b"bad\xffname".decode("utf-8", "surrogateescape")).write_text("raw bytes name")
    if extras:
        os.symlink("nowhere", root / "dangling")
        (root / "big").write_bytes(os.urandom(3 << 20))
    return root


def build_deep(root: Path, depth: int, name: str = "a") -> Path:
    """A chain of ``depth`` nested directories ``name/name/...`` under ``root`` with a file at the bottom,
    made through directory descriptors (so to any depth and past PATH_MAX)."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        os.close(os.open("bottom", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    return root
