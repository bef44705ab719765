"""The parallel streaming snapshot (snapshot/stream.py, dirscan.py, rowstore.py) against the reference walk.

Small trees are forced through the worker processes and split into parts of a few entries, so ordering,
splitting, the stored listings and the per-directory differences are all exercised.
"""

from __future__ import annotations

import marshal
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalytic.diff import DomainDiff, diff_entries
from catalytic.errors import SnapshotError
from catalytic.excludes import Excludes
from catalytic.ledger.canonical import iter_canonical, loads
from catalytic.snapshot import Entry, attrs, dirscan, reference_walk, scheduler, spool, stream
from catalytic.snapshot.listing import FINE_GRANULARITY_NS, STAMP
from catalytic.snapshot.merkle import merkle_root
from catalytic.snapshot.rowstore import store_path
from trees import build_tree

AGE = FINE_GRANULARITY_NS / 1e9 + 0.05
SPOOLS: list[spool.Spool] = []
LAST: dict[tuple[Path, Path], stream.DomainScan] = {}


@pytest.fixture(autouse=True)
def close_spools() -> Iterator[None]:
    yield
    while SPOOLS:
        SPOOLS.pop().close()
    LAST.clear()


@pytest.fixture
def eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers from the first entry on, and directories split every 3 entries."""
    monkeypatch.setattr(scheduler, "POOL_MIN_ENTRIES", 0)
    monkeypatch.setattr(dirscan, "SPLIT", 3)


@pytest.fixture(params=["parts", "whole"])
def layout(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Workers from the first entry on; directories split every 3 entries ("parts") or described whole
    ("whole": a directory's first description then lists and hashes in one pass, walker.listed_reading)."""
    monkeypatch.setattr(scheduler, "POOL_MIN_ENTRIES", 0)
    if request.param == "parts":
        monkeypatch.setattr(dirscan, "SPLIT", 3)
    return str(request.param)


def scan(
    tree: Path,
    store: Path,
    *,
    compare: bool = False,
    jobs: int = 2,
    trust: bool = True,
    algorithm: str = "sha256",
) -> stream.DomainScan:
    """Snapshot ``tree``; with ``compare``, as the post-run snapshot of the last one of the same tree."""
    manifest = spool.Spool(store.parent)
    modes = spool.Spool(store.parent)
    SPOOLS.extend((manifest, modes))
    snap = stream.scan_domain(
        tree,
        "d",
        algorithm,
        store_dir=store,
        manifest=manifest,
        modes=modes,
        before=LAST[(tree, store)] if compare else None,
        jobs=jobs,
        trust=trust,
    )
    LAST[(tree, store)] = snap
    return snap


def documents(snap: stream.DomainScan) -> tuple[bytes, bytes]:
    return b"".join(snap.manifest.chunks()), b"".join(snap.modes.chunks())


def expected(entries: list[Entry]) -> tuple[bytes, bytes]:
    manifest = {e.path: e.value for e in entries}
    modes = {e.path: e.mode for e in entries if e.mode is not None}
    return "".join(iter_canonical(manifest)).encode(), "".join(iter_canonical(modes)).encode()


def build(root: Path) -> Path:
    return build_tree(root, 12, extras=False)


def check_equal(tree: Path, snap: stream.DomainScan, algorithm: str = "sha256") -> list[Entry]:
    reference = list(reference_walk(tree, algorithm))
    assert documents(snap) == expected(reference)
    assert snap.merkle_root == merkle_root(reference, algorithm)
    return reference


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("algorithm", ["sha256", "blake3"])
def test_documents_and_root_equal_the_reference(
    tmp_path: Path, layout: str, jobs: int, algorithm: str
) -> None:
    tree = build(tmp_path / "t")
    store = tmp_path / "runs" / "_cache"
    store.mkdir(parents=True)
    cold = scan(tree, store, jobs=jobs, algorithm=algorithm)
    assert cold.cache == "rebuilt" and cold.report.hashed_files > 0
    check_equal(tree, cold, algorithm)
    time.sleep(AGE)  # past the racy window: the next snapshots may use the store
    scan(tree, store, jobs=jobs, algorithm=algorithm)
    warm = scan(tree, store, jobs=jobs, algorithm=algorithm)
    assert warm.cache == "used" and warm.report.hashed_files == 0 and warm.report.cache_hits > 0
    check_equal(tree, warm, algorithm)
    post = scan(tree, store, compare=True, jobs=jobs, algorithm=algorithm)
    assert post.diff == DomainDiff()
    if jobs == 2:
        assert cold.report.pool_started


def mutate(root: Path, step: int) -> None:
    actions = [
        lambda: (root / "a" / "f00").write_bytes(b"changed"),
        lambda: (root / "a" / "b").rename(root / "a" / "moved"),
        (root / "a" / "f03").unlink,
        lambda: (root / "exec.sh").chmod(0o644),
        lambda: (root / "link").unlink() or os.symlink("elsewhere", root / "link"),
        lambda: (root / "new" / "deeper").mkdir(parents=True),
        lambda: [(root / "a").joinpath(f"n{i}").write_text(str(i)) for i in range(7)],
        lambda: (root / "empty").rmdir() or (root / "empty").write_text("now a file"),
        lambda: (root / "a.txt").unlink() or (root / "a.txt").mkdir(),
    ]
    actions[step % len(actions)]()


@pytest.mark.parametrize("step", range(9))
@pytest.mark.parametrize("warm", [False, True])
def test_differences_equal_the_reference_diff(tmp_path: Path, layout: str, step: int, warm: bool) -> None:
    tree = build(tmp_path / "t")
    store = tmp_path / "runs" / "_cache"
    store.mkdir(parents=True)
    if warm:
        scan(tree, store)
        time.sleep(AGE)
    pre = scan(tree, store)
    before = check_equal(tree, pre)
    mutate(tree, step)
    post = scan(tree, store, compare=True)
    after = check_equal(tree, post)
    assert post.diff == diff_entries(before, after)
    assert post.diff is not None and not post.diff.clean
    # The store now holds the new state: a further comparison finds nothing.
    time.sleep(AGE)
    again = scan(tree, store, compare=True)
    assert again.diff == DomainDiff()


