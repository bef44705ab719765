"""Excludes: the paths a run leaves out of its snapshots, outputs and restores, gitignore-style.

The user names them with ``--exclude PATTERN`` (repeatable), ``exclude = [...]`` in the config file, and
optionally the lines of the workspace root's ``.gitignore`` (``--exclude-from-gitignore``). Patterns follow
gitignore's rules and are read relative to the **workspace root**, as if they were lines of a ``.gitignore``
there: a pattern without a slash (other than a trailing one) matches at any depth (``__pycache__/``,
``*.pyc``), a leading or inner slash anchors it to the workspace root (``/build``, ``src/gen/``), a trailing
slash matches directories only, ``!`` re-includes what an earlier pattern excluded, and the last matching
pattern wins. An excluded directory is never descended, so nothing below it can be re-included (git's rule
too). Matching uses the ``pathspec`` library, imported only when there are patterns.

:class:`Excludes` is the one matcher: the snapshot engine asks it about every directory entry before it is
even ``lstat``-ed (:mod:`catalytic.snapshot.dirscan`), with the exact paths an overlay run leaves out of a
domain (the runs root and the declared outputs inside it) besides the patterns.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalytic import paths

#: The file ``--exclude-from-gitignore`` reads, at the workspace root (nested ones are not read).
GITIGNORE = ".gitignore"


@dataclass(frozen=True)
class Excludes:
    """What a snapshot of one tree leaves out.

    ``patterns``: gitignore lines, relative to the workspace root. ``base``: where the tree lies, relative to
    the workspace root (``.`` for the root itself). ``exact``: paths relative to the tree, left out with
    everything below them whatever their type.
    """

    patterns: tuple[str, ...] = ()
    base: str = paths.ROOT
    exact: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.patterns or self.exact)

    def within(self, base: str, exact: Iterable[str] = ()) -> Excludes:
        """The same patterns for the tree at ``base`` (workspace-relative), leaving out ``exact`` too."""
        return Excludes(self.patterns, base, frozenset(exact))

    def leaves_out(self, rel: str, is_dir: bool) -> bool:
        """Whether the entry at ``rel`` (relative to the tree, never ``.``) is left out; its parents are
        taken as not left out (an excluded directory is never descended, so nothing below it is asked)."""
        if rel in self.exact:
            return True
        if not self.patterns:
            return False
        path = rel if self.base == paths.ROOT else self.base + "/" + rel
        return bool(_spec(self.patterns).match_file(path + "/" if is_dir else path))

    def covers(self, rel: str, is_dir: bool) -> bool:
        """Whether ``rel`` (relative to the tree) or one of its parents is left out."""
        if rel == paths.ROOT:
            return False
        parts = paths.parts(rel)
        return any(
            self.leaves_out("/".join(parts[: i + 1]), is_dir or i < len(parts) - 1) for i in range(len(parts))
        )

    def listing(self, rel: str, entries: list[os.DirEntry[str]]) -> list[os.DirEntry[str]]:
        """The directory ``rel``'s ``entries`` without those left out (their type comes from the listing:
        no ``lstat`` where the file system gives it)."""
        prefix = rel + "/" if rel else ""
        kept: list[os.DirEntry[str]] = []
        for dirent in entries:
            try:
                is_dir = dirent.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if not self.leaves_out(prefix + dirent.name, is_dir):
                kept.append(dirent)
        return kept

    @functools.cached_property
    def identity(self) -> bytes:
        """A digest of what is left out: part of every stored answer's fingerprint, so a stat cache written
        under other excludes is never taken for this one's."""
        text = "\0".join([self.base, *self.patterns, "\0", *sorted(self.exact)])
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


NONE = Excludes()


@functools.lru_cache(maxsize=8)
def _spec(patterns: tuple[str, ...]) -> Any:
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(patterns)


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be used as an exclude, or None."""
    if "\0" in pattern or "\n" in pattern or "\r" in pattern:
        return "contains a NUL or line break"
    if not pattern.strip() or pattern.startswith("#"):
        return "is empty or a comment: it would exclude nothing"
    try:
        _spec((pattern,))
    except ValueError as exc:  # pathspec's GitWildMatchPatternError
        return f"is not a valid gitignore pattern ({exc})"
    return None


def gitignore_patterns(root: Path) -> tuple[str, ...]:
    """The patterns of the workspace root's ``.gitignore`` (none when there is none), in order, without its
    blank lines and comments; raises OSError or UnicodeDecodeError when it cannot be read."""
    try:
        text = (root / GITIGNORE).read_bytes().decode("utf-8")
    except FileNotFoundError:
        return ()
    lines = (line.rstrip("\r") for line in text.split("\n"))
    return tuple(line for line in lines if line.strip() and not line.startswith("#"))


def excluded_parent(patterns: Sequence[str], rel: str) -> str | None:
    """The first of ``rel`` (workspace-relative) and its parents that ``patterns`` exclude, or None."""
    if not patterns or rel == paths.ROOT:
        return None
    parts = paths.parts(rel)
    matcher = Excludes(tuple(patterns))
    for i in range(len(parts)):
        sub = "/".join(parts[: i + 1])
        if matcher.leaves_out(sub, True):
            return sub
    return None
