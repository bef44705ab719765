"""``overlay`` (Linux): the command sees the workspace root through overlayfs in its own mount namespace.

The command is spawned as ``unshare -m --propagation private [-r] sh -c 'mount -t overlay ... ROOT;
cd CWD; exec COMMAND'``: the overlay is mounted over the workspace root inside a private mount
namespace (as root directly, rootless through an unprivileged user namespace with ``userxattr``), so
the command's paths are unchanged and every write lands in an upper directory kept outside the root
(a temporary directory). ``unshare`` and ``sh`` exec in place, so the runner's signal forwarding
reaches the command itself. The real tree is never modified while the command runs.

Afterwards the upper layer is the exact write set. The post-run snapshot of each domain is the
pre-run snapshot (the lower layer, unchanged) merged with the upper layer by overlayfs' own rules:
a whiteout (0/0 character device, or a file with the ``overlay.whiteout`` xattr) deletes an entry and
everything below it, an opaque directory hides the lower directory's content, any other upper entry
replaces the lower one. Mounts use ``redirect_dir=off`` and ``metacopy=off`` (the default when
``userxattr`` is used), so no other overlay metadata exists. Nested mounts inside the workspace are not
seen through a single overlay: the command sees the underlying directory there.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalytic import paths
from catalytic.errors import SnapshotError
from catalytic.isolation import Facts, IsolationError, IsolationName, Options, Outcome
from catalytic.isolation.restore import _remove
from catalytic.ledger.canonical import encode, write_json
from catalytic.policy import Policy
from catalytic.snapshot import DomainSnapshot, Entry, WalkStats, snapshot_tree
from catalytic.snapshot.entry import DIR, kind_of

MOUNT_SCRIPT = (
    'mount -t overlay overlay -o "$1" "$2" || exit 125; '
    ': > "$4" || exit 125; '
    'cd -- "$3" 2>/dev/null || cd /; '
    'shift 4; exec "$@"'
)
_BAD_CHARS = (",", ":", "\\", "\n")
_probe_cache: dict[str, str | None] = {}


@dataclass(frozen=True)
class UpperEntry:
    """One entry of the upper layer: what the command wrote."""

    rel: str
    kind: str  # file | dir | symlink | whiteout | other
    opaque: bool = False
    mode: int = 0


def rootless() -> bool:
    return os.geteuid() != 0


def _xattr_prefix() -> str:
    return "user.overlay." if rootless() else "trusted.overlay."


def mount_options(lower: Path, upper: Path, work: Path) -> str:
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if rootless():
        return opts + ",userxattr"
    return opts + ",redirect_dir=off,metacopy=off,index=off"


def unshare_argv() -> list[str]:
    unshare = shutil.which("unshare") or "unshare"
    argv = [unshare, "--mount", "--propagation", "private"]
    if rootless():
        argv.insert(1, "--map-root-user")
    return argv


def unavailable_reason(root: Path) -> str | None:
    """None when an overlay over ``root`` can be mounted here, else why not (one line)."""
    key = f"{root}:{os.geteuid()}"
    if key not in _probe_cache:
        _probe_cache[key] = _probe(root)
    return _probe_cache[key]


def _probe(root: Path) -> str | None:
    if not sys.platform.startswith("linux"):
        return f"overlayfs is Linux-only (this is {sys.platform})"
    if shutil.which("unshare") is None:
        return "the util-linux 'unshare' program is not installed"
    bad = [c for c in _BAD_CHARS if c in str(root)]
    if bad:
        return (
            f"the workspace root {str(root)!r} contains {bad[0]!r}, which overlay mount options cannot carry"
        )
    with tempfile.TemporaryDirectory(prefix="catalytic-probe-") as tmp:
        base = Path(tmp)
        if paths.is_within(str(base), str(root)) or str(base).startswith(str(root) + "/"):
            return f"the temporary directory {tmp} is inside the workspace root"
        for name in ("upper", "work", "mnt"):
            (base / name).mkdir()
        opts = mount_options(root, base / "upper", base / "work")
        cmd = [*unshare_argv(), "--", "mount", "-t", "overlay", "overlay", "-o", opts, str(base / "mnt")]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"cannot start unshare: {exc}"
        with contextlib.suppress(OSError):
            _remove(base / "work")
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            msg = detail[-1] if detail else f"exit {proc.returncode}"
            if rootless() and "unshare" in msg:
                return f"unprivileged user namespaces are not available ({msg})"
            return f"the overlay mount was refused ({msg})"
    return None


def scan_upper(upper: Path) -> dict[str, UpperEntry]:
    """Every entry of the upper layer by workspace-relative path (the root itself excluded)."""
    prefix = _xattr_prefix()
    found: dict[str, UpperEntry] = {}

    def xattr(p: str, name: str) -> bytes | None:
        try:
            return os.getxattr(p, prefix + name, follow_symlinks=False)
        except OSError:
            return None

    def visit(directory: str, rel_prefix: str) -> None:
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
                visit(d.path, rel + "/")
            elif stat.S_ISREG(st.st_mode):
                white = st.st_size == 0 and xattr(d.path, "whiteout") is not None
                found[rel] = UpperEntry(rel, "whiteout" if white else "file")
            elif stat.S_ISLNK(st.st_mode):
                found[rel] = UpperEntry(rel, "symlink")
            else:
                found[rel] = UpperEntry(rel, "other")

    if upper.is_dir():
        visit(str(upper), "")
    return found


def _hidden_from(upper: dict[str, UpperEntry], target: str) -> tuple[bool, bool, bool]:
    """For a workspace path: (absent, lower hidden, touched) from its ancestors' and its own upper entries."""
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
    return False, hidden, touched or any(paths.is_within(r, target) for r in upper if target != paths.ROOT)