def test_store_keeps_one_answer_per_part(tmp_path: Path, eager: None) -> None:
    """Answers and entries live in tables of their own: replacing, splitting and removing parts must
    remove theirs too, or the store would grow with every run."""
    tree = build(tmp_path / "t")
    store = tmp_path / "runs" / "_cache"
    store.mkdir(parents=True)
    scan(tree, store)
    for step in range(9):
        mutate(tree, step)
        scan(tree, store, compare=True)
        scan(tree, store)
    path = store_path(store, os.path.abspath(tree), "sha256")
    conn = sqlite3.connect(path)
    try:
        parts = conn.execute("SELECT count(*) FROM parts").fetchone()[0]
        blobs = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("payloads", "entries")
        }
        orphans = conn.execute(
            "SELECT count(*) FROM payloads WHERE id NOT IN (SELECT blob FROM parts)"
        ).fetchone()[0]
    finally:
        conn.close()
    assert parts > 3 and blobs == {"payloads": parts, "entries": parts} and orphans == 0


def test_directory_removed_with_everything_below(tmp_path: Path, eager: None) -> None:
    tree = build(tmp_path / "t")
    store = tmp_path / "runs" / "_cache"
    store.mkdir(parents=True)
    pre = scan(tree, store)
    before = check_equal(tree, pre)
    for p in sorted((tree / "a").rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    (tree / "a").rmdir()
    post = scan(tree, store, compare=True)
    assert post.diff == diff_entries(before, check_equal(tree, post))
    assert "a/b/deep" in post.diff.removed


def test_domain_removed_and_created(tmp_path: Path, eager: None) -> None:
    tree = build(tmp_path / "t")
    store = tmp_path / "runs" / "_cache"
    store.mkdir(parents=True)
    before = check_equal(tree, scan(tree, store))
    os.rename(tree, tmp_path / "gone")
    post = scan(tree, store, compare=True)
    assert post.absent and post.merkle_root == merkle_root([], "sha256")
    assert post.diff == diff_entries(before, [])
    os.rename(tmp_path / "gone", tree)
    back = scan(tree, store, compare=True)
    assert back.diff == diff_entries([], before)


def test_same_size_rewrite_with_mtime_restored_is_caught(tmp_path: Path, layout: str) -> None:
    tree = build(tmp_path / "t")
    store = tmp_path / "runs" / "_cache"
    store.mkdir(parents=True)
    scan(tree, store)
    time.sleep(AGE)
    scan(tree, store)  # hashes again what was racily clean at the first snapshot
    pre = scan(tree, store)
    assert pre.report.hashed_files == 0
    target = tree / "a" / "f02"
    st = target.stat()
    target.write_bytes(bytes(b ^ 1 for b in target.read_bytes()))  # same size, other bytes
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back; ctime moves
    post = scan(tree, store, compare=True)
    assert post.diff is not None and list(post.diff.changed) == ["a/f02"]


@pytest.mark.parametrize("split", [False, True], ids=["whole", "parts"])
@pytest.mark.parametrize("change", ["rewrite", "chmod", "grow"])
def test_fingerprint_alone_catches_a_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: bool, change: str
) -> None:
    """With the racy rule switched off, only a part's fingerprint keeps its stored answer from standing for a
    changed directory, whole or split into parts."""
    monkeypatch.setattr(scheduler, "POOL_MIN_ENTRIES", 0)
    if split:
        monkeypatch.setattr(dirscan, "SPLIT", 3)
    monkeypatch.setattr(dirscan, "racy", lambda *_: False)
    tree = build(tmp_path / "t")
    store = tmp_path / "runs" / "_cache"
    store.mkdir(parents=True)
    scan(tree, store)
    pre = scan(tree, store)
    assert pre.report.hashed_files == 0  # every part answered from the store
    target = tree / "a" / "f02"
    st = target.stat()
    if change == "rewrite":  # same size, other bytes, mtime put back: the ctime differs
        target.write_bytes(bytes(b ^ 1 for b in target.read_bytes()))
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif change == "chmod":
        target.chmod(0o600)
    else:
        with target.open("ab") as out:
            out.write(b"!")
    post = scan(tree, store, compare=True)
    assert post.diff is not None and list(post.diff.changed) == ["a/f02"]
    check_equal(tree, post)


def test_racily_clean_file_is_hashed_again(tmp_path: Path, layout: str) -> None:
    tree = build(tmp_path / "t")
    store = tmp_path / "runs" / "_cache"
    store.mkdir(parents=True)
    target = tree / "a" / "f04"
    pre = scan(tree, store)  # written within the granularity of this snapshot: racily clean
    st = target.stat()
    target.write_bytes(bytes(b ^ 1 for b in target.read_bytes()))
    # Every timestamp put back as it was: only the racy rule can see this change.
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    post = scan(tree, store, compare=True)
    assert pre.report.hashed_files > 0
    assert post.diff is not None and "a/f04" in post.diff.changed


@pytest.mark.parametrize("damage", ["garbage", "foreign", "row"])
def test_damaged_store_is_rebuilt_never_trusted(tmp_path: Path, eager: None, damage: str) -> None:
    tree = build(tmp_path / "t")
    store = tmp_path / "runs" / "_cache"
    store.mkdir(parents=True)
    scan(tree, store)
    time.sleep(AGE)
    path = store_path(store, os.path.abspath(tree), "sha256")
    forged = "0" * 64
    if damage == "garbage":
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.write_bytes(b"not a database" * 100)
    else:
        conn = sqlite3.connect(path)
        if damage == "foreign":
            conn.execute("UPDATE meta SET value = '/elsewhere' WHERE name = 'directory'")
        else:  # a stored digest changed behind the CRC's back
            ref = "(SELECT blob FROM parts WHERE dir = ?)"
            blob = conn.execute(f"SELECT rows FROM entries WHERE id = {ref}", (b"a",)).fetchone()[0]
            rows = [(*r[:8], forged, r[9]) if r[0] == b"f02" else r for r in marshal.loads(blob)]
            conn.execute(f"UPDATE entries SET rows = ? WHERE id = {ref}", (marshal.dumps(rows), b"a"))
        conn.commit()
        conn.close()
    snap = scan(tree, store)
    assert snap.cache == ("used" if damage == "row" else "rebuilt")
    reference = check_equal(tree, snap)
    assert forged not in {e.value for e in reference}
    assert forged.encode() not in documents(snap)[0]


