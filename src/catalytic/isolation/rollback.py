"""``rollback``: save the pre-state in the content-addressed store, put it back when the run is dirty.

Portable (no kernel feature needed). Before the command starts, every regular file of every domain
and of every existing declared output is saved in the store (deduplicated across runs) and the
entries (values, modes, symlink targets) are recorded as the run's pre-state. When the run is dirty,
interrupted, its post snapshot failed, or (``--rollback-on-failure``) the command failed, every domain
and output is put back and a fresh snapshot proves it. What cannot be put back is copied to
``<ledger>/quarantine/`` and the run stops for a human.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalytic import faults, paths
from catalytic.diff import Triple
from catalytic.errors import CatalyticError
from catalytic.events import event
from catalytic.excludes import NONE, Excludes
from catalytic.isolation.backend import Facts, IsolationName, Options, Outcome
from catalytic.isolation.journal import Staging
from catalytic.isolation.restore import restore_tree, unsafe_path
from catalytic.isolation.state import IndexRow, SavedState, Times, index_text, open_state, state_text
from catalytic.isolation.store import Store, StoreError
from catalytic.policy import Policy
from catalytic.snapshot import DomainSnapshot, attrs, snapshot_tree
from catalytic.snapshot.domains import cache_dir, left_out
from catalytic.snapshot.entry import kind_of
from catalytic.snapshot.report import default_jobs

if TYPE_CHECKING:
    from catalytic.snapshot.domains import SnapshotSettings, Spools

#: :func:`save_tree` stores new files in batches of this many (bounds the memory a first run needs).
SAVE_BATCH = 50_000


def save_tree(
    store: Store,
    base: Path,
    entries: Iterable[Triple],
    algorithm: str,
    jobs: int = 1,
    times: Times | None = None,
) -> int:
    """Store every regular file of a snapshotted tree (``(path, value, mode)`` in path order, with up to
    ``jobs`` processes, :data:`SAVE_BATCH` new files at a time) and the extended attributes its MODES values
    name; return how many objects were new. ``times`` receives each entry's modification time."""
    top = os.fspath(base)
    new = 0
    files: dict[str, str] = {}
    for path, value, mode in entries:
        where = top if path == paths.ROOT else os.path.join(top, path)
        if times is not None:
            with contextlib.suppress(OSError):  # gone since the snapshot: the post-run one says so
                times.entry(path, os.lstat(where).st_mtime_ns)
        xattrs = attrs.xattrs_named(mode)
        if xattrs is not None:
            new += _save_xattrs(store, where, path, xattrs)
        if kind_of(value) == "file" and value not in files and not store.has(algorithm, value):
            files[value] = where
            if len(files) >= SAVE_BATCH:
                new += store.put_files(files, algorithm, jobs)
                files = {}
    return new + store.put_files(files, algorithm, jobs)


def _save_xattrs(store: Store, where: str, rel: str, wanted: str) -> int:
    """Store the blob of the extended attributes of the entry at ``where`` (``wanted``: the digest its MODES
    value names); 1 when it was new. They must still be the ones the snapshot saw."""
    if store.has(attrs.BLOB_ALGORITHM, wanted):
        return 0
    try:
        found = attrs.read_path(where)
    except OSError as exc:
        raise StoreError(f"cannot save the extended attributes of {rel}: {exc.strerror or exc}") from exc
    if attrs.digest(found) != wanted:
        raise StoreError(
            f"the extended attributes of {rel} changed while they were saved", code="STORE_UNSTABLE"
        )
    return int(store.put_blob(attrs.BLOB_ALGORITHM, wanted, attrs.blob(found)))


def _triples(snap: Any) -> Iterator[Triple]:
    """``(path, value, mode)`` of every entry of a snapshot: from its entries, or read back from the
    documents a streamed snapshot spooled (a batch at a time: memory does not grow with the number of
    files)."""
    if isinstance(snap, DomainSnapshot):
        yield from ((e.path, e.value, e.mode) for e in snap.entries)
        return
    from catalytic.snapshot.manifest_stream import spooled_entries

    yield from spooled_entries(snap.manifest, snap.modes)


