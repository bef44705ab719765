"""Snapshots: byte order, every entry type, modes, symlinks never followed, races and errors."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from catalytic.errors import SnapshotError
from catalytic.snapshot import snapshot_domain, snapshot_tree
from catalytic.snapshot.digest import Hasher
from catalytic.snapshot.walker import RETRIES, WalkStats, walk
from unprivileged import run_unprivileged

BAD = b"\xff".decode("utf-8", "surrogateescape")


def _manifest(path: Path) -> dict[str, str]:
    return {e.path: e.value for e in snapshot_tree(path).entries}


def test_order_is_byte_order_of_full_paths(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").write_bytes(b"1")
    (tmp_path / "a-c").write_bytes(b"2")
    (tmp_path / "a.x").write_bytes(b"3")
    (tmp_path / "a0").write_bytes(b"4")
    (tmp_path / "é").write_bytes(b"5")
    (tmp_path / "Z").mkdir()
    os.close(os.open(bytes(tmp_path) + b"/\xff", os.O_CREAT | os.O_WRONLY, 0o644))
    paths = [e.path for e in snapshot_tree(tmp_path).entries]
    assert paths == [".", "Z", "a", "a-c", "a.x", "a/b", "a0", "é", BAD]
    raw = [p.encode("utf-8", "surrogateescape") for p in paths]
    assert raw == sorted(raw)


def test_every_type_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"never walked")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "file").write_bytes(b"hello\x00world")
    (tree / "empty").write_bytes(b"")
    (tree / "sub").mkdir()
    os.symlink("file", tree / "link")
    os.symlink("does/not/exist", tree / "dangling")
    os.symlink(str(outside), tree / "outlink")
    os.mkfifo(tree / "fifo")
    monkeypatch.chdir(tree)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind("sock")
        snap = snapshot_tree(tree)
    finally:
        sock.close()
    manifest = {e.path: e.value for e in snap.entries}
    assert manifest == {
        ".": "dir",
        "dangling": "symlink:does/not/exist",
        "empty": hashlib.sha256(b"").hexdigest(),
        "fifo": "fifo",
        "file": hashlib.sha256(b"hello\x00world").hexdigest(),
        "link": "symlink:file",
        "outlink": f"symlink:{outside}",
        "sock": "socket",
        "sub": "dir",
    }
    modes = {e.path: e.mode for e in snap.entries}
    assert modes["link"] is None
    assert modes["outlink"] is None
    assert snap.stats.files == 2
    assert snap.stats.dirs == 2
    assert not snap.absent


def test_modes_are_recorded(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"x")
    (tmp_path / "y").write_bytes(b"y")
    (tmp_path / "d").mkdir()
    os.chmod(tmp_path / "x", 0o755)
    os.chmod(tmp_path / "y", 0o600)
    os.chmod(tmp_path / "d", 0o2750)
    os.chmod(tmp_path, 0o711)
    modes = {e.path: e.mode for e in snapshot_tree(tmp_path).entries}
    assert modes == {".": "0711", "d": "2750", "x": "0755", "y": "0600"}


def test_root_entry_and_absent_domain(tmp_path: Path) -> None:
    (tmp_path / "dom").mkdir()
    snap = snapshot_domain(tmp_path, "dom")
    assert [e.path for e in snap.entries] == ["."]
    assert snap.entries[0].value == "dir"
    assert snap.domain == "dom"
    missing = snapshot_domain(tmp_path, "nope")
    assert missing.entries == ()
    assert missing.absent
    assert snapshot_tree(tmp_path / "no" / "parent").absent


def test_domain_that_is_a_symlink_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_bytes(b"f")
    os.symlink("real", tmp_path / "alias")
    assert _manifest(tmp_path / "alias") == {".": "symlink:real"}


class _AppendingHasher:
    """sha256 whose first update appends to the file being hashed: a real change mid-read."""

    def __init__(self, target: Path, remaining: list[int]) -> None:
        self._h = hashlib.sha256()
        self._target = target
        self._remaining = remaining
        self._fired = False

    def update(self, data: bytes, /) -> None:
        if not self._fired and self._remaining[0] > 0:
            self._fired = True
            self._remaining[0] -= 1
            with self._target.open("ab") as fh:
                fh.write(b"+more")
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _appending(target: Path, times: int) -> tuple[Callable[[], Hasher], list[int]]:
    remaining = [times]
    return (lambda: _AppendingHasher(target, remaining)), remaining


def test_file_that_keeps_changing_is_unstable(tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.write_bytes(b"start")
    factory, remaining = _appending(target, 100)
    with pytest.raises(SnapshotError) as info:
        list(walk(tmp_path, factory, WalkStats()))
    assert info.value.code == "UNSTABLE"
    assert info.value.path == "busy"
    assert remaining[0] == 100 - RETRIES


def test_file_that_changes_once_gets_final_digest(tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.write_bytes(b"start")
    factory, remaining = _appending(target, 1)
    entries = {e.path: e.value for e in walk(tmp_path, factory, WalkStats())}
    assert remaining[0] == 0
    assert target.read_bytes() == b"start+more"
    assert entries["busy"] == hashlib.sha256(b"start+more").hexdigest()


def test_entry_vanishing_during_walk_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")

    class Deleting:
        def __init__(self) -> None:
            self._h = hashlib.sha256()

        def update(self, data: bytes, /) -> None:
            if (tmp_path / "b").exists():
                (tmp_path / "b").unlink()
            self._h.update(data)

        def hexdigest(self) -> str:
            return self._h.hexdigest()

    with pytest.raises(SnapshotError) as info:
        list(walk(tmp_path, Deleting, WalkStats()))
    assert info.value.code == "VANISHED"
    assert info.value.path == "b"


def test_directory_vanishing_during_walk_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_bytes(b"x")

    class Removing:
        def __init__(self) -> None:
            self._h = hashlib.sha256()

        def update(self, data: bytes, /) -> None:
            shutil.rmtree(tmp_path / "d", ignore_errors=True)
            self._h.update(data)

        def hexdigest(self) -> str:
            return self._h.hexdigest()

    with pytest.raises(SnapshotError) as info:
        list(walk(tmp_path, Removing, WalkStats()))
    assert info.value.code == "VANISHED"
    assert info.value.path == "d"


def _snapshot_outcome(tree: Path) -> dict[str, str]:
    """Snapshot ``tree``; its outcome as a JSON-ready dict."""
    try:
        snapshot_tree(tree)
    except SnapshotError as exc:
        return {"outcome": "error", "code": exc.code, "path": exc.path, "message": exc.message}
    return {"outcome": "ok"}


def test_unreadable_file_is_an_error_naming_it() -> None:
    top = Path(tempfile.mkdtemp(prefix="catalytic-unreadable-"))
    try:
        os.chmod(top, 0o777)
        tree = top / "tree"
        (tree / "sub").mkdir(parents=True)
        os.chmod(tree, 0o777)
        os.chmod(tree / "sub", 0o777)
        (tree / "sub" / "ok").write_bytes(b"fine")
        os.chmod(tree / "sub" / "ok", 0o644)
        locked = tree / "sub" / "locked"
        locked.write_bytes(b"secret")
        os.chmod(locked, 0o000)
        result = run_unprivileged(lambda: _snapshot_outcome(tree))
        assert result["outcome"] == "error"
        assert result["code"] == "UNREADABLE"
        assert result["path"] == "sub/locked"
        assert "sub/locked" in result["message"]
    finally:
        os.chmod(top / "tree" / "sub" / "locked", stat.S_IRUSR | stat.S_IWUSR)
        shutil.rmtree(top)


def test_unreadable_directory_is_an_error_naming_it() -> None:
    top = Path(tempfile.mkdtemp(prefix="catalytic-unreadable-"))
    try:
        os.chmod(top, 0o777)
        tree = top / "tree"
        (tree / "closed").mkdir(parents=True)
        os.chmod(tree, 0o777)
        os.chmod(tree / "closed", 0o000)
        result = run_unprivileged(lambda: _snapshot_outcome(tree))
        assert result["outcome"] == "error"
        assert result["code"] == "UNREADABLE"
        assert result["path"] == "closed"
    finally:
        os.chmod(top / "tree" / "closed", 0o700)
        shutil.rmtree(top)


def test_large_file_digest_spans_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    (tmp_path / "big").write_bytes(data)
    snap = snapshot_tree(tmp_path)
    assert _manifest(tmp_path)["big"] == hashlib.sha256(data).hexdigest()
    assert snap.stats.bytes_hashed == len(data)


class _SideEffectHasher:
    """sha256 that runs ``action`` once, on the first update of any file."""

    def __init__(self, action: Callable[[], None], fired: list[bool]) -> None:
        self._h = hashlib.sha256()
        self._action = action
        self._fired = fired

    def update(self, data: bytes, /) -> None:
        if not self._fired[0]:
            self._fired[0] = True
            self._action()
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


@pytest.mark.parametrize("replacement", ["symlink", "other_dir"])
def test_directory_swapped_during_walk_is_never_followed(tmp_path: Path, replacement: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a").write_bytes(b"a")
    (tree / "d").mkdir()
    (tree / "d" / "x").write_bytes(b"x")

    def swap() -> None:
        shutil.rmtree(tree / "d")
        if replacement == "symlink":
            os.symlink(outside, tree / "d")
        else:
            os.rename(outside, tree / "d")

    fired = [False]
    seen: list[str] = []
    with pytest.raises(SnapshotError) as info:
        for entry in walk(tree, lambda: _SideEffectHasher(swap, fired), WalkStats()):
            seen.append(entry.path)
    assert fired[0]
    assert info.value.code == "VANISHED"
    assert info.value.path == "d"
    assert "d/secret" not in seen


def test_trees_deeper_than_the_recursion_limit(tmp_path: Path, past_recursion_limit: int) -> None:
    """The walker, the in-memory engine, the streamed engine and remove_tree go as deep as the file system
    does: deeper than Python's recursion limit, and to paths longer than PATH_MAX (4096 bytes)."""
    from catalytic.isolation.restore import remove_tree
    from catalytic.snapshot import reference_walk
    from catalytic.snapshot.manifest_stream import scanned, spooled_entries
    from trees import build_deep

    depth, name = past_recursion_limit, "d" * 15
    tree = build_deep(tmp_path / "t", depth, name)
    assert len(os.fsencode(tree)) + (len(name) + 1) * depth > 4096
    try:
        os.chmod(tree / name / name, 0o500)  # read-only on the way down: remove_tree opens it up
        reference = [(e.path, e.value, e.mode) for e in reference_walk(tree)]
        assert len(reference) == depth + 2 and reference[-1][0] == "/".join([name] * depth + ["bottom"])
        assert [(e.path, e.value, e.mode) for e in snapshot_tree(tree, jobs=2).entries] == reference
        with scanned(tree, "sha256") as scan:
            assert list(spooled_entries(scan.manifest, scan.modes)) == reference
    finally:
        remove_tree(tree)  # pytest's clean-up of old temporary directories recurses
    assert not tree.exists()
