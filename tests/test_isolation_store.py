"""The content-addressed store and the tree restorer, directly."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

import catalytic
from catalytic.isolation.restore import restore_tree
from catalytic.isolation.rollback import save_tree
from catalytic.isolation.store import Store, StoreError
from catalytic.snapshot import Entry, snapshot_tree
from isolation_helpers import DOMAIN, make_workspace, tree


def test_put_file_refuses_bytes_that_do_not_match_their_name(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs")
    src = tmp_path / "f"
    src.write_bytes(b"actual")
    wrong = hashlib.sha256(b"expected").hexdigest()
    with pytest.raises(StoreError) as info:
        store.put_file(src, "sha256", wrong)
    assert info.value.code == "STORE_UNSTABLE"
    assert not store.has("sha256", wrong)
    right = hashlib.sha256(b"actual").hexdigest()
    assert store.put_file(src, "sha256", right) is True
    assert store.put_file(src, "sha256", right) is False
    assert store.object_path("sha256", right).read_bytes() == b"actual"


def test_storing_files_leaves_no_reference_cycles(tmp_path: Path) -> None:
    """The store's workers run with the cyclic collector off (snapshot/forkpool.py): storing new files,
    files already stored and a file whose bytes do not match its name leaves nothing for it to free."""
    import gc

    from catalytic.isolation.store import _put_batch

    store = Store(tmp_path / "runs")
    files = []
    for i in range(40):
        src = tmp_path / f"f{i}"
        src.write_bytes(b"%d" % i)
        files.append((hashlib.sha256(src.read_bytes()).hexdigest(), str(src)))
    gc.collect()
    gc.disable()
    try:
        found = []
        for batch in (files[:20], files, [("0" * 64, files[0][1])]):
            _put_batch(store, "sha256", batch)
            found.append(gc.collect())
    finally:
        gc.enable()
    assert found == [0, 0, 0]


@pytest.mark.parametrize("jobs", [1, 2])
def test_put_files_stores_a_batch_in_worker_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int
) -> None:
    """Enough files for two processes: every object is stored under its name with its bytes, and the count
    of new objects comes back from the workers (a second batch of the same files stores nothing)."""
    from catalytic.isolation.store import PARALLEL_FILES
    from catalytic.snapshot import forkpool

    pools: list[int] = []
    real_pool = forkpool.ForkPool

    def counted(size: int, work: Any) -> forkpool.ForkPool:
        pools.append(size)
        return real_pool(size, work)

    monkeypatch.setattr(forkpool, "ForkPool", counted)
    store = Store(tmp_path / "runs")
    files: dict[str, str] = {}
    for i in range(2 * PARALLEL_FILES + 3):
        src = tmp_path / f"f{i}"
        src.write_bytes(i.to_bytes(4, "little") * (i % 7 + 1))
        files[hashlib.sha256(src.read_bytes()).hexdigest()] = str(src)
    assert store.put_files(files, "sha256", jobs) == len(files)
    assert pools == ([2] if jobs == 2 else [])  # two worker processes did the work
    for digest, source in files.items():
        assert store.object_path("sha256", digest).read_bytes() == Path(source).read_bytes()
    assert store.put_files(files, "sha256", jobs) == 0


@pytest.mark.parametrize("jobs", [1, 2])
def test_put_files_reports_the_first_file_it_cannot_save(tmp_path: Path, jobs: int) -> None:
    """A file whose bytes no longer match its name stops the batch with STORE_UNSTABLE, from a worker
    process as from this one; a file gone is a STORE error naming it."""
    from catalytic.isolation.store import PARALLEL_FILES

    store = Store(tmp_path / "runs")
    files: dict[str, str] = {}
    for i in range(2 * PARALLEL_FILES):
        src = tmp_path / f"f{i}"
        src.write_bytes(b"%d" % i)
        files[hashlib.sha256(src.read_bytes()).hexdigest()] = str(src)
    changed = tmp_path / "f700"
    changed.write_bytes(b"changed since it was hashed")
    with pytest.raises(StoreError) as info:
        store.put_files(files, "sha256", jobs)
    assert info.value.code == "STORE_UNSTABLE" and str(changed) in info.value.message
    changed.unlink()
    with pytest.raises(StoreError) as info:
        store.put_files(files, "sha256", jobs)
    assert info.value.code == "STORE" and str(changed) in info.value.message


def test_large_files_go_through_the_kernel_copy_path(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs")
    data = os.urandom(3 << 20)
    src = tmp_path / "big"
    src.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    assert store.put_file(src, "sha256", digest)
    assert store.object_path("sha256", digest).read_bytes() == data


def triples(entries: Iterable[Entry]) -> list[tuple[str, str, str | None]]:
    return [(e.path, e.value, e.mode) for e in entries]


def _saved(tmp_path: Path) -> tuple[Path, list[Entry], Store]:
    """A workspace's domain, its entries, and a store holding its files (as a rollback run saves them)."""
    domain = make_workspace(tmp_path / "ws") / DOMAIN
    want = list(snapshot_tree(domain).entries)
    store = Store(tmp_path / "runs")
    save_tree(store, domain, triples(want), "sha256")
    return domain, want, store


