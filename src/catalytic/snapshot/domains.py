"""Phases 1 and 3 for a whole policy: every catalytic domain snapshotted by the streaming engine.

Every run takes its snapshots with :func:`scan_all` (:mod:`catalytic.snapshot.stream`): documents go to
spools, the differences come from the workers (compared with the store's rows) or, without a store, from a
merge of the pre- and post-run documents. A store that cannot be used, or that the command changed, only
changes where the documents go and where the differences come from (:func:`store_failed`): there is no
second path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalytic import paths
from catalytic.errors import CatalyticError, SnapshotError
from catalytic.events import Emit, event
from catalytic.excludes import NONE, Excludes

if TYPE_CHECKING:
    from catalytic.policy import Policy


@dataclass(frozen=True)
class SnapshotSettings:
    """How snapshots are taken: hashing processes (0: one per core) and the stat cache."""

    jobs: int = 0
    use_cache: bool = True
    progress: Callable[[int, int], None] | None = None
    # What of the cache changed while the command ran (:mod:`catalytic.snapshot.guard`): nothing in it is
    # trusted then.
    distrusted: tuple[str, ...] = ()
    # Whether the snapshots keep rows in the store (False: it cannot be used, or the command changed it).
    # Without it every file is hashed and a post-run snapshot is compared with the pre-run one's documents.
    store: bool = True

    def without_store(self, **changes: Any) -> SnapshotSettings:
        """These settings with no store and no cache (``changes``: other fields to set)."""
        return replace(self, use_cache=False, store=False, **changes)


CACHE_DIR = "_cache"


def cache_dir(runs_root: Path) -> Path:
    """Where the runs under ``runs_root`` keep their stat caches (and streamed snapshots their stores)."""
    return runs_root / CACHE_DIR


#: A domain's snapshot as the phases hold it: streamed into spools (no isolation) or in memory.
Snapshot = Any


class Spools:
    """Where the snapshots put their documents until the ledger is written: files under ``directory`` (the
    runs root) past 1 MiB, or with ``memory`` in memory (when the disk is full)."""

    def __init__(self, directory: Path, *, memory: bool = False) -> None:
        from catalytic.snapshot.spool import Spool

        self.directory = directory
        self.memory = memory
        self.manifest: dict[str, Spool] = {}
        self.modes: dict[str, Spool] = {}
        for label in ("pre", "post"):
            self._fresh(label)

    def _fresh(self, label: str) -> None:
        from catalytic.snapshot.spool import MemorySpool, Spool

        for documents in (self.manifest, self.modes):
            documents[label] = MemorySpool() if self.memory else Spool(self.directory)

    def to_memory(self, *labels: str) -> None:
        """From now on, keep the documents of ``labels`` (``pre``, ``post``) in memory; what was written
        to them is dropped (the snapshots that wrote it are taken again)."""
        self.memory = True
        for label in labels:
            self.manifest[label].close()
            self.modes[label].close()
            self._fresh(label)

    def like(self) -> Spools:
        """New spools of the same kind (in memory once these are)."""
        return Spools(self.directory, memory=self.memory)

    def close(self) -> None:
        for spool in (*self.manifest.values(), *self.modes.values()):
            spool.close()


def scan_all(
    policy: Policy,
    label: str,
    emit: Emit,
    settings: SnapshotSettings,
    spools: Spools,
    pre: Sequence[Snapshot] = (),
) -> tuple[list[Snapshot], CatalyticError | None]:
    """The parallel, streaming snapshots of every domain (``post``: compared with ``pre``: by the workers
    against the store, or without one by the documents)."""
    from catalytic.snapshot.stream import scan_domain

    before = {snap.domain: snap for snap in pre}
    snaps: list[Snapshot] = []
    for domain in policy.catalytic_domains:
        earlier = before.get(domain)
        try:
            snap = scan_domain(
                policy.root / domain if domain != paths.ROOT else policy.root,
                domain,
                policy.hash,
                store_dir=cache_dir(policy.root / policy.runs_root) if settings.store else None,
                manifest=spools.manifest[label],
                modes=spools.modes[label],
                trust=settings.use_cache,
                before=earlier if settings.store else None,
                jobs=settings.jobs,
                progress=settings.progress,
                leave_out=left_out(policy, domain),
            )
            if earlier is not None and not settings.store:
                from catalytic.snapshot.manifest_stream import documents_diff

                snap.diff = documents_diff(earlier, snap)
        except SnapshotError as exc:
            return snaps, in_workspace(domain, exc)
        except OSError as exc:  # a spool that cannot be read back (a full disk)
            from catalytic.snapshot.rowstore import store_failure

            return snaps, store_failure(None, exc, io=True)
        emit(event("snapshot_taken", label=label, domain=domain, absent=snap.absent, files=snap.stats.files))
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


def store_failed(error: CatalyticError | None, emit: Emit) -> bool:
    """True when the snapshot store (or a spool beside it) could not be used: the snapshots are then taken
    again without a store, into spools in memory."""
    if error is None or error.code != "STORE":
        return False
    emit(event("store_fallback", reason=error.message))
    return True


def in_workspace(domain: str, exc: SnapshotError) -> SnapshotError:
    """The error with its path (relative to the domain) named from the workspace root."""
    return SnapshotError(
        exc.message.removeprefix(f"{exc.path}: "), path=paths.join(domain, exc.path), code=exc.code
    )