def restore_state(
    root: Path,
    store: Store,
    state: SavedState,
    *,
    only: Sequence[str] | None = None,
    dry_run: bool = False,
    cache_dir: Path | None = None,
    run_id: str,
) -> dict[str, Any]:
    """Put the domains and outputs of a saved pre-state back; prove it with fresh snapshots.

    Each tree is restored from a merge of its saved entries and a fresh snapshot, both streamed, and
    checked by another: memory holds the differences, not the entries. ``cache_dir``: the stat cache the
    snapshots may use (the runs' own; None: every file is hashed). No tree is reached through a symlink
    (:mod:`catalytic.isolation.restore`); the temporary files of the restore are journaled under the runs
    root (:class:`~catalytic.isolation.journal.Staging`) for ``run_id``.
    Returns ``{"actions", "problems", "verified", "remaining": {tree: [paths]}}``.
    """
    from catalytic.diff import changes
    from catalytic.snapshot.manifest_stream import scanned, spooled_entries

    algorithm = state.algorithm
    actions: list[list[str]] = []
    problems: list[str] = []
    remaining: dict[str, list[str]] = {}
    staging = Staging(store.runs_root, run_id)
    try:
        for tree in state.trees:
            if only is not None and tree.name not in only:
                continue
            target = root if tree.name == paths.ROOT else root / tree.name
            within = root if tree.name != paths.ROOT else root.parent
            if not dry_run:
                faults.point("rollback.tree")
            # Neither read nor written through a symlink a command put in place of a parent.
            unsafe = unsafe_path(target, within)
            if unsafe is not None:
                problems.append(f"cannot restore {tree.name}: {unsafe}")
                remaining[tree.name] = [paths.ROOT]
                continue
            # What the run left out of the saved tree (its excludes; the runs root and .git inside it) is left
            # alone: neither compared nor put back.
            exact = _skipped(root, store.runs_root, tree.name)
            leave_out = Excludes(state.excludes).within(tree.name, exact) if state.excludes or exact else NONE
            with scanned(target, algorithm, store_dir=cache_dir, leave_out=leave_out) as have:
                now = spooled_entries(have.manifest, have.modes)
                report = restore_tree(
                    target,
                    tree.entries(),
                    now,
                    store,
                    algorithm,
                    dry_run=dry_run,
                    label=tree.name,
                    within=within,
                    staging=staging,
                    times=tree.times(),
                )
            actions.extend([op, p] for op, p in report.actions)
            problems.extend(report.problems)
            if not dry_run:
                with scanned(target, algorithm, store_dir=cache_dir, leave_out=leave_out) as after:
                    left = changes(tree.entries(), spooled_entries(after.manifest, after.modes))
                    differing = [change[1] for change in left]
                unsafe = unsafe_path(target, within)  # a proof read through a symlink proves nothing
                if unsafe is not None:
                    problems.append(f"cannot prove {tree.name} restored: {unsafe}")
                    differing = differing or [paths.ROOT]
                if differing:
                    remaining[tree.name] = differing
    finally:
        staging.close()
    return {
        "actions": actions,
        "problems": problems,
        "verified": not dry_run and not problems and not remaining,
        "remaining": remaining,
    }


def _skipped(root: Path, runs_root: Path, tree: str) -> list[str]:
    """The paths (relative to ``tree``) a rollback run's snapshots of ``tree`` left out."""
    from catalytic.policy import left_out_of, relative_to

    rel = os.path.relpath(runs_root, root).replace(os.sep, "/")
    return relative_to(tree, left_out_of(tree, rel))


