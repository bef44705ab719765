"""The fast snapshot path: pool hashing, the stat cache (racy, stale, corrupt, foreign), Merkle roots."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalytic.errors import SnapshotError
from catalytic.snapshot import engine, reference_walk, snapshot_tree
from catalytic.snapshot.cache import (
    FINE_GRANULARITY_NS,
    CacheReader,
    CacheWriter,
    cache_path,
    racy,
    row_of,
)
from catalytic.snapshot.engine import hash_batch
from catalytic.snapshot.merkle import FlatMerkleBuilder, MerkleBuilder, manifest_root, merkle_root
from trees import build_tree

AGE = FINE_GRANULARITY_NS / 1e9 + 0.05


@pytest.fixture
def eager_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start the process pool for any amount of work, in tiny batches (exercises ordering)."""
    monkeypatch.setattr(engine, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(engine, "BATCH_FILES", 3)


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("algorithm", ["sha256", "blake3"])
def test_engine_equals_reference_walk(tmp_path: Path, eager_pool: None, jobs: int, algorithm: str) -> None:
    tree = build_tree(tmp_path / "t")
    expected = reference_walk(tree, algorithm)
    snap = snapshot_tree(tree, algorithm, jobs=jobs)
    assert list(snap.entries) == expected
    assert snap.merkle_root == merkle_root(expected, algorithm)
    assert snap.stats.files == sum(1 for e in expected if len(e.value) == 64)


def test_pool_is_not_started_for_small_work(tmp_path: Path) -> None:
    tree = build_tree(tmp_path / "t")
    scanner = engine.Scanner(tree, "sha256", engine.WalkStats(), jobs=2)
    list(scanner.entries())
    assert not scanner.report.pool_started


def test_pool_is_started_for_enough_work(tmp_path: Path, eager_pool: None) -> None:
    tree = build_tree(tmp_path / "t")
    scanner = engine.Scanner(tree, "sha256", engine.WalkStats(), jobs=2)
    list(scanner.entries())
    assert scanner.report.pool_started


def test_no_fork_while_other_threads_run(tmp_path: Path, eager_pool: None) -> None:
    import threading

    tree = build_tree(tmp_path / "t")
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        scanner = engine.Scanner(tree, "sha256", engine.WalkStats(), jobs=2)
        entries = list(scanner.entries())
    finally:
        stop.set()
        helper.join()
    assert not scanner.report.pool_started
    assert entries == reference_walk(tree)


def test_warm_cache_hashes_nothing_and_gives_the_same_snapshot(tmp_path: Path, eager_pool: None) -> None:
    tree = build_tree(tmp_path / "t")
    cache = tmp_path / "cache"
    time.sleep(AGE)
    cold = snapshot_tree(tree, jobs=2, cache_dir=cache)
    assert cold.cache == "rebuilt"
    assert cold.stats.bytes_hashed > 3 << 20
    warm = snapshot_tree(tree, jobs=2, cache_dir=cache)
    assert warm.cache == "used"
    assert warm.stats.bytes_hashed == 0
    assert warm.entries == cold.entries
    assert warm.merkle_root == cold.merkle_root


def test_cache_sees_content_change_and_new_and_removed_files(tmp_path: Path) -> None:
    tree = build_tree(tmp_path / "t")
    cache = tmp_path / "cache"
    time.sleep(AGE)
    snapshot_tree(tree, cache_dir=cache)
    (tree / "a" / "f03").write_bytes(b"changed")
    (tree / "a" / "new").write_bytes(b"new")
    (tree / "a" / "f05").unlink()
    after = snapshot_tree(tree, cache_dir=cache)
    assert list(after.entries) == reference_walk(tree)


def _write_cache(tree: Path, cache: Path, file: Path, digest: str, taken_ns: int) -> None:
    writer = CacheWriter(cache_path(cache, tree, "sha256"), os.path.abspath(tree), "sha256", taken_ns)
    rel = file.relative_to(tree).as_posix()
    writer.add(row_of(rel.encode(), os.lstat(file), digest))
    writer.commit()


def test_cache_row_is_trusted_when_old_enough(tmp_path: Path) -> None:
    # The control for the racy test below: with the same forged row, an old enough cache is believed.
    tree = tmp_path / "t"
    tree.mkdir()
    f = tree / "f"
    f.write_bytes(b"real")
    forged = "0" * 64
    _write_cache(tree, tmp_path / "c", f, forged, os.lstat(f).st_mtime_ns + 10 * 10**9)
    snap = snapshot_tree(tree, cache_dir=tmp_path / "c")
    assert dict((e.path, e.value) for e in snap.entries)["f"] == forged


def test_racily_clean_row_is_not_trusted(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    f = tree / "f"
    f.write_bytes(b"real")
    # The cache was taken in the same timestamp tick as the file's last change: racy, hash again.
    _write_cache(tree, tmp_path / "c", f, "0" * 64, os.lstat(f).st_mtime_ns + 1)
    snap = snapshot_tree(tree, cache_dir=tmp_path / "c")
    assert dict((e.path, e.value) for e in snap.entries)["f"] == hashlib.sha256(b"real").hexdigest()


def test_racy_rule() -> None:
    taken = 1_700_000_000_123_456_789
    assert racy(taken - 1, taken - 10**9 * 5, taken)
    assert racy(taken - 10**9 * 5, taken - 1, taken)  # ctime alone is enough
    assert not racy(taken - 10**9, taken - 10**9, taken)
    # Whole-second timestamps: assume a 2 s granularity.
    assert racy(1_700_000_000 * 10**9, 1_700_000_000 * 10**9, 1_700_000_001_500_000_000)


def test_file_modified_right_after_the_cache_was_written_is_caught(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    f = tree / "f"
    f.write_bytes(b"aaaa")
    cache = tmp_path / "c"
    snapshot_tree(tree, cache_dir=cache)  # within the granularity of the write: racy rows
    st = os.lstat(f)
    f.write_bytes(b"bbbb")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    snap = snapshot_tree(tree, cache_dir=cache)
    assert dict((e.path, e.value) for e in snap.entries)["f"] == hashlib.sha256(b"bbbb").hexdigest()


def test_same_size_rewrite_with_mtime_put_back_is_caught_by_ctime(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    f = tree / "f"
    f.write_bytes(b"aaaa")
    os.utime(f, ns=(10**18, 10**18))  # mtime far in the past...
    time.sleep(AGE)  # ...and ctime old enough that the row is trusted
    cache = tmp_path / "c"
    first = snapshot_tree(tree, cache_dir=cache)
    assert snapshot_tree(tree, cache_dir=cache).stats.bytes_hashed == 0
    time.sleep(0.02)
    f.write_bytes(b"bbbb")
    os.utime(f, ns=(10**18, 10**18))
    second = snapshot_tree(tree, cache_dir=cache)
    assert first.entries != second.entries
    assert dict((e.path, e.value) for e in second.entries)["f"] == hashlib.sha256(b"bbbb").hexdigest()


def test_garbage_cache_file_is_ignored_and_rebuilt(tmp_path: Path) -> None:
    tree = build_tree(tmp_path / "t")
    cache = tmp_path / "c"
    target = cache_path(cache, tree, "sha256")
    cache.mkdir()
    target.write_bytes(b"this is not a database" * 100)
    time.sleep(AGE)
    snap = snapshot_tree(tree, cache_dir=cache)
    assert list(snap.entries) == reference_walk(tree)
    assert snap.cache == "rebuilt"
    assert snapshot_tree(tree, cache_dir=cache).cache == "used"


def test_tampered_row_is_not_trusted(tmp_path: Path) -> None:
    tree = build_tree(tmp_path / "t")
    cache = tmp_path / "c"
    time.sleep(AGE)
    snapshot_tree(tree, cache_dir=cache)
    target = cache_path(cache, tree, "sha256")
    with sqlite3.connect(target) as conn:
        conn.execute("UPDATE files SET digest = ? WHERE key = ?", ("0" * 64, b"a/f03"))
    conn.close()
    reader = CacheReader(target, os.path.abspath(tree), "sha256")
    list(reader.rows())
    reader.close()
    assert reader.state == "corrupt"
    snap = snapshot_tree(tree, cache_dir=cache)
    assert list(snap.entries) == reference_walk(tree)
    assert snap.cache == "rebuilt"


def test_foreign_cache_is_ignored(tmp_path: Path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    (one / "f").write_bytes(b"one")
    two = tmp_path / "two"
    two.mkdir()
    (two / "f").write_bytes(b"two")
    cache = tmp_path / "c"
    time.sleep(AGE)
    snapshot_tree(one, cache_dir=cache)
    # Put one's cache where two's belongs: same names, but another directory.
    cache_path(cache, one, "sha256").rename(cache_path(cache, two, "sha256"))
    snap = snapshot_tree(two, cache_dir=cache)
    assert snap.cache == "rebuilt"
    assert list(snap.entries) == reference_walk(two)
    # And a cache of another algorithm is never read for this one.
    assert cache_path(cache, two, "blake3") != cache_path(cache, two, "sha256")


def test_worker_reports_vanished_and_replaced(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "f").write_bytes(b"x")
    st = os.lstat(d)
    fst = os.lstat(d / "f")
    dir_b = os.fsencode(d)
    out, _ = hash_batch("sha256", [(dir_b, st.st_dev, st.st_ino, "gone", "gone", fst)])
    assert out[0][0] == "err" and out[0][3] == "VANISHED"
    out, _ = hash_batch("sha256", [(dir_b, st.st_dev, st.st_ino + 1, "f", "f", fst)])
    assert out[0][0] == "err" and out[0][3] == "VANISHED"
    out, n = hash_batch("sha256", [(dir_b, st.st_dev, st.st_ino, "f", "f", fst)])
    assert out[0][:2] == ("ok", hashlib.sha256(b"x").hexdigest()) and n == 1


def test_vanished_file_is_an_error_not_a_skip(tmp_path: Path, eager_pool: None, monkeypatch) -> None:
    tree = build_tree(tmp_path / "t")
    original = engine.hash_batch

    def remove_then_hash(algorithm: str, jobs: list) -> tuple:
        for job in jobs:
            if job[4] == "a/f07":
                (tree / "a" / "f07").unlink()
        return original(algorithm, jobs)

    monkeypatch.setattr(engine, "hash_batch", remove_then_hash)
    monkeypatch.setattr(engine, "POOL_MIN_FILES", 10**9)  # in-process, so the patch applies
    with pytest.raises(SnapshotError) as info:
        snapshot_tree(tree, jobs=1)
    assert info.value.code == "VANISHED"
    assert info.value.path == "a/f07"


def test_merkle_v1_vectors() -> None:
    assert FlatMerkleBuilder("sha256").root() == hashlib.sha256(b"").hexdigest()
    b = FlatMerkleBuilder("sha256")
    b.add("f", "dir", "0755")
    assert b.root() == hashlib.sha256(b"\x00f\x00dir\x000755").hexdigest()
    b.add("g", "symlink:f", None)
    left = hashlib.sha256(b"\x00f\x00dir\x000755").digest()
    right = hashlib.sha256(b"\x00g\x00symlink:f\x00").digest()
    assert b.root() == hashlib.sha256(b"\x01" + left + right).hexdigest()


def test_merkle_v2_vectors() -> None:
    def h(data: bytes) -> bytes:
        return hashlib.sha256(data).digest()

    assert MerkleBuilder("sha256").root() == h(b"").hex()
    b = MerkleBuilder("sha256")
    for path, value, mode in [
        (".", "dir", "0755"),
        ("a", "dir", "0700"),
        ("a.b", "symlink:a", None),
        ("a/x", "ab" * 32, "0644"),
        ("e", "dir", "0755"),
    ]:
        b.add(path, value, mode)
    top = h(b"\x00a\x00dir\x000700\x00a.b\x00symlink:a\x00\x00e\x00dir\x000755\x00")
    inner = h(b"\x00x\x00" + b"ab" * 32 + b"\x000644\x00")
    dirs = h(b"\x01a\x00" + inner + b".\x00" + top)  # post-order: a before ., e (empty) not listed
    assert b.root() == h(b"\x02.\x00dir\x000755\x00" + dirs).hex()


def test_merkle_distinguishes_equal_contents_and_modes(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "x").write_bytes(b"same")
    (tree / "y").write_bytes(b"same")
    base = snapshot_tree(tree).merkle_root
    (tree / "y").unlink()
    (tree / "z").write_bytes(b"same")
    assert snapshot_tree(tree).merkle_root != base  # same multiset of contents, different paths
    (tree / "z").rename(tree / "y")
    assert snapshot_tree(tree).merkle_root == base
    (tree / "y").chmod(0o600)
    assert snapshot_tree(tree).merkle_root != base
    manifest = {e.path: e.value for e in snapshot_tree(tree).entries}
    modes = {e.path: e.mode for e in snapshot_tree(tree).entries if e.mode}
    assert manifest_root(manifest, modes, "sha256") == snapshot_tree(tree).merkle_root


NAMES = st.sampled_from(["a", "a.b", "a-b", "b", "ä", "z", "ax"])


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    files=st.dictionaries(
        st.lists(NAMES, min_size=1, max_size=3).map(tuple),
        st.binary(max_size=64),
        max_size=25,
    ),
    jobs=st.sampled_from([1, 2]),
    algorithm=st.sampled_from(["sha256", "blake3"]),
    edits=st.lists(st.integers(min_value=0, max_value=100), max_size=4),
)
def test_property_engine_with_cache_equals_reference(
    files: dict[tuple[str, ...], bytes], jobs: int, algorithm: str, edits: list[int]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "t"
        tree.mkdir()
        written: list[Path] = []
        for parts, data in files.items():
            target = tree.joinpath(*parts)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                written.append(target)
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                continue  # a name that is both a file and a directory in this draw
        cache = Path(tmp) / "c"
        old = engine.POOL_MIN_FILES, engine.BATCH_FILES
        engine.POOL_MIN_FILES, engine.BATCH_FILES = 1, 2
        try:
            first = snapshot_tree(tree, algorithm, jobs=jobs, cache_dir=cache)
            assert list(first.entries) == reference_walk(tree, algorithm)
            for i in edits:  # same-size rewrites right after the cache was written (racy rows)
                if written:
                    victim = written[i % len(written)]
                    if victim.is_file():
                        size = victim.stat().st_size
                        victim.write_bytes(bytes((b + 1) % 256 for b in victim.read_bytes()[:size]))
            second = snapshot_tree(tree, algorithm, jobs=jobs, cache_dir=cache)
            assert list(second.entries) == reference_walk(tree, algorithm)
            assert second.merkle_root == merkle_root(second.entries, algorithm)
        finally:
            engine.POOL_MIN_FILES, engine.BATCH_FILES = old