def test_no_cache_hashes_everything(tmp_path: Path, layout: str) -> None:
    tree = build(tmp_path / "t")
    store = tmp_path / "runs" / "_cache"
    store.mkdir(parents=True)
    scan(tree, store)
    time.sleep(AGE)
    snap = scan(tree, store, trust=False)
    assert snap.cache == "disabled" and snap.report.cache_hits == 0
    files = [p for p in tree.rglob("*") if p.is_file() and not p.is_symlink()]
    assert snap.report.hashed_files == len(files) == 19
    check_equal(tree, snap)


def test_store_gone_before_the_post_snapshot_is_a_store_error(tmp_path: Path, eager: None) -> None:
    tree = build(tmp_path / "t")
    store = tmp_path / "runs" / "_cache"
    store.mkdir(parents=True)
    scan(tree, store)
    for p in store.iterdir():
        p.unlink()
    with pytest.raises(SnapshotError) as info:
        scan(tree, store, compare=True)
    assert info.value.code == "STORE"


def test_vanished_directory_is_an_error_not_a_skip(
    tmp_path: Path, eager: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = build(tmp_path / "t")
    store = tmp_path / "runs" / "_cache"
    store.mkdir(parents=True)
    original = dirscan._open

    def swap_then_open(config: dirscan.ScanConfig, rel: str, dev: int, ino: int) -> int:
        if rel == "a/b":
            os.rename(tree / "a" / "b", tmp_path / "elsewhere")
            os.mkdir(tree / "a" / "b")  # same name, another directory
        return original(config, rel, dev, ino)

    monkeypatch.setattr(dirscan, "_open", swap_then_open)
    with pytest.raises(SnapshotError) as info:
        scan(tree, store, jobs=1)
    assert info.value.code == "VANISHED" and info.value.path == "a/b"


NAMES = st.sampled_from(["a", "a.b", "a-b", "b", "ä", "z", "ax", "a0"])
TREES = st.recursive(
    st.one_of(st.binary(max_size=40), st.just(None)),
    lambda children: st.dictionaries(NAMES, children, max_size=5),
    max_leaves=25,
)


def materialise(root: Path, tree: object) -> None:
    if isinstance(tree, dict):
        root.mkdir()
        for name, child in tree.items():
            materialise(root / name, child)
    elif tree is None:
        os.symlink("target", root)
    else:
        assert isinstance(tree, bytes)
        root.write_bytes(tree)


def rebuild(tree: Path, shape: object) -> None:
    if tree.exists():
        for p in sorted(tree.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()
        tree.rmdir()
    materialise(tree, {"top": shape})


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(older=TREES, before=TREES, after=TREES)
def test_generated_trees_and_diffs(
    tmp_path_factory: pytest.TempPathFactory, older: object, before: object, after: object
) -> None:
    """A store left by an older tree, a pre-run snapshot, another tree, the post-run comparison."""
    base = tmp_path_factory.mktemp("gen")
    store = base / "runs" / "_cache"
    store.mkdir(parents=True)
    old = scheduler.POOL_MIN_ENTRIES, dirscan.SPLIT
    scheduler.POOL_MIN_ENTRIES, dirscan.SPLIT = 0, 2
    try:
        tree = base / "t"
        rebuild(tree, older)
        scan(tree / "top", store)
        rebuild(tree, before)
        pre = scan(tree / "top", store)
        first = check_equal(tree / "top", pre)
        rebuild(tree, after)
        post = scan(tree / "top", store, compare=True)
        second = check_equal(tree / "top", post)
        assert post.diff == diff_entries(first, second)
    finally:
        scheduler.POOL_MIN_ENTRIES, dirscan.SPLIT = old


def test_run_ledger_streams_the_same_documents(tmp_path: Path) -> None:
    """A whole run: the spooled PRE_MANIFEST equals what the in-memory path would have written."""
    from catalytic.cli import main

    ws = tmp_path / "ws"
    build(ws / "d")
    code = main(["run", "-q", "--root", str(ws), "--run-id", "r1", "--catalytic-domains", "d", "--", "true"])
    assert code == 0
    ledger = ws / ".catalytic" / "runs" / "r1"
    reference = list(reference_walk(ws / "d"))
    manifest, modes = expected(reference)
    assert (ledger / "PRE_MANIFEST.json").read_bytes() == b'{"d":' + manifest + b"}\n"
    assert (ledger / "POST_MODES.json").read_bytes() == b'{"d":' + modes + b"}\n"
    info = loads((ledger / "RUN_INFO.json").read_bytes())
    assert info["merkle_format"] == "catalytic.merkle/2"
    assert info["merkle_roots"]["d"]["pre"] == merkle_root(reference, "sha256")


@pytest.mark.parametrize("failing_call", [1, 2])
def test_unusable_store_falls_back_to_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], failing_call: int
) -> None:
    """A store that cannot be written (a full disk) costs the streaming, never the proof."""
    from catalytic.cli import main
    from catalytic.validate import CatalyticLedgerValidator

    ws = tmp_path / "ws"
    build(ws / "d")
    calls = []
    original = stream.prepare

    def prepare(path: Path, directory: str, algorithm: str) -> str:
        calls.append(path)
        if len(calls) == failing_call:
            raise sqlite3.OperationalError("database or disk is full")
        return original(path, directory, algorithm)

    monkeypatch.setattr(stream, "prepare", prepare)
    args = ["run", "--root", str(ws), "--run-id", "r1", "--catalytic-domains", "d", "--"]
    script = f"open({str(ws / 'd' / 'a' / 'f00')!r}, 'w').write('changed')"
    code = main([*args, sys.executable, "-c", script])
    assert code == 4
    assert "cannot be used: database or disk is full" in capsys.readouterr().err
    ledger = ws / ".catalytic" / "runs" / "r1"
    diff = loads((ledger / "RESTORE_DIFF.json").read_bytes())
    assert list(diff["d"]["changed"]) == ["a/f00"] and not diff["d"]["added"] and not diff["d"]["removed"]
    ok, report = CatalyticLedgerValidator(ledger).validate()
    assert not ok and {e["code"] for e in report["errors"]} == {"NOT_RESTORED", "DIRTY"}  # and nothing else


