"""``overlay`` (Linux): the command sees the workspace root through overlayfs in its own mount namespace.

The command is spawned as ``unshare -m --propagation private [-r] sh -c 'mount -t overlay ... ROOT;
cd CWD; exec COMMAND'``: the overlay is mounted over the workspace root inside a private mount
namespace (as root directly, rootless through an unprivileged user namespace with ``userxattr``), so
the command's paths are unchanged and every write lands in an upper directory kept outside the root
(a temporary directory). ``unshare`` and ``sh`` exec in place, so the runner's signal forwarding
reaches the command itself. The real tree is never modified while the command runs.

Afterwards the upper layer is the exact write set (see :mod:`catalytic.isolation.upper` for how the
post-run snapshot is computed from it and which writes are undeclared). Declared outputs are committed
to the real tree only after the proof; otherwise the write set is kept under ``quarantine/``. Nested
mounts inside the workspace are not seen through a single overlay: the command sees the underlying
directory there.

The verdict never rests on the upper layer alone. The command can still reach the real tree: through
a descriptor it inherited (refused before the run, :mod:`catalytic.isolation.descriptors`) or through
``/proc/<pid>/root`` and ``/proc/<pid>/cwd`` of a process outside its namespace (catalytic's own). So
after the command (and again after a determinism check's second run) every domain is snapshotted on
the real tree with the runtime's own engine and compared with its pre-run snapshot: a domain whose real
files changed is dirty, and its post-run snapshot is the real one (what is there now), with the reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from catalytic import paths
from catalytic.errors import SnapshotError
from catalytic.events import event, ignore
from catalytic.isolation.backend import Facts, IsolationError, IsolationName, Options, Outcome
from catalytic.isolation.mount import (
    mount_options,
    unavailable_reason,
    unshare_argv,
    xattr_prefix,
)
from catalytic.isolation.restore import remove_tree
from catalytic.isolation.upper import (
    UpperEntry,
    hidden_from,
    merged_entries,
    merged_tree,
    scan_upper,
    touches,
    undeclared_writes,
)
from catalytic.ledger.canonical import encode, write_json
from catalytic.policy import left_out
from catalytic.snapshot import Entry, snapshot_tree
from catalytic.snapshot.attrs import bits_of
from catalytic.snapshot.domains import left_out as domain_left_out
from catalytic.snapshot.entry import DIR, kind_of

if TYPE_CHECKING:
    from catalytic.policy import Policy
    from catalytic.snapshot.domains import Snapshot, SnapshotSettings, Spools
    from catalytic.snapshot.stream import DomainScan

MOUNT_SCRIPT = (
    'mount -t overlay overlay -o "$1" "$2" || exit 125; '
    ': > "$4" || exit 125; '
    'cd -- "$3" 2>/dev/null || cd /; '
    'shift 4; exec "$@"'
)
TMP_PREFIX = "catalytic-overlay-"
OWNER_FILE = "owner.pid"


def _copy_entry(src: Path, dst: Path, entry: Entry) -> None:
    kind = kind_of(entry.value)
    if kind == "dir":
        dst.mkdir(exist_ok=True)
    elif kind == "symlink":
        os.symlink(os.readlink(src), dst)
    elif kind == "file":
        shutil.copyfile(src, dst, follow_symlinks=False)
        with open(dst, "rb+") as fh:
            os.fsync(fh.fileno())
    else:
        raise OSError(f"{entry.path}: a {kind} is not a durable artifact")
    if entry.mode is not None and kind != "dir":
        os.chmod(dst, bits_of(entry.mode))


class OverlayIsolation:
    """The ``overlay`` backend."""

    name: IsolationName = "overlay"

    def __init__(self, policy: Policy, ledger_dir: Path, options: Options) -> None:
        why = unavailable_reason(policy.root)
        if why is not None:
            raise IsolationError(
                f"--isolation overlay cannot be used here: {why}; use --isolation rollback instead"
            )
        self.policy = policy
        self.ledger_dir = ledger_dir
        self.options = options
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{policy.run_id}-"))
        (self.tmp / OWNER_FILE).write_text(f"{os.getpid()}\n")
        self.command: list[str] = []
        self.layers: list[Path] = []
        self.upper_dir = self._layer()
        self.upper: dict[str, UpperEntry] = {}
        self.mount_failed = False
        # The pre-run snapshots, their spools and how the run takes snapshots: for the real tree checks.
        self.pre: Sequence[Snapshot] = ()
        self.spools: Spools | None = None
        self.settings: SnapshotSettings | None = None
        self.real_spools: list[Spools] = []
        #: Domains whose real files changed while the command ran (the overlay did not see it).
        self.real_changed: list[str] = []

    def _layer(self) -> Path:
        layer = self.tmp / f"layer{len(self.layers)}"
        for name in ("upper", "work"):
            (layer / name).mkdir(parents=True)
        # The merged root takes the upper root's attributes: make them the workspace root's.
        os.chmod(layer / "upper", stat.S_IMODE(os.stat(self.policy.root).st_mode))
        self.layers.append(layer)
        return layer / "upper"

    def prepare(self, pre: Sequence[Snapshot]) -> None:
        del pre
        from catalytic.isolation.descriptors import bypass_reason

        # Preflight refused such descriptors; a library caller may have opened one since.
        why = bypass_reason(self.policy.root)
        if why is not None:
            raise IsolationError(
                f"--isolation overlay cannot isolate this run: {why}", code="INHERITED_DESCRIPTOR"
            )

    def _wrap(self, command: Sequence[str], upper: Path) -> list[str]:
        work = upper.parent / "work"
        marker = upper.parent / "mounted"
        opts = mount_options(self.policy.root, upper, work)
        return [
            *unshare_argv(),
            "--",
            "/bin/sh",
            "-c",
            MOUNT_SCRIPT,
            "catalytic-overlay",
            opts,
            str(self.policy.root),
            os.getcwd(),
            str(marker),
            *command,
        ]

    def wrap(self, command: Sequence[str]) -> list[str]:
        self.command = list(command)
        return self._wrap(command, self.upper_dir)

    def post_snapshots(
        self, pre: Sequence[Snapshot], spools: Spools, settings: SnapshotSettings
    ) -> tuple[list[Snapshot], SnapshotError | None] | None:
        if not (self.upper_dir.parent / "mounted").exists():
            self.mount_failed = True
            return [], SnapshotError(
                "the overlay could not be mounted for the command (see its stderr)",
                path=paths.ROOT,
                code="OVERLAY_FAILED",
            )
        self.upper = scan_upper(self.upper_dir, xattr_prefix())
        post: list[Snapshot] = []
        for snap in pre:
            try:
                after = self._merged(snap, spools)
            except SnapshotError as exc:
                return post, exc
            post.append(after)
            files = after.stats.files
            self.options.emit(
                event("overlay_post_snapshot", domain=snap.domain, absent=after.absent, files=files)
            )
        self.pre, self.spools, self.settings = pre, spools, settings
        real, error = self._real_changes()
        if error is not None:
            return post, error
        for i, snap in enumerate(post):
            if snap.domain in real:
                post[i] = real[snap.domain]
                self.options.emit(event("real_tree_changed", domain=snap.domain))
        self.real_changed = sorted(real)
        return post, None

    def _real_changes(self) -> tuple[dict[str, Snapshot], SnapshotError | None]:
        """The real tree's snapshot of every domain whose real files differ from the pre-run snapshot.

        Taken as the runtime takes snapshots without isolation (with the stat cache unless it failed or
        was distrusted), so an unchanged domain costs a stat walk.
        """
        from catalytic.snapshot.domains import scan_all

        assert self.spools is not None and self.settings is not None
        own = self.spools.like()
        self.real_spools.append(own)  # its documents may become the ledger's: closed in close()
        # Said once per domain by post_snapshots, not per snapshot.
        real, error = scan_all(self.policy, "post", ignore, self.settings, own, self.pre)
        if error is not None:
            return {}, cast(SnapshotError, error)
        return {snap.domain: snap for snap in real if not snap.diff.clean}, None

    def _merged(self, snap: DomainScan, spools: Spools) -> DomainScan:
        """The post-run snapshot of a domain: the pre-run manifest read from its spools entry by entry,
        merged with the upper layer and written to the post-run spools, with its Merkle root and its
        differences from the pre-run one. A domain the command wrote nothing in is its pre-run snapshot:
        the same documents and root."""
        from catalytic.diff import DomainDiff
        from catalytic.snapshot.manifest_stream import spool_changes, spooled_entries
        from catalytic.snapshot.rowstore import store_failure
        from catalytic.snapshot.stream import DomainScan

        if not touches(self.upper, snap.domain):
            return DomainScan(
                snap.domain, snap.stats, snap.merkle_root, snap.manifest, snap.modes, DomainDiff()
            )
        lower = spooled_entries(snap.manifest, snap.modes)
        left_out = domain_left_out(self.policy, snap.domain)
        merged = merged_entries(lower, self.upper_dir, self.upper, snap.domain, self.policy.hash, left_out)
        pairs = ((before, after) for before, after, _from_upper in merged)
        manifest, modes = spools.manifest["post"], spools.modes["post"]
        try:
            return spool_changes(snap.domain, pairs, self.policy.hash, manifest, modes)
        except OSError as exc:  # a spool that cannot be written: the run falls back to memory
            raise cast(SnapshotError, store_failure(None, exc, io=True)) from exc

    def _outputs_digest(self, upper_dir: Path, upper: dict[str, UpperEntry]) -> tuple[str, dict[str, Any]]:
        manifest: dict[str, Any] = {}
        for out in self.policy.durable_outputs:
            lower = snapshot_tree(self.policy.root / out, self.policy.hash).entries
            entries, absent, _ = merged_tree(
                lower, upper_dir, upper, out, self.policy.hash, domain_left_out(self.policy, out)
            )
            manifest[out] = None if absent else {e.path: [e.value, e.mode] for e in entries}
        return hashlib.sha256(encode(manifest)).hexdigest(), manifest

    def finish(self, outcome: Outcome) -> Facts:
        facts = Facts(undeclared_writes=[], committed=False)
        facts.details["upper_entries"] = len(self.upper)
        excluded = {d: left_out(self.policy, d) for d in self.policy.catalytic_domains}
        if any(excluded.values()):
            facts.details["excluded_from_domains"] = {d: x for d, x in excluded.items() if x}
        if self.mount_failed:
            facts.failed = True
            facts.reason = "the overlay could not be mounted"
            return facts
        if self.real_changed:
            facts.details["real_tree_changed"] = self.real_changed
        writes = undeclared_writes(self.policy, self.upper)
        facts.undeclared_writes = writes
        for w in writes:
            self.options.emit(event("undeclared_write", path=w["path"], write=w["kind"]))
        ok = outcome.clean and not writes and outcome.exit_code == 0 and not outcome.interrupted
        if ok and self.options.check_determinism:
            ok = self._check_determinism(facts)
        if ok:
            try:
                self._commit(facts)
                return facts
            except (OSError, SnapshotError) as exc:
                facts.committed = False
                facts.failed = True
                facts.reason = f"committing the declared outputs failed: {exc}"
                self.options.emit(event("failure", reason=facts.reason))
        if writes:
            facts.failed = True
            facts.reason = (
                f"{len(writes)} undeclared write(s) outside the domains and outputs (CMP-01 invariant 1)"
            )
        if facts.details.get("determinism") and not facts.details["determinism"]["equal"]:
            facts.failed = True
            facts.reason = "declared deterministic but two runs produced different outputs"
        if facts.details.get("real_tree_changed"):
            facts.failed = True
            facts.reason = (
                f"catalytic domain(s) {', '.join(facts.details['real_tree_changed'])} changed on the real "
                "tree, past the overlay (through an inherited descriptor or a /proc path)"
            )
        elif facts.details.get("real_tree_error"):
            facts.failed = True
            facts.reason = f"the real domains could not be checked again: {facts.details['real_tree_error']}"
        # A failed command with clean domains is not a contract violation: its exit code reports it.
        self.options.emit(event("nothing_committed"))
        if not self.options.discard and self.upper:
            facts.quarantine = str(self._quarantine())
            self.options.emit(event("write_set_kept", path=facts.quarantine))
        return facts

    def _check_determinism(self, facts: Facts) -> bool:
        from catalytic.runner import run_child

        first, _ = self._outputs_digest(self.upper_dir, self.upper)
        upper2 = self._layer()
        self.options.emit(event("determinism_second_run"))
        child = run_child(self._wrap(self.command, upper2))
        real, error = self._real_changes()
        if real or error is not None:  # the second run reached the real domains: nothing is committed
            facts.details["real_tree_changed"] = sorted(real)
            if error is not None:
                facts.details["real_tree_error"] = f"{error.code}: {error.message}"
            self.options.emit(event("determinism_real_changed"))
            return False
        second_upper = scan_upper(upper2, xattr_prefix())
        second, _ = self._outputs_digest(upper2, second_upper)
        equal = first == second and child.exit_code == 0
        facts.details["determinism"] = {
            "first": first,
            "second": second,
            "second_exit_code": child.exit_code,
            "equal": equal,
        }
        self.options.emit(event("determinism_result", equal=equal))
        return equal

    def _staging_for(self, index: int, target: Path) -> Path:
        """Where output ``index`` is built: the ledger directory, or next to it across filesystems."""
        stage = self.ledger_dir / "commit"
        stage.mkdir(exist_ok=True)
        parent = target.parent
        while not parent.exists():
            parent = parent.parent
        if os.stat(stage).st_dev == os.stat(parent).st_dev:
            return stage / str(index)
        return target.parent / f".{target.name}.catalytic-commit-{self.policy.run_id}"

    def _commit(self, facts: Facts) -> None:
        """Commit every declared output the command changed, all or none (see :mod:`.journal`)."""
        from catalytic import faults
        from catalytic.isolation import journal

        root = self.policy.root
        runs_root = root / self.policy.runs_root
        plan: list[tuple[str, Path, list[Entry], dict[str, str], bool]] = []
        entries_doc: list[dict[str, Any]] = []
        for index, out in enumerate(self.policy.durable_outputs):
            lower = snapshot_tree(root / out, self.policy.hash).entries
            absent, _hidden, touched = hidden_from(self.upper, out)
            if not touched and not absent:
                facts.commits.append({"path": out, "action": "unchanged"})
                continue
            entries, gone, sources = merged_tree(
                lower, self.upper_dir, self.upper, out, self.policy.hash, domain_left_out(self.policy, out)
            )
            staged = self._staging_for(index, root / out)
            plan.append((out, staged, list(entries), sources, gone))
            action = "deleted" if gone else "committed"
            entries_doc.append({"path": out, "action": action, "staged": str(staged)})
        if not plan:
            facts.committed = True
            self.options.emit(event("outputs_committed", checked=len(facts.commits)))
            return
        path = journal.write(runs_root, self.policy.run_id, "staging", root, entries_doc)
        try:
            for out, staged, entries, sources, gone in plan:
                faults.point("overlay.build")
                if not gone:
                    self._build(out, staged, entries, sources)
        except BaseException:
            journal.cleanup(path, entries_doc)
            raise
        journal.write(runs_root, self.policy.run_id, "swapping", root, entries_doc)
        faults.point("overlay.staged")
        journal.swap_all(root, entries_doc)
        journal.cleanup(path, entries_doc)
        with contextlib.suppress(OSError):
            (self.ledger_dir / "commit").rmdir()
        for out, _staged, entries, _sources, gone in plan:
            if gone:
                facts.commits.append({"path": out, "action": "deleted"})
                continue
            after = snapshot_tree(root / out, self.policy.hash).entries
            verified = [(e.path, e.value, e.mode) for e in after] == [
                (e.path, e.value, e.mode) for e in entries
            ]
            facts.commits.append({"path": out, "action": "committed", "verified": verified})
            if not verified:
                facts.failed = True
                facts.reason = f"the committed output {out} does not match what the command wrote"
        facts.committed = not facts.failed
        self.options.emit(event("outputs_committed", checked=len(facts.commits)))

    def _build(self, out: str, built: Path, entries: list[Entry], sources: dict[str, str]) -> None:
        """Build the complete new tree of output ``out`` at ``built`` (which must not exist)."""
        root = self.policy.root
        remove_tree(built)
        for e in entries:
            src_base = self.upper_dir if sources.get(e.path) == "upper" else root
            rel = paths.join(out, e.path)
            _copy_entry(src_base / rel, built if e.path == paths.ROOT else built / e.path, e)
        for e in sorted(entries, key=lambda x: paths.sort_key(x.path), reverse=True):
            if e.value == DIR and e.mode is not None:
                os.chmod(built if e.path == paths.ROOT else built / e.path, bits_of(e.mode))

    def _quarantine(self) -> Path:
        quarantine = self.ledger_dir / "quarantine"
        tree = quarantine / "upper"
        tree.mkdir(parents=True, exist_ok=True)
        listing: list[dict[str, Any]] = []
        for rel, u in self.upper.items():
            listing.append({"path": rel, "kind": u.kind, "opaque": u.opaque})
            src, dst = self.upper_dir / rel, tree / rel
            with contextlib.suppress(OSError):
                if u.kind == "dir":
                    dst.mkdir(parents=True, exist_ok=True)
                elif u.kind == "symlink":
                    os.symlink(os.readlink(src), dst)
                elif u.kind == "file":
                    shutil.copy2(src, dst, follow_symlinks=False)
        write_json(quarantine / "WRITE_SET.json", listing)
        return quarantine

    def close(self) -> None:
        for spools in self.real_spools:
            spools.close()
        with contextlib.suppress(OSError):
            remove_tree(self.tmp)


def stale_layers(tmpdir: Path | None = None) -> list[Path]:
    """Overlay temporary directories left by runtimes that no longer exist (killed with SIGKILL)."""
    base = Path(tmpdir or tempfile.gettempdir())
    stale: list[Path] = []
    for candidate in sorted(base.glob(f"{TMP_PREFIX}*")):
        try:
            pid = int((candidate / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue  # not ours, or still being set up
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            stale.append(candidate)
        except PermissionError:
            continue  # alive, someone else's
    return stale


def remove_layers(layers: Sequence[Path]) -> None:
    for layer in layers:
        with contextlib.suppress(OSError):
            remove_tree(layer)


__all__ = ["OverlayIsolation", "remove_layers", "stale_layers", "unavailable_reason"]
