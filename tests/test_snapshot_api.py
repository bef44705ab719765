"""catalytic.snapshot_tree (the one engine, entries in memory) against the reference walk; the stat cache's
rules through it; Merkle roots. The row store's damage cases are in test_stream_snapshot.py."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalytic.errors import SnapshotError
from catalytic.snapshot import dirscan, reference_walk, scheduler, snapshot_tree
from catalytic.snapshot.listing import FINE_GRANULARITY_NS, racy
from catalytic.snapshot.merkle import FlatMerkleBuilder, MerkleBuilder, manifest_root, merkle_root
from trees import build_tree

AGE = FINE_GRANULARITY_NS / 1e9 + 0.05


@pytest.fixture
def eager_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start the worker processes for any amount of work, directories in parts of 3 (exercises ordering)."""
    monkeypatch.setattr(scheduler, "POOL_MIN_ENTRIES", 0)
    monkeypatch.setattr(dirscan, "SPLIT", 3)


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("algorithm", ["sha256", "blake3"])
def test_engine_equals_reference_walk(tmp_path: Path, eager_pool: None, jobs: int, algorithm: str) -> None:
    tree = build_tree(tmp_path / "t")
    expected = reference_walk(tree, algorithm)
    snap = snapshot_tree(tree, algorithm, jobs=jobs)
    assert list(snap.entries) == expected
    assert snap.merkle_root == merkle_root(expected, algorithm)
    assert snap.stats.files == sum(1 for e in expected if len(e.value) == 64)


def test_no_fork_while_other_threads_run(tmp_path: Path, eager_pool: None) -> None:
    import threading

    tree = build_tree(tmp_path / "t")
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    forked: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        forked.append(1)
        return real_fork()

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "fork", fork)
            entries = list(snapshot_tree(tree, jobs=2).entries)
    finally:
        stop.set()
        helper.join()
    assert forked == []
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


def test_vanished_file_is_an_error_not_a_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = build_tree(tmp_path / "t")
    original = dirscan._list

    def list_then_remove(fd: int, rel: str) -> list:
        listing = original(fd, rel)
        if rel == "a":
            (tree / "a" / "f07").unlink()
        return listing

    monkeypatch.setattr(dirscan, "_list", list_then_remove)
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


@pytest.mark.slow
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
        old = scheduler.POOL_MIN_ENTRIES, dirscan.SPLIT
        scheduler.POOL_MIN_ENTRIES, dirscan.SPLIT = 0, 2
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
            scheduler.POOL_MIN_ENTRIES, dirscan.SPLIT = old
