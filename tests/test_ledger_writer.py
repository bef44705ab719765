"""The ledger writer's durability order: every file's bytes are synced before any is named, and
``STATUS.json`` gets its name only after the others' names are durable."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from catalytic.ledger import format as fmt
from catalytic.ledger.canonical import loads
from catalytic.ledger.writer import write_ledger


def _documents() -> dict[str, Any]:
    docs: dict[str, Any] = {name: {"name": name} for name in fmt.WRITE_ORDER}
    docs[fmt.OUTPUTS] = []
    docs[fmt.WRITE_LOG] = b'{"events":[]}\n'
    return docs


def _record(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    real_fsync, real_link, real_replace = os.fsync, os.link, os.replace

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        real_fsync(fd)
        with lock:
            events.append(("fsync", kind))

    def link(src: Any, dst: Any, **kwargs: Any) -> None:
        real_link(src, dst, **kwargs)
        events.append(("name", os.path.basename(str(dst))))

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        real_replace(src, dst, **kwargs)
        events.append(("name", os.path.basename(str(dst))))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(os, "replace", replace)
    return events


def _check_order(events: list[tuple[str, str]]) -> None:
    names = [what for kind, what in events if kind == "name"]
    assert names == [*fmt.WRITE_ORDER[:-1], fmt.WRITE_LOG, fmt.STATUS]
    first_name = events.index(("name", names[0]))
    # Every file (STATUS included) is on disk before the first one is named.
    assert events[:first_name].count(("fsync", "file")) == len(names)
    status = events.index(("name", fmt.STATUS))
    assert events[status - 1] == ("fsync", "dir")  # the others' names are durable first
    assert events[status + 1 :] == [("fsync", "dir")]  # and so is STATUS's


def test_files_are_synced_together_then_named_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _record(monkeypatch)
    write_ledger(tmp_path, _documents())
    _check_order(events)
    assert loads((tmp_path / fmt.STATUS).read_bytes()) == {"name": fmt.STATUS}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*fmt.WRITE_ORDER, fmt.WRITE_LOG])


def test_without_threads_the_files_are_synced_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    events = _record(monkeypatch)
    monkeypatch.setattr(threading.Thread, "start", refuse)
    write_ledger(tmp_path, _documents())
    _check_order(events)


def test_without_o_tmpfile_temporary_names_are_used_and_cleaned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    events = _record(monkeypatch)
    write_ledger(tmp_path, _documents())
    _check_order(events)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*fmt.WRITE_ORDER, fmt.WRITE_LOG])


def test_a_document_that_cannot_be_encoded_leaves_nothing(tmp_path: Path) -> None:
    docs = _documents()
    docs[fmt.POST_MODES] = {"x": object()}
    with pytest.raises(TypeError):
        write_ledger(tmp_path, docs)
    assert list(tmp_path.iterdir()) == []


def test_a_file_system_that_cannot_link_unnamed_files_gets_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    def no_link(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    expected = tmp_path / "expected"
    expected.mkdir()
    write_ledger(expected, _documents())
    monkeypatch.setattr(os, "link", no_link)
    actual = tmp_path / "actual"
    actual.mkdir()
    write_ledger(actual, _documents())
    assert sorted(p.name for p in actual.iterdir()) == sorted(p.name for p in expected.iterdir())
    for path in expected.iterdir():
        assert (actual / path.name).read_bytes() == path.read_bytes()
        assert stat.S_IMODE((actual / path.name).stat().st_mode) == 0o644


@pytest.mark.parametrize("isolation", ["none", "rollback"])
def test_post_documents_equal_to_pre_are_one_file_under_two_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolation: str
) -> None:
    """A run that changed nothing writes its manifest once: POST_MANIFEST.json and POST_MODES.json are hard
    links of the PRE ones (the same bytes the seed's tools read), and the ledger validates; a dirty run
    writes both."""
    from catalytic.cli import main
    from catalytic.validate import CatalyticLedgerValidator

    (tmp_path / "d" / "s").mkdir(parents=True)
    for i in range(30):
        (tmp_path / "d" / "s" / f"f{i}").write_text(str(i))
    monkeypatch.chdir(tmp_path)
    common = ["run", "-q", "--runs-root", "runs", "--allowed-roots", "runs", "--catalytic-domains", "d"]
    common += ["--isolation", isolation]
    assert main([*common, "--run-id", "clean", "--", "true"]) == 0
    assert main([*common, "--run-id", "dirty", "--", "sh", "-c", "echo x > d/new"]) == 4
    for run, linked in (("clean", True), ("dirty", False)):
        ledger = tmp_path / "runs" / run
        for pre, post in (("PRE_MANIFEST.json", "POST_MANIFEST.json"), ("PRE_MODES.json", "POST_MODES.json")):
            same = os.path.samefile(ledger / pre, ledger / post)
            assert same is linked, (run, post)
            if linked:
                assert (ledger / pre).read_bytes() == (ledger / post).read_bytes()
        assert CatalyticLedgerValidator(ledger).validate()[0] is (run == "clean")