def test_restore_tree_dry_run_changes_nothing_and_then_restores(tmp_path: Path) -> None:
    domain, want, store = _saved(tmp_path)
    (domain / "a.txt").write_text("other\n")
    os.chmod(domain / "sub", 0o500)
    (domain / "new").mkdir()
    edited = tree(domain)
    have = list(snapshot_tree(domain).entries)
    plan = restore_tree(domain, triples(want), triples(have), store, "sha256", dry_run=True)
    assert ("remove", "new") in plan.actions and ("replace", "a.txt") in plan.actions
    assert ("chmod", "sub") in plan.actions
    assert tree(domain) == edited
    report = restore_tree(domain, triples(want), triples(have), store, "sha256")
    assert report.ok
    assert [(e.path, e.value, e.mode) for e in snapshot_tree(domain).entries] == [
        (e.path, e.value, e.mode) for e in want
    ]


def test_python_api_runs_with_rollback(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    before = tree(ws / DOMAIN)
    result = catalytic.run(
        ["sh", "-c", f"echo junk > {ws / DOMAIN}/junk"],
        root=ws,
        run_id="api",
        catalytic_domains=[DOMAIN],
        isolation="rollback",
    )
    assert result.status == "dirty" and result.isolation == "rollback"
    assert result.facts is not None and result.facts.rollback is not None
    assert result.facts.rollback["verified"] is True
    assert result.summary()["rollback"]["performed"] is True
    assert tree(ws / DOMAIN) == before


def test_restore_recreates_a_deleted_domain_and_removes_a_created_one(tmp_path: Path) -> None:
    domain, want, store = _saved(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "ws" / "CORTEX")
    report = restore_tree(domain, triples(want), [], store, "sha256")
    assert report.ok and tree(domain) == [(e.path, e.value, e.mode) for e in want]
    report = restore_tree(domain, [], triples(snapshot_tree(domain).entries), store, "sha256")
    assert report.ok and not domain.exists()


def test_restore_tree_never_follows_a_symlink_below_its_anchor(tmp_path: Path) -> None:
    """A symlinked directory inside the tree, swapped in after the snapshot of what it holds: the restore
    refuses to write below it (it reports the symlink), and writes nothing where it leads."""
    domain, want, store = _saved(tmp_path)
    have = list(snapshot_tree(domain).entries)
    (domain / "sub" / "b.txt").unlink()
    elsewhere = tmp_path / "elsewhere"
    (domain / "sub").rename(elsewhere)
    (domain / "sub").symlink_to(elsewhere)  # a race: the restore believes sub is still a directory
    report = restore_tree(domain, triples(want), triples(have[:-1]), store, "sha256", within=tmp_path / "ws")
    assert list(elsewhere.iterdir()) == []
    assert any(f"'{DOMAIN}/sub' is a symlink" in p for p in report.problems), report.problems


def test_restore_tree_reaches_a_workspace_whose_own_path_is_a_symlink(tmp_path: Path) -> None:
    real = make_workspace(tmp_path / "real")
    (tmp_path / "ws").symlink_to(real)
    domain = tmp_path / "ws" / DOMAIN
    want = list(snapshot_tree(domain).entries)
    store = Store(tmp_path / "runs")
    save_tree(store, domain, triples(want), "sha256")
    (domain / "a.txt").write_text("changed\n")
    have = list(snapshot_tree(domain).entries)
    report = restore_tree(domain, triples(want), triples(have), store, "sha256", within=tmp_path / "ws")
    assert report.ok, report.problems
    assert (real / DOMAIN / "a.txt").read_text() == "alpha\n"


def test_modes_are_set_through_a_descriptor_where_fchmodat_cannot_skip_symlinks(tmp_path: Path) -> None:
    """Kernels before fchmodat2 make ``os.chmod(..., follow_symlinks=False)`` raise NotImplementedError;
    restores then set a mode through a descriptor opened with O_NOFOLLOW (restore._fchmod): it sets the
    entry's own mode and never follows a symlink."""
    from catalytic.isolation import restore

    f = tmp_path / "f"
    f.write_text("x")
    f.chmod(0o644)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        restore._fchmod(fd, "f", os.lstat(f), 0o600)
        assert oct(os.lstat(f).st_mode & 0o777) == oct(0o600)
        os.symlink("f", tmp_path / "link")
        with pytest.raises(OSError):
            restore._fchmod(fd, "link", os.lstat(tmp_path / "link"), 0o777)
        assert oct(os.lstat(f).st_mode & 0o777) == oct(0o600)
    finally:
        os.close(fd)
