"""Paths, decided once: relative to the workspace root, POSIX separators, raw bytes preserved.

File names on POSIX are bytes. Inside catalytic a name is a ``str`` decoded from UTF-8 with
``surrogateescape`` (PEP 383): valid UTF-8 is kept as it is, and each byte that is not part of valid
UTF-8 becomes one lone surrogate U+DC80..U+DCFF. In JSON such a character is written as the escape
``\\udcXX`` (see :mod:`catalytic.ledger.canonical`), so every name survives the round trip to JSON and
back without loss. Ordering is always by the raw bytes (:func:`sort_key`).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import AnyStr

from catalytic.errors import Problem

ROOT = "."


def sort_key(rel: str) -> bytes:
    """The byte-order key of a path: the order of manifests, diffs and walks."""
    return rel.encode("utf-8", "surrogateescape")


def to_bytes(rel: str) -> bytes:
    """The raw file-system bytes of a name produced by this module."""
    return rel.encode("utf-8", "surrogateescape")


def parts(rel: str) -> tuple[str, ...]:
    """Path segments of a normalised relative path (``.`` has none)."""
    return () if rel == ROOT else tuple(rel.split("/"))


def is_within(child: str, parent: str) -> bool:
    """True when ``child`` is ``parent`` or below it, compared by whole segments."""
    c, p = parts(child), parts(parent)
    return c[: len(p)] == p


def overlaps(a: str, b: str) -> bool:
    """True when one path contains the other (or they are the same)."""
    return is_within(a, b) or is_within(b, a)


def join(base: str, rel: str) -> str:
    """Join two normalised relative paths."""
    if base == ROOT:
        return rel
    if rel == ROOT:
        return base
    return f"{base}/{rel}"


def lexical(root: Path, user_path: str, *, what: str) -> tuple[str | None, Problem | None]:
    """Normalise ``user_path`` against ``root`` without touching the disk.

    Absolute paths must lie inside the root; ``..`` is refused anywhere (TRAVERSAL); empty or
    NUL-containing paths are refused (BAD_PATH).
    """
    if not user_path or "\0" in user_path:
        return None, Problem("BAD_PATH", f"{what} {user_path!r} is empty or contains a NUL byte")
    pure = PurePosixPath(user_path.replace(os.sep, "/") if os.sep != "/" else user_path)
    if ".." in pure.parts:
        return None, Problem(
            "TRAVERSAL", f"{what} {user_path!r} goes through '..'; paths must stay inside the root"
        )
    if pure.is_absolute():
        for base in (root, root.resolve()):
            try:
                pure = pure.relative_to(PurePosixPath(base.as_posix()))
                break
            except ValueError:
                continue
        else:
            return None, Problem(
                "TRAVERSAL", f"{what} {user_path!r} is outside the workspace root {str(root)!r}"
            )
    rel = pure.as_posix()
    return (ROOT if rel in ("", ".") else rel), None


def _real(path: Path) -> Path:
    """``path`` with every existing symlink followed; a symlink loop raises on every Python."""
    try:
        return path.resolve(strict=True)
    except OSError as exc:  # missing (or unreadable) parts: resolve what exists
        if exc.errno == errno.ELOOP:
            raise
        return path.resolve(strict=False)


def resolve(root: Path, user_path: str, *, what: str) -> tuple[str | None, Problem | None]:
    """Normalise ``user_path`` and follow any symlinks in it that exist.

    Returns the canonical relative path. A symlink whose target lies outside the root is ESCAPE; a
    symlink loop is BAD_PATH.
    """
    rel, problem = lexical(root, user_path, what=what)
    if rel is None:
        return None, problem
    real_root = root.resolve()
    try:
        real = _real(real_root / rel) if rel != ROOT else real_root
    except (RuntimeError, OSError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        return None, Problem("BAD_PATH", f"{what} {user_path!r} cannot be resolved: {exc}")
    try:
        inside = real.relative_to(real_root)
    except ValueError:
        return None, Problem(
            "ESCAPE",
            f"{what} {user_path!r} leads through a symlink to {str(real)!r}, outside the root",
        )
    canonical = inside.as_posix()
    return (ROOT if canonical in ("", ".") else canonical), None


def walk_dirs(top: AnyStr) -> Iterator[tuple[AnyStr, list[AnyStr], list[AnyStr]]]:
    """``os.walk(top)`` without recursion (Python 3.11's recurses, and stops at the recursion limit): each
    directory as (path, subdirectory names, other names), parents before children; symlinks are never
    followed, a directory that cannot be listed is skipped, and the caller may prune ``dirs`` in place."""
    stack = [top]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = list(it)
        except OSError:
            continue
        dirs: list[AnyStr] = []
        others: list[AnyStr] = []
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            (dirs if is_dir else others).append(entry.name)
        yield current, dirs, others
        stack.extend(os.path.join(current, name) for name in reversed(dirs))
