"""A stat cache the command cannot poison: whatever it does to catalytic's cache while it runs, the verdict
is the one a run without any cache would give (snapshot/guard.py and the runtime's use of it)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from catalytic.cli import main
from catalytic.snapshot.guard import CacheSeal

PY = sys.executable


def _workspace(tmp_path: Path) -> Path:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for i in range(40):
        (tmp_path / "d" / "sub" / f"f{i}").write_text(f"file {i}\n")
    (tmp_path / "d" / "top").write_text("top\n")
    return tmp_path


def _run(
    root: Path, run_id: str, script: str, *extra: str
) -> tuple[int, dict[str, object], dict[str, object]]:
    code = main(
        [
            "run",
            "-q",
            "--root",
            str(root),
            "--run-id",
            run_id,
            "--runs-root",
            "runs",
            "--allowed-roots",
            "runs",
            "--catalytic-domains",
            "d",
            *extra,
            "--",
            "sh",
            "-c",
            script,
        ]
    )
    ledger = root / "runs" / run_id
    status = json.loads((ledger / "STATUS.json").read_text())
    info = json.loads((ledger / "RUN_INFO.json").read_text())
    return code, status, info


# The command changes a domain file, then brings the cache up to date with what it did, with catalytic's own
# snapshot over the same cache (the rows then say the file was always so), and changes nothing else back.
REWRITE_AND_REFRESH = (
    "printf 'file 7 evil\\n' > d/sub/f7 && "
    f"{PY} -m catalytic snapshot -q --cache-dir runs/_cache d -o /dev/null"
)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_command_that_refreshes_the_cache_after_a_change_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: str
) -> None:
    root = _workspace(tmp_path)
    monkeypatch.chdir(root)
    code, status, _info = _run(root, "warm", "true", "--jobs", jobs)
    assert code == 0 and status["status"] == "restored"
    code, status, info = _run(root, "attack", REWRITE_AND_REFRESH, "--jobs", jobs)
    assert status["status"] == "dirty", status
    assert code == 4
    assert info["cache"] == "distrusted"
    diff = json.loads((root / "runs" / "attack" / "RESTORE_DIFF.json").read_text())
    assert list(diff["d"]["changed"]) == ["sub/f7"]


def test_a_command_that_rewrites_the_store_file_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store replaced by a copy taken after the change (a forged store file, renamed over ours)."""
    root = _workspace(tmp_path)
    monkeypatch.chdir(root)
    assert _run(root, "warm", "true")[0] == 0
    script = (
        "printf 'file 3 evil\\n' > d/sub/f3 && mkdir -p /tmp/$$ && "
        f"{PY} -m catalytic snapshot -q --cache-dir /tmp/$$ d -o /dev/null && "
        "for f in /tmp/$$/*.rows.sqlite; do cp $f runs/_cache/$(basename $f); done; rm -rf /tmp/$$"
    )
    code, status, info = _run(root, "forged", script)
    assert status["status"] == "dirty" and code == 4
    assert info["cache"] == "distrusted"


def test_touching_the_cache_costs_time_never_the_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command that only touches the cache and changes nothing: still restored, every file hashed again."""
    root = _workspace(tmp_path)
    monkeypatch.chdir(root)
    assert _run(root, "warm", "true")[0] == 0
    code, status, info = _run(root, "touch", "touch runs/_cache/unrelated")
    assert code == 0 and status["status"] == "restored"
    assert info["cache"] == "distrusted"
    # An untouched cache is trusted as before.
    code, status, info = _run(root, "again", "true")
    assert code == 0 and info["cache"] == "used"


def test_seal_sees_every_kind_of_change(tmp_path: Path) -> None:
    cache = tmp_path / "_cache"
    cache.mkdir()
    (cache / "a").write_bytes(b"1234")
    (cache / "b").write_bytes(b"x")
    seal = CacheSeal.take(cache)
    assert seal.broken() == []
    st = os.stat(cache / "a")
    (cache / "a").write_bytes(b"5678")  # same size, times put back: ctime still moves
    os.utime(cache / "a", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert seal.broken() == ["a"]
    seal = CacheSeal.take(cache)
    (cache / "c").write_bytes(b"")
    assert seal.broken() == [".", "c"]
    seal = CacheSeal.take(cache)
    os.replace(cache / "c", cache / "b")
    assert seal.broken() == [".", "b", "c"]
    seal = CacheSeal.take(cache)
    os.chmod(cache / "a", 0o600)
    assert seal.broken() == ["a"]
    seal = CacheSeal.take(cache)
    os.link(cache / "a", tmp_path / "elsewhere")
    assert seal.broken() == ["a"]
    seal = CacheSeal.take(cache)
    os.rename(cache, tmp_path / "moved")
    assert seal.broken() == [".", "a", "b"]


def test_a_distrusted_cache_compares_the_documents_without_reading_them_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the cache distrusted, the post-run snapshot takes no row from the store, writes none to it, and
    is compared with the pre-run documents by a merge: the run's documents stay in their spools."""
    from catalytic.snapshot import manifest_stream
    from isolation_helpers import never_in_memory

    root = _workspace(tmp_path)
    monkeypatch.chdir(root)
    assert _run(root, "warm", "true")[0] == 0
    never_in_memory(monkeypatch)
    merged: list[str] = []
    original = manifest_stream.documents_diff
    monkeypatch.setattr(
        manifest_stream, "documents_diff", lambda a, b: merged.append(b.domain) or original(a, b)
    )
    code, status, info = _run(root, "attack", REWRITE_AND_REFRESH)
    assert (code, status["status"], info["cache"]) == (4, "dirty", "distrusted")
    assert merged == ["d"]
    diff = json.loads((root / "runs" / "attack" / "RESTORE_DIFF.json").read_text())
    assert diff["d"] == {"added": {}, "removed": {}, "changed": {"sub/f7": diff["d"]["changed"]["sub/f7"]}}


def test_a_store_that_fails_after_the_command_falls_back_to_memory_with_the_same_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that cannot be used for the post-run snapshot: it is taken again without the store, into
    spools in memory, and compared with the pre-run documents; the verdict and the diff are the same."""
    from catalytic.errors import SnapshotError
    from catalytic.snapshot import stream

    root = _workspace(tmp_path)
    monkeypatch.chdir(root)
    original = stream.scan_domain

    def failing(*args: object, **kwargs: object) -> object:
        if kwargs.get("before") is not None:  # the post-run snapshot, compared through the store
            raise SnapshotError("the snapshot store cannot be used: disk full", path=".", code="STORE")
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(stream, "scan_domain", failing)
    code, status, info = _run(root, "late", "printf changed > d/top && rm d/sub/f3")
    assert (code, status["status"], info["cache"]) == (4, "dirty", "disabled")
    diff = json.loads((root / "runs" / "late" / "RESTORE_DIFF.json").read_text())
    assert list(diff["d"]["changed"]) == ["top"] and list(diff["d"]["removed"]) == ["sub/f3"]