def test_wide_and_deep_tree_through_the_window(tmp_path: Path, eager: None) -> None:
    """More directories than answers may wait, nested: every task is sent and put in order exactly once."""
    tree = tmp_path / "t"
    for i in range(60):
        sub = tree / f"d{i:02d}" / "x" / ("y" * (i % 3 + 1))
        sub.mkdir(parents=True)
        for j in range(i % 5):
            (sub / f"f{j}").write_text(f"{i}-{j}")
    store = tmp_path / "runs" / "_cache"
    store.mkdir(parents=True)
    before = check_equal(tree, scan(tree, store))
    (tree / "d06" / "x" / "y" / "new").write_text("new")
    post = scan(tree, store, compare=True)
    assert post.diff == diff_entries(before, check_equal(tree, post))
    assert list(post.diff.added) == ["d06/x/y/new"]


@pytest.mark.parametrize("budget", [1, 10, 4096])
def test_many_small_directories_go_to_workers_as_amounts_of_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    """A tree of many small directories: a worker's task answers subdirectories too, up to its budget, and
    whole directories left waiting go to a worker several at a time, so the round trips to the workers are
    far fewer than the directories; the documents, the Merkle root and the differences still equal the
    reference walk's, cold, warm and compared."""
    from catalytic.snapshot import forkpool

    monkeypatch.setattr(scheduler, "POOL_MIN_ENTRIES", 0)
    monkeypatch.setattr(scheduler, "BUDGET", budget)
    sent: list[object] = []
    submit = forkpool.ForkPool.submit

    def counting(self: forkpool.ForkPool, argument: Any, worker: int | None = None) -> int:
        sent.append(argument)
        return submit(self, argument, worker)

    monkeypatch.setattr(forkpool.ForkPool, "submit", counting)
    tree = tmp_path / "t"
    for i in range(8):
        for j in range(6):
            sub = tree / f"a{i}" / f"b{j}" / "c"
            sub.mkdir(parents=True)
            (sub.parent / "f").write_text(f"{i}{j}")
            (sub / "g").write_text(f"{j}{i}")
    directories = sum(1 for p in tree.rglob("*") if p.is_dir()) + 1
    store = tmp_path / "runs" / "_cache"
    store.mkdir(parents=True)
    for _cold_then_warm in range(2):
        sent.clear()
        before = check_equal(tree, scan(tree, store))
        if budget == 4096:  # the top alone, then its 8 subtrees whole, several to a message
            assert len(sent) < 1 + 8, len(sent)
        elif budget == 10:  # subtrees cut short by the budget: what is left goes several to a message
            assert len(sent) < directories, (len(sent), directories)
        else:  # the budget bounds what a message answers: here, one directory each
            assert len(sent) >= directories, (len(sent), directories)
        assert all(len(tasks) >= 1 for _budget, tasks in sent)
    (tree / "a3" / "b2" / "c" / "g").write_text("changed")
    (tree / "a7" / "b5" / "c" / "new").write_text("new")
    post = scan(tree, store, compare=True)
    assert post.diff == diff_entries(before, check_equal(tree, post))
    assert list(post.diff.changed) == ["a3/b2/c/g"]
    assert list(post.diff.added) == ["a7/b5/c/new"]


def test_empty_domain_needs_no_store(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    store = tmp_path / "runs" / "_cache"
    store.mkdir(parents=True)
    pre = scan(tree, store)
    assert not pre.stored and list(store.iterdir()) == []
    (tree / "new").write_text("x")
    post = scan(tree, store, compare=True)
    assert post.diff is not None and list(post.diff.added) == ["new"] and post.stored
    again = scan(tree, store, compare=True)
    assert again.diff == DomainDiff()


def test_spool_moves_to_an_unnamed_file_past_its_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool.Spool, "LIMIT", 64)
    box = spool.Spool(tmp_path)
    SPOOLS.append(box)
    first = box.size
    pieces = [f"piece {i} ✓," for i in range(200)]
    for piece in pieces[:100]:
        box.write(piece)
    middle = box.size
    for piece in pieces[100:]:
        box.write(piece)
    assert box.fd >= 0 and list(tmp_path.iterdir()) == []  # on disk, under no name
    assert b"".join(box.read(first, middle)) == "".join(pieces[:100]).encode()
    assert b"".join(box.read(middle, box.size)) == "".join(pieces[100:]).encode()