def merged_tree(
    lower_entries: Sequence[Entry], upper_dir: Path, upper: dict[str, UpperEntry], target: str, algorithm: str
) -> tuple[list[Entry], bool, dict[str, str]]:
    """The entries of ``target`` as the command left it (lower + upper).

    Returns the entries (sorted), whether the tree is absent, and for each entry taken from the upper
    layer its source ("upper").
    """
    absent, hidden, touched = _hidden_from(upper, target)
    if target == paths.ROOT:
        touched = bool(upper)
    if absent:
        return [], True, {}
    if not touched:
        return list(lower_entries), not lower_entries, {}
    base: dict[str, Entry] = {} if hidden else {e.path: e for e in lower_entries}
    up_snap = snapshot_tree(upper_dir if target == paths.ROOT else upper_dir / target, algorithm)
    sources: dict[str, str] = {}

    def drop_below(rel: str) -> None:
        prefix = "" if rel == paths.ROOT else rel + "/"
        for k in [k for k in base if k != rel and k.startswith(prefix)]:
            del base[k]
            sources.pop(k, None)

    for e in up_snap.entries:
        if e.path == paths.ROOT and target == paths.ROOT:
            continue  # the workspace root itself: its attributes are the lower one's
        u = upper.get(paths.join(target, e.path))
        kind = u.kind if u is not None else ("dir" if e.value == DIR else "file")
        replaced = e.path in base and base[e.path].value != DIR
        if kind != "dir" or (u is not None and u.opaque) or replaced:
            drop_below(e.path)
        if kind == "whiteout":
            base.pop(e.path, None)
            sources.pop(e.path, None)
            continue
        base[e.path] = e
        sources[e.path] = "upper"
    entries = sorted(base.values(), key=lambda x: paths.sort_key(x.path))
    return entries, not entries, sources