class RollbackIsolation:
    """The ``rollback`` backend."""

    name: IsolationName = "rollback"

    def __init__(self, policy: Policy, ledger_dir: Path, options: Options) -> None:
        self.policy = policy
        self.ledger_dir = ledger_dir
        self.options = options
        self.store = Store(policy.root / policy.runs_root)
        self.saved: dict[str, Any] = {}
        self.jobs = options.jobs or default_jobs()

    def prepare(self, pre: Sequence[Any]) -> None:
        """Save the pre-state: every file of the domains (snapshots in memory or streamed) and of the
        existing declared outputs in the store, and the state document."""
        root, algorithm = self.policy.root, self.policy.hash
        trees = [("domains", snap.domain, snap) for snap in pre]
        for out in self.policy.durable_outputs:
            trees.append(
                ("outputs", out, snapshot_tree(root / out, algorithm, leave_out=left_out(self.policy, out)))
            )
        new = files = 0
        times = Times(self.store.path)
        try:
            for section, name, snap in trees:
                base = root if name == paths.ROOT else root / name
                times.tree(section, name)
                new += save_tree(self.store, base, _triples(snap), algorithm, self.jobs, times)
                files += snap.stats.files
            self.store.save_times(self.policy.run_id, times.text())
        finally:
            times.close()
        if new:
            self.store.sync()
        faults.point("rollback.saved")
        index: list[IndexRow] = []
        excludes = self.policy.excludes
        text = state_text(algorithm, trees, self.policy.run_id, index, excludes)
        self.store.save_state(
            self.policy.run_id, text, lambda size: index_text(algorithm, size, index, excludes)
        )
        self.saved = {
            "files": files,
            "new_objects": new,
            "state": str(self.store.state_path(self.policy.run_id)),
        }
        self.options.emit(event("rollback_saved", files=files, new_objects=new))

    def wrap(self, command: Sequence[str]) -> list[str]:
        return list(command)

    def post_snapshots(
        self, pre: Sequence[Any], spools: Spools, settings: SnapshotSettings
    ) -> tuple[list[Any], Any] | None:
        del pre, spools, settings
        return None

    def finish(self, outcome: Outcome) -> Facts:
        failed_command = outcome.exit_code not in (0, None) or outcome.exit_code is None
        why: str | None = None
        if not outcome.clean:
            why = "the run is dirty" if outcome.error is None else "the restoration could not be proven"
            if outcome.interrupted:
                why = "the run was interrupted"
        elif self.options.rollback_on_failure and failed_command:
            why = f"the command failed (exit {outcome.exit_code}) and --rollback-on-failure is set"
        facts = Facts(rollback={"performed": False, "saved": self.saved})
        if why is None or not self.saved:
            return facts  # nothing to do, or the pre-state was never saved (the command did not run)
        self.options.emit(event("rollback_start", why=why))
        try:
            state = open_state(self.store, self.policy.run_id)
            caches = cache_dir(self.policy.root / self.policy.runs_root) if self.options.cache else None
            result = restore_state(
                self.policy.root, self.store, state, cache_dir=caches, run_id=self.policy.run_id
            )
        except (CatalyticError, OSError) as exc:
            message = exc.message if isinstance(exc, CatalyticError) else str(exc)
            result = {"verified": False, "actions": [], "problems": [message], "remaining": {}}
        rollback: dict[str, Any] = {
            "performed": True,
            "trigger": why,
            "saved": self.saved,
            "verified": result["verified"],
            "actions": len(result["actions"]),
            "problems": result["problems"],
            "remaining": result["remaining"],
        }
        facts.rollback = rollback
        if result["verified"]:
            self.options.emit(event("rollback_proven"))
            return facts
        quarantine = self.ledger_dir / "quarantine"
        self._quarantine(result["remaining"], quarantine)
        facts.quarantine = str(quarantine)
        facts.failed = True
        facts.reason = "rollback could not restore everything; quarantined, a human must look"
        self.options.emit(event("rollback_failed", quarantine=str(quarantine)))
        return facts

    def _quarantine(self, remaining: dict[str, list[str]], quarantine: Path) -> None:
        for tree, rels in remaining.items():
            for rel in rels:
                src = self.policy.root / paths.join(tree, rel)
                dst = quarantine / paths.join(tree, rel)
                if unsafe_path(src, self.policy.root) is not None:
                    continue  # never read through a symlink a command put in place of a parent
                with contextlib.suppress(OSError):
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    if os.path.islink(src):
                        os.symlink(os.readlink(src), dst)
                    elif os.path.isfile(src):
                        shutil.copy2(src, dst)
                    elif os.path.isdir(src):
                        dst.mkdir(exist_ok=True)

    def close(self) -> None:
        pass
