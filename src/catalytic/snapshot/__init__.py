"""Phase 1 and 3: snapshots of catalytic domains (walker, race-safe hasher, manifests)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from catalytic.paths import join
from catalytic.snapshot.digest import DEFAULT_HASH, hasher_factory
from catalytic.snapshot.entry import Entry
from catalytic.snapshot.walker import WalkStats, walk

__all__ = [
    "DomainSnapshot",
    "Entry",
    "WalkStats",
    "manifest_documents",
    "snapshot_domain",
    "snapshot_tree",
]


@dataclass(frozen=True)
class DomainSnapshot:
    """All entries of one domain, sorted by path bytes, and what the walk counted."""

    domain: str
    entries: tuple[Entry, ...]
    stats: WalkStats

    @property
    def absent(self) -> bool:
        return self.stats.absent


def snapshot_tree(path: Path, algorithm: str = DEFAULT_HASH) -> DomainSnapshot:
    """Snapshot any directory tree (used for domains and by ``catalytic snapshot``)."""
    stats = WalkStats()
    entries = tuple(walk(path, hasher_factory(algorithm), stats))
    return DomainSnapshot(str(path), entries, stats)


def snapshot_domain(root: Path, domain: str, algorithm: str = DEFAULT_HASH) -> DomainSnapshot:
    """Snapshot the domain ``domain`` (relative to ``root``)."""
    snap = snapshot_tree(root / domain if domain != "." else root, algorithm)
    return DomainSnapshot(domain, snap.entries, snap.stats)


def manifest_documents(
    snapshots: Sequence[DomainSnapshot],
) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """The MANIFEST and MODES documents of a set of domain snapshots."""
    manifest: dict[str, dict[str, str]] = {}
    modes: dict[str, dict[str, str]] = {}
    for snap in snapshots:
        manifest[snap.domain] = {e.path: e.value for e in snap.entries}
        modes[snap.domain] = {e.path: e.mode for e in snap.entries if e.mode is not None}
    return manifest, modes


def entries_from_documents(manifest: dict[str, str], modes: dict[str, str] | None) -> Iterable[Entry]:
    """Rebuild sorted entries of one domain from its MANIFEST and MODES objects."""
    from catalytic.paths import sort_key

    modes = modes or {}
    for path in sorted(manifest, key=sort_key):
        yield Entry(path, manifest[path], modes.get(path))


def domain_path(domain: str, rel: str) -> str:
    """Workspace-relative path of an entry of a domain."""
    return join(domain, rel)