def _declared(policy: Policy, rel: str) -> str | None:
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
    """Upper-layer entries outside the domains and declared outputs (CMP-01 invariant 1)."""
    roots = [*policy.catalytic_domains, *policy.durable_outputs]
    found: list[dict[str, str]] = []
    for rel, u in upper.items():
        if _declared(policy, rel) is not None:
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


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return bool(rc == 0)


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
        os.chmod(dst, int(entry.mode, 8))


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
        self.tmp = Path(tempfile.mkdtemp(prefix=f"catalytic-overlay-{policy.run_id}-"))
        self.command: list[str] = []
        self.layers: list[Path] = []
        self.upper_dir = self._layer()
        self.upper: dict[str, UpperEntry] = {}
        self.mount_failed = False

    def _layer(self) -> Path:
        layer = self.tmp / f"layer{len(self.layers)}"
        for name in ("upper", "work"):
            (layer / name).mkdir(parents=True)
        # The merged root takes the upper root's attributes: make them the workspace root's.
        os.chmod(layer / "upper", stat.S_IMODE(os.stat(self.policy.root).st_mode))
        self.layers.append(layer)
        return layer / "upper"

    def prepare(self, pre: Sequence[DomainSnapshot]) -> None:
        del pre

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
        self, pre: Sequence[DomainSnapshot]
    ) -> tuple[list[DomainSnapshot], SnapshotError | None] | None:
        if not (self.upper_dir.parent / "mounted").exists():
            self.mount_failed = True
            return [], SnapshotError(
                "the overlay could not be mounted for the command (see its stderr)",
                path=paths.ROOT,
                code="OVERLAY_FAILED",
            )
        self.upper = scan_upper(self.upper_dir)
        post: list[DomainSnapshot] = []
        for snap in pre:
            try:
                entries, absent, _src = merged_tree(
                    snap.entries, self.upper_dir, self.upper, snap.domain, self.policy.hash
                )
            except SnapshotError as exc:
                return post, exc
            entries = _exclude(self.policy, snap.domain, entries)
            stats = WalkStats(absent=absent)
            stats.files = sum(1 for e in entries if kind_of(e.value) == "file")
            stats.dirs = sum(1 for e in entries if e.value == DIR)
            post.append(DomainSnapshot(snap.domain, tuple(entries), stats))
            self.options.say(
                f"Snapshots post: {snap.domain} ({'absent' if absent else f'{stats.files} files'}, "
                "lower + upper)"
            )
        return post, None

    def _outputs_digest(self, upper_dir: Path, upper: dict[str, UpperEntry]) -> tuple[str, dict[str, Any]]:
        manifest: dict[str, Any] = {}
        for out in self.policy.durable_outputs:
            lower = snapshot_tree(self.policy.root / out, self.policy.hash).entries
            entries, absent, _ = merged_tree(lower, upper_dir, upper, out, self.policy.hash)
            manifest[out] = None if absent else {e.path: [e.value, e.mode] for e in entries}
        return hashlib.sha256(encode(manifest)).hexdigest(), manifest

    def finish(self, outcome: Outcome) -> Facts:
        facts = Facts(undeclared_writes=[], committed=False)
        facts.details["upper_entries"] = len(self.upper)
        excluded = {d: domain_excludes(self.policy, d) for d in self.policy.catalytic_domains}
        if any(excluded.values()):
            facts.details["excluded_from_domains"] = {d: x for d, x in excluded.items() if x}
        if self.mount_failed:
            facts.failed = True
            facts.reason = "the overlay could not be mounted"
            return facts
        writes = undeclared_writes(self.policy, self.upper)
        facts.undeclared_writes = writes
        for w in writes:
            self.options.say(f"  undeclared write: {w['path']} ({w['kind']})")
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
                self.options.say(f"FAILURE: {facts.reason}")
        if writes:
            facts.failed = True
            facts.reason = (
                f"{len(writes)} undeclared write(s) outside the domains and outputs (CMP-01 invariant 1)"
            )
        elif outcome.clean and outcome.exit_code not in (0, None) and not outcome.interrupted:
            facts.reason = None  # the command failed: its own exit code reports it
        if facts.details.get("determinism") and not facts.details["determinism"]["equal"]:
            facts.failed = True
            facts.reason = "declared deterministic but two runs produced different outputs"
        self.options.say("Overlay: nothing committed to the real tree")
        if not self.options.discard and self.upper:
            facts.quarantine = str(self._quarantine())
            self.options.say(f"Overlay: the write set is kept in {facts.quarantine}")
        return facts

    def _check_determinism(self, facts: Facts) -> bool:
        from catalytic.runner import run_child

        first, _ = self._outputs_digest(self.upper_dir, self.upper)
        upper2 = self._layer()
        self.options.say("Determinism check: running the command a second time in its own overlay...")
        child = run_child(self._wrap(self.command, upper2))
        second_upper = scan_upper(upper2)
        second, _ = self._outputs_digest(upper2, second_upper)
        equal = first == second and child.exit_code == 0
        facts.details["determinism"] = {
            "first": first,
            "second": second,
            "second_exit_code": child.exit_code,
            "equal": equal,
        }
        self.options.say(f"Determinism check: outputs {'identical' if equal else 'DIFFER'}")
        return equal

    def _commit(self, facts: Facts) -> None:
        root = self.policy.root
        for out in self.policy.durable_outputs:
            lower = snapshot_tree(root / out, self.policy.hash).entries
            absent, _hidden, touched = _hidden_from(self.upper, out)
            if not touched and not absent:
                facts.commits.append({"path": out, "action": "unchanged"})
                continue
            entries, gone, sources = merged_tree(lower, self.upper_dir, self.upper, out, self.policy.hash)
            target = root / out
            if gone:
                if os.path.lexists(target):
                    _remove(target)
                facts.commits.append({"path": out, "action": "deleted"})
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.commit-", dir=target.parent))
            built = staging / "new"
            try:
                for e in entries:
                    src_base = self.upper_dir if sources.get(e.path) == "upper" else root
                    rel = paths.join(out, e.path)
                    _copy_entry(src_base / rel, built if e.path == paths.ROOT else built / e.path, e)
                for e in sorted(entries, key=lambda x: paths.sort_key(x.path), reverse=True):
                    if e.value == DIR and e.mode is not None:
                        os.chmod(built if e.path == paths.ROOT else built / e.path, int(e.mode, 8))
                if os.path.lexists(target):
                    if not _exchange(built, target):
                        os.rename(target, staging / "old")
                        os.rename(built, target)
                else:
                    os.rename(built, target)
            finally:
                _remove(staging)
            after = snapshot_tree(target, self.policy.hash).entries
            verified = [(e.path, e.value, e.mode) for e in after] == [
                (e.path, e.value, e.mode) for e in entries
            ]
            facts.commits.append({"path": out, "action": "committed", "verified": verified})
            if not verified:
                facts.failed = True
                facts.reason = f"the committed output {out} does not match what the command wrote"
        facts.committed = not facts.failed
        self.options.say(f"Overlay: declared outputs committed ({len(facts.commits)} checked)")

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
        with contextlib.suppress(OSError):
            _remove(self.tmp)


def domain_excludes(policy: Policy, domain: str) -> list[str]:
    """Paths inside ``domain`` that its snapshot leaves out: declared outputs and the runs root."""
    return [
        p for p in (*policy.durable_outputs, policy.runs_root) if paths.is_within(p, domain) and p != domain
    ]


def _exclude(policy: Policy, domain: str, entries: Sequence[Entry]) -> list[Entry]:
    excl = [paths.parts(p)[len(paths.parts(domain)) :] for p in domain_excludes(policy, domain)]
    if not excl:
        return list(entries)
    rels = ["/".join(x) for x in excl]
    return [e for e in entries if not any(paths.is_within(e.path, r) for r in rels)]


def exclude_from_snapshot(policy: Policy, snap: DomainSnapshot) -> DomainSnapshot:
    """``snap`` without the declared outputs and runs root inside it (overlay mode only)."""
    if not domain_excludes(policy, snap.domain):
        return snap
    return DomainSnapshot(snap.domain, tuple(_exclude(policy, snap.domain, snap.entries)), snap.stats)
