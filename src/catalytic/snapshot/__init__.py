"""Phase 1 and 3: snapshots of catalytic domains (walker, race-safe hasher, manifests)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from catalytic.excludes import NONE, Excludes
from catalytic.snapshot.digest import DEFAULT_HASH, hasher_factory
from catalytic.snapshot.entry import Entry
from catalytic.snapshot.walker import WalkStats, walk

__all__ = [
    "DomainSnapshot",
    "Entry",
    "WalkStats",
    "snapshot_domain",
    "snapshot_tree",
]


@dataclass(frozen=True)
class DomainSnapshot:
    """All entries of one domain, sorted by path bytes, and what the walk counted."""

    domain: str
    entries: tuple[Entry, ...]
    stats: WalkStats
    merkle_root: str = ""
    cache: str = "disabled"

    @property
    def absent(self) -> bool:
        return self.stats.absent


def snapshot_tree(
    path: Path,
    algorithm: str = DEFAULT_HASH,
    *,
    jobs: int = 0,
    cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    leave_out: Excludes = NONE,
) -> DomainSnapshot:
    """Snapshot any directory tree, with its entries in memory (the small trees of outputs, overlay's upper
    layer, the Python API).

    The one snapshot engine (:mod:`catalytic.snapshot.stream`) takes it; its documents are kept in memory
    and read back as entries. ``jobs`` processes (0: one per core); ``cache_dir`` keeps the stat cache (the
    engine's store) there, as runs do. ``leave_out``: what is left out (:mod:`catalytic.excludes`).
    """
    from catalytic.snapshot.manifest_stream import spooled_entries
    from catalytic.snapshot.spool import MemorySpool
    from catalytic.snapshot.stream import scan_domain

    manifest, modes = MemorySpool(), MemorySpool()
    try:
        scan = scan_domain(
            path,
            str(path),
            algorithm,
            store_dir=cache_dir,
            manifest=manifest,
            modes=modes,
            jobs=jobs,
            progress=progress,
            leave_out=leave_out,
        )
        entries = tuple(Entry(*triple) for triple in spooled_entries(scan.manifest, scan.modes))
    finally:
        manifest.close()
        modes.close()
    return DomainSnapshot(str(path), entries, scan.stats, scan.merkle_root, scan.cache)


def snapshot_domain(
    root: Path,
    domain: str,
    algorithm: str = DEFAULT_HASH,
    *,
    jobs: int = 0,
    cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    leave_out: Excludes = NONE,
) -> DomainSnapshot:
    """Snapshot the domain ``domain`` (relative to ``root``)."""
    snap = snapshot_tree(
        root / domain if domain != "." else root,
        algorithm,
        jobs=jobs,
        cache_dir=cache_dir,
        progress=progress,
        leave_out=leave_out,
    )
    return DomainSnapshot(domain, snap.entries, snap.stats, snap.merkle_root, snap.cache)


def reference_walk(path: Path, algorithm: str = DEFAULT_HASH) -> list[Entry]:
    """The plain single-process walk without cache (the reference the fast path is tested against)."""
    return list(walk(path, hasher_factory(algorithm), WalkStats()))


def entries_from_documents(manifest: dict[str, str], modes: dict[str, str] | None) -> Iterable[Entry]:
    """Rebuild sorted entries of one domain from its MANIFEST and MODES objects."""
    from catalytic.snapshot.manifest_stream import sorted_entries

    return (Entry(*triple) for triple in sorted_entries(manifest, modes or {}))