def test_directory_of_big_files_is_split_by_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files bigger than a part are hashed by different workers, and the parts give the same documents."""
    monkeypatch.setattr(dirscan, "PART_BYTES", 1 << 16)
    tree = tmp_path / "t"
    (tree / "sub").mkdir(parents=True)
    for i in range(6):
        (tree / f"big{i}").write_bytes(os.urandom(100_000 + i))
    (tree / "sub" / "small").write_text("small")
    store = tmp_path / "runs" / "_cache"
    store.mkdir(parents=True)
    cold = scan(tree, store)
    assert cold.report.pool_started and cold.report.tasks >= 7  # the split answer, then a part per file
    check_equal(tree, cold)
    time.sleep(AGE)
    scan(tree, store)
    (tree / "big3").write_bytes(b"changed")
    post = scan(tree, store, compare=True)
    assert post.diff is not None and list(post.diff.changed) == ["big3"]
    check_equal(tree, post)


def test_gc_removes_the_caches_of_directories_that_are_gone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from catalytic.cli import main

    ws = tmp_path / "ws"
    for name in ("keep", "gone"):
        build(ws / name)
        args = ["run", "-q", "--root", str(ws), "--run-id", f"r-{name}", "--catalytic-domains", name]
        assert main([*args, "--", "true"]) == 0
    cache = ws / ".catalytic" / "runs" / "_cache"
    stores = {p.name for p in cache.glob("*.rows.sqlite")}
    assert len(stores) == 2
    (cache / "junk.sqlite").write_bytes(b"not a database")
    for p in sorted((ws / "gone").rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()
    (ws / "gone").rmdir()
    assert main(["gc", "--root", str(ws), "--dry-run", "--json"]) == 0
    report = loads(capsys.readouterr().out)
    assert len(report["caches"]) == 2 and {p.name for p in cache.glob("*.sqlite")} >= stores
    assert main(["gc", "--root", str(ws), "-q"]) == 0
    left = {p.name for p in cache.iterdir()}
    kept = store_path(cache, str(ws / "keep"), "sha256").name
    assert kept in left and "junk.sqlite" not in left and len([n for n in left if n.endswith(".sqlite")]) == 1
    assert (
        main(
            ["run", "-q", "--root", str(ws), "--run-id", "again", "--catalytic-domains", "keep", "--", "true"]
        )
        == 0
    )


def test_hash_files_only_hashes_the_file_as_listed(tmp_path: Path) -> None:
    """The optimistic hash gives up (None) on any difference from the listing; the careful path decides."""
    import hashlib

    from catalytic.snapshot.walker import hash_files

    (tmp_path / "f").write_bytes(b"before")
    st = os.lstat(tmp_path / "f")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        got = hash_files(fd, [("f", st)], hashlib.sha256)[0]
        assert got is not None and got[0] == hashlib.sha256(b"before").hexdigest()
        (tmp_path / "f").write_bytes(b"changed")  # same name, other size and times
        assert hash_files(fd, [("f", st)], hashlib.sha256)[0] is None
        (tmp_path / "f").unlink()
        assert hash_files(fd, [("f", st)], hashlib.sha256)[0] is None
        (tmp_path / "f").mkdir()
        assert hash_files(fd, [("f", st)], hashlib.sha256)[0] is None
    finally:
        os.close(fd)


def test_hash_files_answers_a_mixed_batch_in_order(tmp_path: Path) -> None:
    """Small files in one read, a file past CHUNK through the chunked path, and files that are no longer as
    listed (rewritten with the same size, now a symlink) answered None, each at its own place."""
    import hashlib

    from catalytic.snapshot.walker import CHUNK, hash_files

    big = os.urandom(1024) * (CHUNK // 1024 + 3)
    contents = {"a": b"alpha", "big": big, "c": b"same size", "d": b"delta", "e": b""}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    listed = [(name, os.lstat(tmp_path / name)) for name in contents]
    time.sleep(AGE)
    (tmp_path / "c").write_bytes(b"SAME SIZE")  # same size, new times
    (tmp_path / "d").unlink()
    (tmp_path / "d").symlink_to("a")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        got = hash_files(fd, listed, hashlib.sha256)
    finally:
        os.close(fd)
    digests = [None if answer is None else answer[0] for answer in got]
    expected = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    assert digests == [expected["a"], expected["big"], None, None, expected["e"]]
    # Each answer carries the file's STAMP fields as they were after the read: the listing's.
    assert got[1] is not None and got[1][1] == STAMP(listed[1][1])
    assert got[1][1][2] == len(big)


@pytest.mark.parametrize("batch", [2, 64])
def test_hash_files_asks_for_a_batch_of_pages_then_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    """Every small file of a batch is opened and its pages asked for (POSIX_FADV_WILLNEED) before the batch
    is read; a FIFO swapped in for a listed file refuses the advice and is answered None; answers keep their
    order across batches and no descriptor stays open."""
    import hashlib

    from catalytic.snapshot import walker

    contents = {f"f{i}": bytes([i]) * (i + 1) for i in range(5)}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    listed = [(name, os.lstat(tmp_path / name)) for name in contents]
    (tmp_path / "f3").unlink()
    os.mkfifo(tmp_path / "f3")
    events: list[tuple[str, int]] = []
    real_advise, real_read = walker._advise, os.read

    def advise(fd: int, offset: int, length: int, advice: int) -> None:
        events.append(("advise", length))
        real_advise(fd, offset, length, advice)

    def read(fd: int, size: int) -> bytes:
        events.append(("read", size - 1))
        return real_read(fd, size)

    monkeypatch.setattr(walker, "READ_AHEAD", batch)
    monkeypatch.setattr(walker, "_advise", advise)
    monkeypatch.setattr(os, "read", read)
    fds_before = len(os.listdir("/proc/self/fd"))
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        got = walker.hash_files(fd, listed, hashlib.sha256)
    finally:
        os.close(fd)
    assert len(os.listdir("/proc/self/fd")) == fds_before
    digests = [None if answer is None else answer[0] for answer in got]
    expected = [hashlib.sha256(data).hexdigest() for data in contents.values()]
    assert digests == [*expected[:3], None, expected[4]]
    # Sizes 1..5; per batch, the advice for each of its files comes before any of its reads.
    sizes = [len(data) for data in contents.values()]
    want: list[tuple[str, int]] = []
    for start in range(0, len(sizes), batch):
        chunk = sizes[start : start + batch]
        want += [("advise", n) for n in chunk] + [("read", n) for n in chunk]
    assert events == want


def _listed_reading(
    directory: Path, budget: int = 1 << 30
) -> tuple[list[str], list[tuple[int, ...]], dict[str, Any]]:
    import hashlib

    from catalytic.snapshot.walker import listed_reading

    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with os.scandir(fd) as it:
            listing = list(it)
        names, stats, answers = listed_reading(fd, listing, "dir", hashlib.sha256, budget)
    finally:
        os.close(fd)
    assert names == [dirent.name for dirent in listing]  # listing order: the part's fingerprint needs it
    return names, list(map(STAMP, stats)), answers


def test_listed_reading_lists_like_lstat_and_hashes_small_regular_files(tmp_path: Path) -> None:
    """Over several groups of READ_AHEAD files: every entry's stat equals its lstat, every small regular
    file is answered with its digest and those stat fields; a big file, a symlink, a FIFO and a directory
    are listed only; no descriptor stays open."""
    import hashlib

    from catalytic.snapshot.walker import CHUNK, READ_AHEAD

    contents = {f"f{i:03d}": os.urandom(i % 7 * 100) for i in range(READ_AHEAD * 2 + 5)}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "big").write_bytes(b"b" * (CHUNK + 1))
    (tmp_path / "link").symlink_to("f001")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "sub").mkdir()
    fds_before = len(os.listdir("/proc/self/fd"))
    names, stamps, answers = _listed_reading(tmp_path)
    assert len(os.listdir("/proc/self/fd")) == fds_before
    assert stamps == [STAMP(os.lstat(tmp_path / name)) for name in names]
    os.setxattr(tmp_path / "f001", "user.k", b"v")  # read with the file (its digest; no xattr: None)
    names, stamps, answers = _listed_reading(tmp_path)
    assert answers == {
        name: (
            hashlib.sha256(data).hexdigest(),
            STAMP(os.lstat(tmp_path / name)),
            attrs.digest({"user.k": b"v"}) if name == "f001" else None,
        )
        for name, data in contents.items()
    }


def test_listed_reading_leaves_a_group_it_cannot_open_to_the_careful_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that cannot be opened: its group is listed with lstat and not answered (hash_files and the
    careful path find out why); the other groups are answered. A whole snapshot then reports the file."""
    from catalytic.snapshot import walker

    monkeypatch.setattr(walker, "READ_AHEAD", 4)
    for i in range(12):
        (tmp_path / f"f{i:02d}").write_bytes(b"%d" % i)
    real_open = os.open

    def open_(path: object, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if path == "f05":
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, mode, dir_fd=dir_fd)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", open_)
    names, stamps, answers = _listed_reading(tmp_path)
    assert stamps == [STAMP(os.lstat(tmp_path / name)) for name in names]
    group = {name for name in names[names.index("f05") // 4 * 4 :][:4]}
    assert "f05" in group and set(answers) == set(names) - group
    store = tmp_path.parent / "store"
    store.mkdir()
    with pytest.raises(SnapshotError) as caught:
        scan(tmp_path, store, jobs=1)
    assert caught.value.code == "UNREADABLE" and caught.value.path == "f05"


def test_listed_reading_reports_an_entry_gone_since_listing(tmp_path: Path) -> None:
    """Entries listed by the directory but gone before they were opened or looked at: VANISHED."""
    from catalytic.snapshot.walker import listed_reading

    for kind in ("file", "link"):
        directory = tmp_path / kind
        directory.mkdir()
        (directory / "keep").write_bytes(b"k")
        if kind == "file":
            (directory / "gone").write_bytes(b"g")
        else:
            (directory / "gone").symlink_to("keep")
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with os.scandir(fd) as it:
                listing = list(it)
            (directory / "gone").unlink()
            with pytest.raises(SnapshotError) as caught:
                listed_reading(fd, listing, kind, __import__("hashlib").sha256, 1 << 30)
        finally:
            os.close(fd)
        assert caught.value.code == "VANISHED" and caught.value.path == f"{kind}/gone"


def test_listed_reading_gives_no_digest_for_a_file_changed_while_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file rewritten with the same size, or grown, after its fstat and before its read: None (the careful
    path lists it again); the rest of its group is answered."""
    import hashlib

    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(name.encode() * 10)
    real_read = os.read
    changed: list[str] = []

    def read(fd: int, size: int) -> bytes:
        target = os.readlink(f"/proc/self/fd/{fd}")
        if target.endswith(("/a", "/c")):
            time.sleep(AGE)  # a new mtime and ctime, whatever the file system's granularity
            with open(target, "r+b" if target.endswith("/a") else "ab") as out:
                out.write(b"A" * 10 if target.endswith("/a") else b"!")
            changed.append(target)
        return real_read(fd, size)

    monkeypatch.setattr(os, "read", read)
    _names, _stamps, answers = _listed_reading(tmp_path)
    assert len(changed) == 2
    assert answers["a"] is None and answers["c"] is None
    assert answers["b"] == (hashlib.sha256(b"b" * 10).hexdigest(), STAMP(os.lstat(tmp_path / "b")), None)


def test_listed_reading_stops_reading_past_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once ``budget`` bytes were read, the other files are only listed (the caller may split the directory
    by bytes, and hashes what is left)."""
    from catalytic.snapshot import walker

    monkeypatch.setattr(walker, "READ_AHEAD", 2)
    for i in range(8):
        (tmp_path / f"f{i}").write_bytes(b"x" * 100)
    names, stamps, answers = _listed_reading(tmp_path, budget=250)
    assert stamps == [STAMP(os.lstat(tmp_path / name)) for name in names]
    assert len(answers) == 4  # two groups of 200 bytes: the budget ran out during the second


def test_a_first_description_is_reused_whole_by_the_next_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory described for the first time (listed and hashed in one pass, fstat for lstat) is stored
    with the fingerprint the next listing gives: the next snapshot takes every stored answer as it is,
    describing nothing again, and the post-run snapshot finds no difference."""
    from isolation_helpers import refuse

    tree = build(tmp_path / "t")
    store = tmp_path / "runs" / "_cache"
    store.mkdir(parents=True)
    time.sleep(AGE)
    with monkeypatch.context() as first:
        refuse(first, dirscan, "listed", "a first description listed its files with lstat")
        cold = scan(tree, store, jobs=1)
    check_equal(tree, cold)
    assert cold.report.hashed_files > 0
    time.sleep(AGE)  # the store's listings are now older than the racy window
    with monkeypatch.context() as again:
        refuse(again, dirscan, "_describe", "an unchanged directory was described again")
        warm = scan(tree, store, jobs=1)
        post = scan(tree, store, jobs=1, compare=True)
    check_equal(tree, warm)
    assert warm.report.hashed_files == 0 and post.diff == DomainDiff()


def test_worker_processes_run_without_the_cyclic_collector() -> None:
    import gc

    from catalytic.snapshot.forkpool import ForkPool

    pool = ForkPool(2, lambda _argument: gc.isenabled())
    try:
        tickets = [pool.submit(None, worker) for worker in range(2)]
        assert [pool.result(ticket) for ticket in tickets] == [False, False]
    finally:
        pool.close()
    assert gc.isenabled()  # this process keeps its collector


def test_snapshot_tasks_leave_no_reference_cycles(tmp_path: Path) -> None:
    """Workers run with the cyclic collector off, so a task must leave no garbage that only the collector
    could free. A worker's tasks (first descriptions, stored answers, comparisons with differences, a task
    that fails) run here with the collector off; after the first snapshot (which imports SQLite and creates
    the store), a collection finds nothing."""
    import gc

    tree = build(tmp_path / "t")
    store = tmp_path / "runs" / "_cache"
    store.mkdir(parents=True)
    config = dirscan.ScanConfig(
        os.fsencode(tree), "sha256", store_path(store, str(tree), "sha256"), True, False, 1
    )
    top = os.stat(tree)

    def every_task(config: dirscan.ScanConfig) -> None:
        for directory in sorted({p.parent for p in tree.rglob("*")} | {tree}):
            st = os.stat(directory)
            rel = "" if directory == tree else str(directory.relative_to(tree))
            task = (rel, st.st_dev, st.st_ino, None, None)
            assert scheduler._work(config, (scheduler.BUDGET, [task]))[0] == "ok"

    gc.collect()
    gc.disable()
    try:
        every_task(config)
        gc.collect()
        found = []
        time.sleep(AGE)
        every_task(dirscan.ScanConfig(config.top, "sha256", config.store, True, False, 2))
        found.append(gc.collect())
        mutate(tree, 6)  # new files: changed directories described again
        (tree / "a" / "f00").write_bytes(b"changed")
        every_task(dirscan.ScanConfig(config.top, "sha256", config.store, True, True, 3))
        found.append(gc.collect())
        assert scheduler._work(config, (0, [("gone", top.st_dev, top.st_ino, None, None)]))[0] == "err"
        found.append(gc.collect())
    finally:
        gc.enable()
        dirscan.close_rows()
    assert found == [0, 0, 0]


def test_workers_start_before_a_big_directory_is_listed(tmp_path: Path) -> None:
    """A subdirectory's size hints at its entry count: the workers start before this process would have
    described POOL_MIN_ENTRIES entries itself (it describes only the top here), and never for a tree of
    small directories."""
    tree = tmp_path / "t"
    big = tree / "big"
    big.mkdir(parents=True)
    for i in range(1300):
        (big / f"file-{i:05d}").write_bytes(b"x")
    if (os.stat(big).st_size - 4096) // 32 < scheduler.POOL_MIN_ENTRIES:
        pytest.skip("this file system does not grow a directory's size with its entries")
    store = tmp_path / "runs" / "_cache"
    store.mkdir(parents=True)
    snap = scan(tree, store)
    assert snap.report.pool_started and snap.stats.files == 1300
    check_equal(tree, snap)

    small = tmp_path / "small"
    for i in range(40):
        (small / f"d{i:02d}").mkdir(parents=True)
        (small / f"d{i:02d}" / "f").write_bytes(b"y")
    assert not scan(small, store).report.pool_started


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_snapshot_without_a_store(tmp_path: Path, eager: None, jobs: int) -> None:
    """``store_dir=None`` (``catalytic snapshot`` without ``--cache-dir``): every file hashed, the same
    documents and root, and no file written anywhere but the spools."""
    tree = build(tmp_path / "t")
    manifest, modes = spool.Spool(tmp_path), spool.Spool(tmp_path)
    SPOOLS.extend((manifest, modes))
    before = sorted(tmp_path.iterdir())
    snap = stream.scan_domain(tree, "d", "sha256", store_dir=None, manifest=manifest, modes=modes, jobs=jobs)
    reference = check_equal(tree, snap)
    assert snap.cache == "disabled" and not snap.stored
    assert snap.report.hashed_files == sum(1 for e in reference if len(e.value) == 64)
    assert sorted(tmp_path.iterdir()) == before
    with pytest.raises(ValueError):
        stream.scan_domain(tree, "d", "sha256", store_dir=None, manifest=manifest, modes=modes, before=snap)


def test_names_that_need_json_escaping_and_plain_names(tmp_path: Path) -> None:
    """A directory whose names are written as they are in JSON and one where some need escaping (a quote, a
    tab, non-ASCII) give the reference documents and root, and the rows stored for them hold the
    reference's values and modes."""
    tree = tmp_path / "t"
    for sub, names in (("plain", ["a", "b.txt", "z"]), ("quoted", ["a", 'quo"te', "tab\there", "ünï", "z"])):
        (tree / sub).mkdir(parents=True)
        for i, name in enumerate(names):
            (tree / sub / name).write_bytes(b"%d" % i * (i + 1))
        os.chmod(tree / sub / "z", 0o600)
    snap = scan(tree, tmp_path / "cache", jobs=1)
    reference = {e.path: (e.value, e.mode) for e in check_equal(tree, snap)}
    with sqlite3.connect(store_path(tmp_path / "cache", os.fsdecode(tree), "sha256")) as conn:
        query = "SELECT dir, rows FROM parts JOIN entries ON entries.id = parts.blob"
        stored = {d.decode(): marshal.loads(blob) for d, blob in conn.execute(query) if d}
    assert sorted(stored) == ["plain", "quoted"]
    for sub, rows in stored.items():
        got = {f"{sub}/{row[0].decode()}": (row[8], row[9]) for row in rows}
        assert got == {path: value for path, value in reference.items() if path.startswith(sub + "/")}


@pytest.mark.parametrize("jobs", [1, 2])
def test_skipped_paths_are_left_out_with_everything_below(tmp_path: Path, eager: None, jobs: int) -> None:
    """``leave_out`` leaves exact paths out as if they did not exist (an overlay run's runs root and outputs
    inside a domain): the documents, root and stored rows are those of the tree without them, and a
    post-run scan that compares sees no difference when only the skipped paths changed."""
    tree = build(tmp_path / "t")
    (tree / "runs" / "deep").mkdir(parents=True)
    (tree / "runs" / "deep" / "ledger").write_text("written by the run\n")
    (tree / "sub" / "out.txt").parent.mkdir(exist_ok=True)
    (tree / "sub" / "out.txt").write_text("a declared output\n")
    skip = Excludes(exact=frozenset({"runs", "sub/out.txt"}))
    store = tmp_path / "cache"

    def scan_skipping(before: stream.DomainScan | None) -> stream.DomainScan:
        manifest, modes = spool.Spool(tmp_path), spool.Spool(tmp_path)
        SPOOLS.extend((manifest, modes))
        return stream.scan_domain(
            tree,
            "d",
            "sha256",
            store_dir=store,
            manifest=manifest,
            modes=modes,
            before=before,
            jobs=jobs,
            leave_out=skip,
        )

    pre = scan_skipping(None)
    reference = [
        e for e in reference_walk(tree) if e.path != "sub/out.txt" and not (e.path + "/").startswith("runs/")
    ]
    assert len(reference) < len(list(reference_walk(tree)))
    assert documents(pre) == expected(reference)
    assert pre.merkle_root == merkle_root(reference, "sha256")
    (tree / "runs" / "deep" / "ledger").write_text("more\n")
    (tree / "runs" / "new").write_text("new\n")
    (tree / "sub" / "out.txt").unlink()
    post = scan_skipping(pre)
    assert post.diff is not None and post.diff.clean
    assert documents(post) == expected(reference)


@pytest.mark.parametrize("isolation", ["none", "rollback", "overlay"])
def test_names_before_the_domains_own_entry(
    tmp_path: Path, eager: None, monkeypatch: pytest.MonkeyPatch, isolation: str
) -> None:
    """Top-level names whose first byte sorts below ``.`` (``+page``, ``-dir``, ``#x#``, a space) come before
    the domain's own entry in byte order: the ledgers of a cold, a warm and a dirty run, whole or with the
    top directory split into parts, are canonical and pass the validator, with every isolation."""
    from catalytic.cli import main
    from catalytic.isolation.overlay import unavailable_reason
    from catalytic.validate import CatalyticLedgerValidator

    ws = tmp_path / "ws"
    d = ws / "d"
    (d / "-dir").mkdir(parents=True)
    for name in ("+page", "-dir/in", "#x#", " space", "!bang", ".hidden", "z"):
        (d / name).write_text(name)
    if isolation == "overlay" and unavailable_reason(ws) is not None:
        pytest.skip(f"overlay mounts unavailable here: {unavailable_reason(ws)}")

    def run(run_id: str, command: str) -> dict[str, object]:
        args = ["run", "-q", "--root", str(ws), "--run-id", run_id, "--isolation", isolation]
        main([*args, "--catalytic-domains", "d", "--", "sh", "-c", f"cd {ws} && {command}"])
        ledger = ws / ".catalytic" / "runs" / run_id
        ok, report = CatalyticLedgerValidator(ledger).validate()
        assert {e["code"] for e in report["errors"]} <= {"NOT_RESTORED", "DIRTY"}
        manifest = loads((ledger / "PRE_MANIFEST.json").read_bytes())["d"]
        assert list(manifest)[:6] == [" space", "!bang", "#x#", "+page", "-dir", "-dir/in"]
        assert list(manifest)[6:8] == [".", ".hidden"]
        return {"ok": ok, "diff": loads((ledger / "RESTORE_DIFF.json").read_bytes())["d"]}

    assert run("cold", "true")["ok"]
    assert run("warm", "true")["ok"]
    dirty = run("dirty", "echo changed > d/+page && rm d/-dir/in && echo new > 'd/ new'")
    assert not dirty["ok"]
    diff = dirty["diff"]
    assert isinstance(diff, dict)
    assert [list(diff[kind]) for kind in ("added", "removed", "changed")] == [
        [" new"],
        ["-dir/in"],
        ["+page"],
    ]


def test_a_domain_whose_names_all_sort_before_its_own_entry(tmp_path: Path, layout: str) -> None:
    """Every top-level name below b".": the domain's own entry comes last, in the walker, the in-memory
    engine and the streamed one (whole, or with the top directory split into parts that all sort below it)."""
    from catalytic.snapshot import snapshot_tree

    tree = tmp_path / "t"
    (tree / "-dir").mkdir(parents=True)
    for name in ("+page", "-dir/in", "#x#", " space", "!bang", "-z"):
        (tree / name).write_text(name)
    store = tmp_path / "runs" / "_cache"
    store.mkdir(parents=True)
    reference = check_equal(tree, scan(tree, store))
    assert [e.path for e in reference][-1] == "."
    assert list(snapshot_tree(tree).entries) == reference


@pytest.mark.parametrize("isolation", ["none", "rollback", "overlay"])
def test_a_domain_whose_own_name_is_not_utf8(tmp_path: Path, isolation: str) -> None:
    """The stat cache records its directory as raw bytes: a domain named with a byte that is not UTF-8 runs
    (cold, then warm from the cache), validates, and keeps its cache through ``catalytic gc``."""
    from catalytic.cli import main
    from catalytic.isolation.overlay import unavailable_reason
    from catalytic.validate import CatalyticLedgerValidator

    ws = tmp_path / "ws"
    name = b"bad\xffname".decode("utf-8", "surrogateescape")
    (ws / name / name).mkdir(parents=True)
    (ws / name / "f").write_text("f")
    (ws / name / name / "g").write_text("g")
    if isolation == "overlay" and unavailable_reason(ws) is not None:
        pytest.skip(f"overlay mounts unavailable here: {unavailable_reason(ws)}")
    runs = ws / ".catalytic" / "runs"
    for run_id in ("cold", "warm"):
        args = ["run", "-q", "--root", str(ws), "--run-id", run_id, "--isolation", isolation]
        assert main([*args, "--catalytic-domains", name, "--", "true"]) == 0
        assert CatalyticLedgerValidator(runs / run_id).validate()[0]
    info = loads((runs / "warm" / "RUN_INFO.json").read_bytes())
    assert info["cache"] == "used"
    assert main(["gc", "--root", str(ws), "-q"]) == 0
    assert [p for p in (runs / "_cache").iterdir() if p.suffix == ".sqlite"]
