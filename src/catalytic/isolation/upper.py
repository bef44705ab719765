"""The upper layer of an overlay run: the exact write set, the merged view, and undeclared writes.

The post-run snapshot of a domain is the pre-run snapshot (the lower layer, unchanged by the run) merged
with the upper layer by overlayfs' own rules: a whiteout (0/0 character device, or a zero-size file with
the ``overlay.whiteout`` xattr) deletes an entry and everything below it, an opaque directory hides the
lower directory's content, any other upper entry replaces the lower one. The mounts rule out redirects
and metacopy, so no other overlay metadata exists.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING

from catalytic import paths
from catalytic.diff import Triple, merge_join
from catalytic.excludes import NONE, Excludes
from catalytic.snapshot import Entry, attrs, snapshot_tree
from catalytic.snapshot.entry import DIR

if TYPE_CHECKING:
    from catalytic.policy import Policy

_FIRST = itemgetter(0)


@dataclass(frozen=True)
class UpperEntry:
    """One entry of the upper layer: what the command wrote."""

    rel: str
    kind: str  # file | dir | symlink | whiteout | other
    opaque: bool = False
    mode: int = 0


def scan_upper(upper: Path, prefix: str) -> dict[str, UpperEntry]:
    """Every entry of the upper layer by workspace-relative path (the root itself excluded), in path order.

    ``prefix`` is the overlay xattr namespace: ``trusted.overlay.`` or (userxattr) ``user.overlay.``.
    """
    found: dict[str, UpperEntry] = {}

    def xattr(p: str, name: str) -> bytes | None:
        try:
            return os.getxattr(p, prefix + name, follow_symlinks=False)
        except OSError:
            return None

    # Directories still to list (a stack, not recursion: any depth), each with its path prefix.
    todo = [(str(upper), "")] if upper.is_dir() else []
    while todo:
        directory, rel_prefix = todo.pop()
        with os.scandir(directory) as it:
            items = sorted(it, key=lambda d: paths.to_bytes(d.name))
        for d in items:
            rel = rel_prefix + d.name
            st = d.stat(follow_symlinks=False)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                found[rel] = UpperEntry(rel, "whiteout")
            elif stat.S_ISDIR(st.st_mode):
                opaque = xattr(d.path, "opaque") == b"y"
                found[rel] = UpperEntry(rel, "dir", opaque, stat.S_IMODE(st.st_mode))
                todo.append((d.path, rel + "/"))
            elif stat.S_ISREG(st.st_mode):
                white = st.st_size == 0 and xattr(d.path, "whiteout") is not None
                found[rel] = UpperEntry(rel, "whiteout" if white else "file")
            elif stat.S_ISLNK(st.st_mode):
                found[rel] = UpperEntry(rel, "symlink")
            else:
                found[rel] = UpperEntry(rel, "other")
    return dict(sorted(found.items(), key=lambda item: paths.sort_key(item[0])))  # parents first


def hidden_from(upper: dict[str, UpperEntry], target: str) -> tuple[bool, bool, bool]:
    """For a workspace path: (absent, lower hidden, touched) from its ancestors' and its own upper entries
    (the workspace root is touched by any upper entry)."""
    if target == paths.ROOT:
        return False, False, bool(upper)
    segs = paths.parts(target)
    touched = False
    hidden = False
    for i in range(1, len(segs) + 1):
        rel = "/".join(segs[:i])
        u = upper.get(rel)
        if u is None:
            continue
        touched = True
        if u.kind == "whiteout":
            return True, True, True
        if u.kind != "dir":
            if i < len(segs):
                return True, True, True
            continue
        if u.opaque:
            hidden = True
    return False, hidden, touched or any(paths.is_within(r, target) for r in upper)


def touches(upper: dict[str, UpperEntry], target: str) -> bool:
    """Whether the upper layer changes anything at or below ``target`` (else it is as the lower layer)."""
    absent, _hidden, touched = hidden_from(upper, target)
    return absent or touched


def merged_entries(
    lower: Iterable[Triple],
    upper_dir: Path,
    upper: dict[str, UpperEntry],
    target: str,
    algorithm: str,
    left_out: Excludes = NONE,
) -> Iterator[tuple[Triple | None, Triple | None, bool]]:
    """``target`` before and after the command, entry by entry in path order: (before, after, from upper).

    ``lower`` is the target's snapshot (the lower layer, in path order); ``before`` is its entry at a path
    (None: added), ``after`` the entry the command left there, lower + upper (None: removed), and the flag
    says whether ``after`` comes from the upper layer. Only the upper layer's entries below ``target`` (the
    write set) are held in memory: the lower layer streams through, so a pre-run manifest read from a spool
    stays there. ``left_out``: what the snapshots of ``target`` leave out (:mod:`catalytic.excludes`: the
    run's exclude patterns, and :func:`catalytic.policy.left_out_within` in a domain); what the
    command wrote there is dropped, and the lower layer's entries there are kept as they are.
    """
    absent, hidden, touched = hidden_from(upper, target)
    if absent:
        yield from ((entry, None, False) for entry in lower)
        return
    if not touched:
        yield from ((entry, entry, False) for entry in lower)
        return
    up_snap = snapshot_tree(upper_dir if target == paths.ROOT else upper_dir / target, algorithm)
    cut: set[str] = set()  # what the lower layer has below these paths is hidden
    whiteouts: set[str] = set()
    written: list[Triple] = []
    for e in up_snap.entries:
        if e.path == paths.ROOT and target == paths.ROOT:
            continue  # the workspace root itself: its attributes are the lower one's
        if left_out and left_out.covers(e.path, e.value == DIR):
            continue
        u = upper.get(paths.join(target, e.path))
        kind = u.kind if u is not None else ("dir" if e.value == DIR else "file")
        if kind != "dir" or (u is not None and u.opaque):
            cut.add(e.path)
        if kind == "whiteout":
            whiteouts.add(e.path)
        else:
            mode = e.mode
            if mode is not None and " x=" in mode:  # overlayfs' own xattrs are not the command's
                top = upper_dir if target == paths.ROOT else upper_dir / target
                where = top if e.path == paths.ROOT else top / e.path
                xattrs = attrs.digest(attrs.read_path(os.fspath(where), attrs.OVERLAY_PREFIXES))
                mode = attrs.value_of(os.lstat(where), xattrs, mode[:4])
            written.append((e.path, e.value, mode))
    for before, after in merge_join(lower, written, _FIRST):
        if after is not None:
            yield before, after, True
            continue
        assert before is not None
        gone = hidden or before[0] in whiteouts or _below(before[0], cut)
        yield before, None if gone else before, False


def _below(path: str, cut: set[str]) -> bool:
    """True when ``path`` lies strictly below one of the ``cut`` paths (``.`` is above everything)."""
    if path == paths.ROOT:
        return False
    if paths.ROOT in cut:
        return True
    parent = path.rpartition("/")[0]
    while parent:
        if parent in cut:
            return True
        parent = parent.rpartition("/")[0]
    return False


def merged_tree(
    lower_entries: Sequence[Entry],
    upper_dir: Path,
    upper: dict[str, UpperEntry],
    target: str,
    algorithm: str,
    left_out: Excludes = NONE,
) -> tuple[list[Entry], bool, dict[str, str]]:
    """The entries of ``target`` as the command left it (lower + upper), in memory (``left_out``: as for
    :func:`merged_entries`).

    Returns the entries (sorted), whether the tree is absent, and for each entry taken from the upper
    layer its source ("upper").
    """
    lower = ((e.path, e.value, e.mode) for e in lower_entries)
    entries: list[Entry] = []
    sources: dict[str, str] = {}
    for _before, after, from_upper in merged_entries(lower, upper_dir, upper, target, algorithm, left_out):
        if after is not None:
            entries.append(Entry(*after))
            if from_upper:
                sources[after[0]] = "upper"
    return entries, not entries, sources


def write_reason(policy: Policy, rel: str) -> str | None:
    """Why a write at ``rel`` is allowed ("output", "domain"), or None when it is undeclared."""
    if any(paths.is_within(rel, o) for o in policy.durable_outputs):
        return "output"
    if any(paths.is_within(rel, f) for f in policy.forbidden_paths):
        return None
    if paths.is_within(rel, policy.runs_root):
        return None
    if any(paths.is_within(rel, d) for d in policy.catalytic_domains):
        return "domain"
    return None


def undeclared_writes(policy: Policy, upper: dict[str, UpperEntry]) -> list[dict[str, str]]:
    """Upper-layer entries outside the domains and declared outputs (CMP-01 invariant 1); what the run's
    exclude patterns match is dropped with the upper layer (never committed), so it is not one."""
    roots = [*policy.catalytic_domains, *policy.durable_outputs]
    excluded = Excludes(policy.excludes)
    found: list[dict[str, str]] = []
    for rel, u in upper.items():
        if write_reason(policy, rel) is not None:
            continue
        if excluded and excluded.covers(rel, u.kind == "dir"):
            continue
        kind = "opaque_dir" if u.opaque else u.kind
        if u.kind == "dir" and not u.opaque:
            if any(paths.is_within(r, rel) for r in roots):
                continue  # a parent of a domain or output, copied up or created for it
            try:
                st = os.lstat(policy.root / rel)
                if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == u.mode:
                    continue  # copied up because something below it was written (reported itself)
            except OSError:
                pass
        found.append({"path": rel, "kind": kind})
    return sorted(found, key=lambda w: paths.sort_key(w["path"]))
