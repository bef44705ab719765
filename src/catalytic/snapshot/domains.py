"""Phases 1 and 3 for a whole policy: every catalytic domain snapshotted, streamed or in memory.

Runs without isolation use the parallel streaming snapshot (:mod:`catalytic.snapshot.stream`): documents go
to spools, differences come from the workers. Isolation backends need the entries in memory and use
:func:`snapshot_all`. A store that cannot be used makes a run fall back to memory (:func:`store_failed`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalytic import paths
from catalytic.errors import CatalyticError, SnapshotError
from catalytic.excludes import NONE, Excludes
from catalytic.snapshot import DomainSnapshot, snapshot_domain

if TYPE_CHECKING:
    from catalytic.policy import Policy

#: Where progress lines go.
Say = Callable[[str], None]


@dataclass(frozen=True)
class SnapshotSettings:
    """How snapshots are taken: hashing processes (0: one per core) and the stat cache."""

    jobs: int = 0
    use_cache: bool = True
    progress: Callable[[int, int], None] | None = None
    # What of the cache changed while the command ran (:mod:`catalytic.snapshot.guard`): nothing in it is
    # trusted then.
    distrusted: tuple[str, ...] = ()

    def cache_dir(self, policy: Policy) -> Path | None:
        return cache_dir(policy.root / policy.runs_root) if self.use_cache else None


CACHE_DIR = "_cache"


def cache_dir(runs_root: Path) -> Path:
    """Where the runs under ``runs_root`` keep their stat caches (and streamed snapshots their stores)."""
    return runs_root / CACHE_DIR


#: A domain's snapshot as the phases hold it: streamed into spools (no isolation) or in memory.
Snapshot = Any


class Spools:
    """Where the streamed snapshots put their documents until the ledger is written."""

    def __init__(self, directory: Path) -> None:
        from catalytic.snapshot.spool import Spool

        self.manifest = {"pre": Spool(directory), "post": Spool(directory)}
        self.modes = {"pre": Spool(directory), "post": Spool(directory)}

    def close(self) -> None:
        for spool in (*self.manifest.values(), *self.modes.values()):
            spool.close()


def scan_all(
    policy: Policy,
    label: str,
    progress: Say,
    settings: SnapshotSettings,
    spools: Spools,
    pre: Sequence[Snapshot] = (),
) -> tuple[list[Snapshot], CatalyticError | None]:
    """The parallel, streaming snapshots of every domain (``post``: compared with ``pre``)."""
    from catalytic.snapshot.stream import scan_domain

    before = {snap.domain: snap for snap in pre}
    snaps: list[Snapshot] = []
    for domain in policy.catalytic_domains:
        try:
            snap = scan_domain(
                policy.root / domain if domain != paths.ROOT else policy.root,
                domain,
                policy.hash,
                store_dir=cache_dir(policy.root / policy.runs_root),
                manifest=spools.manifest[label],
                modes=spools.modes[label],
                trust=settings.use_cache,
                before=before.get(domain),
                jobs=settings.jobs,
                progress=settings.progress,
                leave_out=left_out(policy, domain),
            )
        except SnapshotError as exc:
            return snaps, in_workspace(domain, exc)
        state = "absent" if snap.absent else f"{snap.stats.files} files"
        progress(f"Snapshots {label}: {domain} ({state})")
        snaps.append(snap)
    return snaps, None


def left_out(policy: Policy, tree: str) -> Excludes:
    """What the run's snapshots of ``tree`` (a domain or declared output, workspace-relative) leave out: the
    paths its exclude patterns match and, in a domain, what :func:`catalytic.policy.left_out` names (the
    runs root and ``.git`` inside it; under overlay the declared outputs instead of ``.git``)."""
    from catalytic.policy import left_out_within

    exact = left_out_within(policy, tree) if tree in policy.catalytic_domains else []
    if not exact and not policy.excludes:
        return NONE
    return Excludes(policy.excludes).within(tree, exact)


def store_failed(error: CatalyticError | None, say: Say) -> bool:
    """True when the snapshot store could not be used (the snapshots are then taken in memory)."""
    if error is None or error.code != "STORE":
        return False
    say(f"WARNING: {error.message}; snapshots are taken in memory instead")
    return True


def in_memory(snap: Snapshot) -> DomainSnapshot:
    """A streamed snapshot as an in-memory one (read back from its spooled documents)."""
    from catalytic.ledger.canonical import loads
    from catalytic.snapshot import entries_from_documents

    manifest = loads(b"".join(snap.manifest.chunks()))
    modes = loads(b"".join(snap.modes.chunks()))
    entries = tuple(entries_from_documents(manifest, modes))
    return DomainSnapshot(snap.domain, entries, snap.stats, snap.merkle_root, snap.cache)


def in_workspace(domain: str, exc: SnapshotError) -> SnapshotError:
    """The error with its path (relative to the domain) named from the workspace root."""
    return SnapshotError(
        exc.message.removeprefix(f"{exc.path}: "), path=paths.join(domain, exc.path), code=exc.code
    )


def snapshot_all(
    policy: Policy, label: str, progress: Say, settings: SnapshotSettings | None = None
) -> tuple[list[DomainSnapshot], CatalyticError | None]:
    settings = settings or SnapshotSettings()
    snaps: list[DomainSnapshot] = []
    for domain in policy.catalytic_domains:
        try:
            snap = snapshot_domain(
                policy.root,
                domain,
                policy.hash,
                jobs=settings.jobs,
                cache_dir=settings.cache_dir(policy),
                progress=settings.progress,
                leave_out=left_out(policy, domain),
            )
        except SnapshotError as exc:
            return snaps, in_workspace(domain, exc)
        state = "absent" if snap.absent else f"{snap.stats.files} files"
        progress(f"Snapshots {label}: {domain} ({state})")
        snaps.append(snap)
    return snaps, None
