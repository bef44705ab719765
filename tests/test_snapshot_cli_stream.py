"""``catalytic snapshot`` and ``catalytic diff`` as streams: the same bytes and output as the in-memory
engine, temporary state always removed, manifest files read back entry by entry, constant memory."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalytic.cli import main
from catalytic.cli.output import printable
from catalytic.diff import changes, diff_entries
from catalytic.errors import EXIT_DIRTY, EXIT_USAGE, SnapshotError
from catalytic.ledger.canonical import dumps, json_string
from catalytic.ledger.stream import NotStreamable
from catalytic.paths import sort_key
from catalytic.snapshot import Entry, entries_from_documents, snapshot_tree
from catalytic.snapshot.manifest_file import read_manifest, write_manifest
from catalytic.snapshot.manifest_stream import ManifestReader, sorted_entries
from trees import build_tree

#: Names a stream reader of JSON text must not trip on: quotes, braces, escapes, the marker that ends the
#: manifest object of a manifest file, and the file's own key names.
TRICKY = ['x"q', "br{a}ce", '},"merkle_root":"', "merkle_root", "modes", "back\\slash", "tab\tnl\n", "é"]


def tree(root: Path, variant: str = "") -> Path:
    build_tree(root, extras=False)
    for name in TRICKY:
        (root / name).write_text(name + variant)
    (root / "sub2").mkdir()
    (root / "sub2" / "g").write_text("g" + variant)
    if variant:
        (root / "added").write_text("new")
        (root / "a" / "f03").unlink()
        (root / "exec.sh").chmod(0o700)
        (root / "link").unlink()
        os.symlink("a/f05", root / "link")
        (root / "a.txt").unlink()
        (root / "a.txt").mkdir()
    return root


def old_output(a: list[Entry], b: list[Entry], as_json: bool) -> str:
    """What ``catalytic diff`` printed comparing entries in memory (names and values made printable)."""
    diff = diff_entries(a, b)
    if as_json:
        return dumps(diff.to_json())
    lines: list[tuple[bytes, str]] = []
    for path, value in diff.added.items():
        lines.append((sort_key(path), f"extra    {printable(path)} ({printable(value)})"))
    for path, value in diff.removed.items():
        lines.append((sort_key(path), f"missing  {printable(path)} ({printable(value)})"))
    for path, rec in diff.changed.items():
        detail = f"{printable(rec['before'])} -> {printable(rec['after'])}"
        if "mode_before" in rec:
            detail += f", mode {rec['mode_before']} -> {rec['mode_after']}"
        lines.append((sort_key(path), f"changed  {printable(path)} ({detail})"))
    return "".join(line + "\n" for _key, line in sorted(lines))


def manifest_entries(path: Path) -> list[Entry]:
    manifest, modes, _algorithm, _doc = read_manifest(path)
    return list(entries_from_documents(manifest, modes))


@pytest.mark.parametrize("algorithm", ["sha256", "blake3"])
def test_manifest_file_and_root_are_those_of_the_in_memory_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], algorithm: str
) -> None:
    root = tree(tmp_path / "t")
    out = tmp_path / "streamed.json"
    assert main(["snapshot", str(root), "--hash", algorithm, "--output", str(out), "-q"]) == 0
    printed = capsys.readouterr().out.split()[0]
    snap = snapshot_tree(root, algorithm)
    write_manifest(tmp_path / "memory.json", snap.entries, algorithm, snap.merkle_root)
    assert out.read_bytes() == (tmp_path / "memory.json").read_bytes()
    assert printed == snap.merkle_root


@pytest.mark.parametrize("kind", ["file", "symlink", "empty-dir"])
def test_a_top_that_is_not_a_full_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    target = tmp_path / "top"
    if kind == "file":
        target.write_text("x")
    elif kind == "symlink":
        os.symlink("elsewhere", target)
    else:
        target.mkdir()
    out = tmp_path / "m.json"
    assert main(["snapshot", str(target), "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    snap = snapshot_tree(target)
    write_manifest(tmp_path / "memory.json", snap.entries, "sha256", snap.merkle_root)
    assert out.read_bytes() == (tmp_path / "memory.json").read_bytes()
    assert summary["merkle_root"] == snap.merkle_root and summary["cache"] == "disabled"


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The directory where temporary directories go, to see what is left in it."""
    where = tmp_path / "tmp"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    return where


def test_without_a_cache_dir_nothing_is_left_behind(tmp_path: Path, temp_root: Path) -> None:
    """No store at all (the spools are unnamed files of the temporary directory)."""
    root = tree(tmp_path / "t")
    assert main(["snapshot", str(root), "-o", str(tmp_path / "m.json"), "-q"]) == 0
    assert main(["diff", str(tmp_path / "m.json"), str(root), "-q"]) == 0
    assert main(["diff", str(root), str(root), "-q", "--json"]) == 0
    assert list(temp_root.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "t", "tmp"]


def test_a_failed_snapshot_leaves_nothing_behind(
    tmp_path: Path, temp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from catalytic.snapshot import stream

    seen: list[Path | None] = []

    def failing(path: Path, domain: str, algorithm: str, *, store_dir: Path | None, **_: object) -> None:
        seen.append(store_dir)
        raise SnapshotError("it vanished", path="a", code="RACE")

    monkeypatch.setattr(stream, "scan_domain", failing)
    root = tree(tmp_path / "t")
    out = tmp_path / "m.json"
    assert main(["snapshot", str(root), "-o", str(out), "-q"]) != 0
    assert main(["diff", str(root), str(root), "-q"]) != 0
    assert seen == [None, None]
    assert list(temp_root.iterdir()) == [] and not out.exists()


def test_a_failed_write_leaves_the_old_manifest_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from catalytic.snapshot.spool import Span

    root = tree(tmp_path / "t")
    out = tmp_path / "out" / "m.json"
    out.parent.mkdir()
    out.write_text("the old manifest")

    def broken(self: Span) -> Iterator[bytes]:
        yield b"{"
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Span, "chunks", broken)
    assert main(["snapshot", str(root), "-o", str(out), "-q"]) != 0
    assert "Input/output error" in capsys.readouterr().err
    assert out.read_text() == "the old manifest"
    assert [p.name for p in out.parent.iterdir()] == ["m.json"]


def test_the_cache_dir_keeps_a_store_that_the_next_snapshot_uses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tree(tmp_path / "t")
    cache = tmp_path / "cache" / "deeper"
    summaries = []
    for _ in range(2):
        assert main(["snapshot", str(root), "--cache-dir", str(cache), "--json"]) == 0
        summaries.append(json.loads(capsys.readouterr().out))
    assert [s["cache"] for s in summaries] == ["rebuilt", "used"]
    assert summaries[0]["merkle_root"] == summaries[1]["merkle_root"] == snapshot_tree(root).merkle_root
    assert any(p.name.endswith(".rows.sqlite") for p in cache.iterdir())
    assert main(["snapshot", str(root), "--cache-dir", str(cache), "--no-cache", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cache"] == "disabled"


@pytest.mark.parametrize("as_json", [False, True])
def test_diff_prints_what_the_in_memory_comparison_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    before, after = tree(tmp_path / "before"), tree(tmp_path / "after", "v")
    files = {}
    for name, root in (("before", before), ("after", after)):
        files[name] = tmp_path / f"{name}.json"
        assert main(["snapshot", str(root), "-o", str(files[name]), "-q"]) == 0
    capsys.readouterr()
    entries = {name: manifest_entries(path) for name, path in files.items()}
    flag = ["--json"] if as_json else []
    for a in (str(before), str(files["before"])):
        for b in (str(after), str(files["after"])):
            for x, y, xe, ye in ((a, b, "before", "after"), (b, a, "after", "before")):
                assert main(["diff", x, y, "-q", *flag]) == EXIT_DIRTY
                printed = capsys.readouterr().out
                assert printed == old_output(entries[xe], entries[ye], as_json)
                assert printed.count("\n") > 10 or as_json
        assert main(["diff", a, str(files["before"]), "-q", *flag]) == 0
        assert capsys.readouterr().out == ("" if not as_json else '{"added":{},"changed":{},"removed":{}}\n')


def test_diff_of_a_directory_uses_the_manifest_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tree(tmp_path / "t")
    manifest = tmp_path / "m.json"
    assert main(["snapshot", str(root), "--hash", "blake3", "-o", str(manifest), "-q"]) == 0
    assert main(["diff", str(root), str(manifest), "-q"]) == 0
    capsys.readouterr()
    assert main(["diff", str(root), str(manifest), "--hash", "sha256", "--json", "-q"]) == EXIT_DIRTY
    changed = json.loads(capsys.readouterr().out)["changed"]
    sha256, blake3 = snapshot_tree(root, "sha256").entries, snapshot_tree(root, "blake3").entries
    files = {e.path for e in sha256 if len(e.value) == 64}
    assert set(changed) == files and len(files) > 40
    assert {p: (r["before"], r["after"]) for p, r in changed.items()} == {
        e.path: (e.value, f.value) for e, f in zip(sha256, blake3, strict=True) if e.path in files
    }


def test_diff_usage_errors_are_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tree(tmp_path / "t")
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    for bad, message in (
        (tmp_path / "missing.json", "not a readable manifest"),
        (tmp_path / "other.json", "not a catalytic manifest"),
    ):
        for args in ([str(bad), str(root)], [str(root), str(bad)]):
            assert main(["diff", *args, "-q"]) == EXIT_USAGE
            assert message in capsys.readouterr().err


def test_diff_reads_a_hand_edited_manifest_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before, after = tree(tmp_path / "before"), tree(tmp_path / "after", "v")
    canonical = tmp_path / "c.json"
    assert main(["snapshot", str(before), "-o", str(canonical), "-q"]) == 0
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(json.loads(canonical.read_text()), indent=2))
    assert ManifestReader.open(pretty) is None
    capsys.readouterr()
    assert main(["diff", str(canonical), str(after), "-q"]) == EXIT_DIRTY
    expected = capsys.readouterr().out
    assert main(["diff", str(pretty), str(after), "-q"]) == EXIT_DIRTY
    assert capsys.readouterr().out == expected


def test_diff_reads_a_manifest_from_a_pipe(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    manifest = tmp_path / "m.json"
    assert main(["snapshot", str(root), "-o", str(manifest), "-q"]) == 0
    (root / "a" / "f01").write_text("changed")
    script = f'"$0" -m catalytic diff <(cat "{manifest}") "{root}" --json -q'
    proc = subprocess.run(["bash", "-c", script, sys.executable], check=False, capture_output=True, text=True)
    assert proc.returncode == EXIT_DIRTY, proc.stderr
    assert list(json.loads(proc.stdout)["changed"]) == ["a/f01"]


def test_diff_text_shows_names_that_are_not_utf8_on_a_strict_terminal(tmp_path: Path) -> None:
    """A name that is not UTF-8 (or holds a newline) is printed escaped, one line per difference, even when
    stdout only takes UTF-8."""
    root = tmp_path / "t"
    root.mkdir()
    odd = os.fsdecode(b"caf\xe9")
    (root / odd).write_bytes(b"x")
    (root / "two\nlines").write_bytes(b"y")
    manifest = tmp_path / "m.json"
    assert main(["snapshot", str(root), "-o", str(manifest), "-q"]) == 0
    (root / odd).write_bytes(b"changed")
    (root / "two\nlines").unlink()
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    proc = subprocess.run(
        [sys.executable, "-m", "catalytic", "diff", str(manifest), str(root)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == EXIT_DIRTY, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("changed  caf\\udce9 (") and lines[1].startswith("missing  two\\nlines (")


def big_manifest(path: Path, count: int, *, edit: int = 0, name: str = "n" * 150) -> None:
    """A manifest file of ``count`` files as catalytic writes it; ``edit``: every edit-th file changed."""
    digest = "ab" * 32

    def rows(modes: bool) -> Iterator[str]:
        yield json_string(".") + ':"' + ("0755" if modes else "dir") + '"'
        for i in range(count):
            value = "cd" * 32 if edit and i % edit == 0 else digest
            yield "," + json_string(f"{i:07d}{name}") + ':"' + ("0644" if modes else value) + '"'

    with path.open("w") as out:
        out.write('{"format":"catalytic.manifest/1","hash_algorithm":"sha256","manifest":{')
        out.writelines(rows(False))
        out.write('},"merkle_root":"' + "0" * 64 + '","modes":{')
        out.writelines(rows(True))
        out.write("}}\n")


def test_a_manifest_that_stops_being_canonical_half_way_is_compared_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    big_manifest(a, 5000)
    big_manifest(b, 5000, edit=100)
    text = b.read_text()
    assert text.endswith('"0644"}}\n')
    b.write_text(text[: -len('"0644"}}\n')] + '"644"}}\n')  # no longer schema-valid: read whole
    reader = ManifestReader.open(b)
    assert reader is not None
    with pytest.raises(NotStreamable):
        list(reader.entries())
    reader.close()
    assert main(["diff", str(a), str(b), "-q"]) == EXIT_DIRTY
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 51 and len(set(out)) == 51
    assert out[-1].endswith(", mode 0644 -> 644)")


def test_manifest_files_are_streamed_whatever_their_names(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    for algorithm in ("sha256", "blake3"):
        manifest = tmp_path / f"{algorithm}.json"
        assert main(["snapshot", str(root), "--hash", algorithm, "-o", str(manifest), "-q"]) == 0
        reader = ManifestReader.open(manifest)
        assert reader is not None and reader.algorithm == algorithm
        streamed = list(reader.entries())  # raises NotStreamable if it needed the whole-file path
        reader.close()
        assert streamed == list(sorted_entries(*read_manifest(manifest)[:2]))
        assert {path for path, _v, _m in streamed} >= set(TRICKY)


entry_lists = st.lists(
    st.tuples(
        st.sampled_from(["a", "a/b", "a.b", "a-b", "b", "é", "\udcff", "z"]),
        st.sampled_from(["dir", "ab" * 32, "symlink:x"]),
        st.sampled_from(["0644", "0755", None]),
    ),
    unique_by=lambda t: t[0],
).map(lambda items: sorted(items, key=lambda t: sort_key(t[0])))


@given(entry_lists, entry_lists)
def test_changes_finds_what_diff_entries_finds(
    pre: list[tuple[str, str, str | None]], post: list[tuple[str, str, str | None]]
) -> None:
    expected = diff_entries([Entry(*t) for t in pre], [Entry(*t) for t in post])
    found = list(changes(pre, post))
    assert [c[1] for c in found] == sorted({c[1] for c in found}, key=sort_key)
    assert {c[1]: c[3] for c in found if c[0] == "added"} == expected.added
    assert {c[1]: c[2] for c in found if c[0] == "removed"} == expected.removed
    assert {c[1] for c in found if c[0] == "changed"} == set(expected.changed)


def traced_peak(run: Iterator[None]) -> float:
    """MiB of Python memory the second step of ``run`` allocated at its peak, above what was left before."""
    next(run)  # warm-up: imports and caches
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        next(run, None)
        return (tracemalloc.get_traced_memory()[1] - base) / 2**20
    finally:
        tracemalloc.stop()


def test_snapshot_memory_does_not_grow_with_the_number_of_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 5k files with long names. With its buffers cut to 64 KiB the stream holds ~0.7 MiB whatever the number
    # of files; keeping the document text in memory took ~3.7 MiB here, the in-memory engine's entries more.
    from catalytic.snapshot import spool

    monkeypatch.setattr(spool.Spool, "LIMIT", 1 << 16)
    big = tmp_path / "big"
    for d in range(50):
        (big / f"d{d:03d}").mkdir(parents=True)
        for i in range(100):
            (big / f"d{d:03d}" / f"{i:05d}{'x' * 195}").write_bytes(b"%d" % i)
    small = tmp_path / "small"
    small.mkdir()
    (small / "f").write_text("x")

    def steps() -> Iterator[None]:
        for root in (small, big):
            assert main(["snapshot", str(root), "-o", str(tmp_path / "m.json"), "-j", "1", "-q"]) == 0
            yield

    assert traced_peak(steps()) < 1.5
    assert len(read_manifest(tmp_path / "m.json")[0]) == 5051


@pytest.mark.parametrize("flag", [[], ["--json"]])
def test_diff_memory_does_not_grow_with_the_number_of_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: list[str]
) -> None:
    # Two manifests of 10k files (long names) with 500 differences: reading both into memory took ~8 MiB,
    # streaming them ~1.5 MiB (2.5 MiB for 50k files).
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    big_manifest(a, 10_000)
    big_manifest(b, 10_000, edit=20)
    small = tmp_path / "small.json"
    big_manifest(small, 1)

    def steps() -> Iterator[None]:
        assert main(["diff", str(small), str(small), "-q", *flag]) == 0
        capsys.readouterr()
        yield
        assert main(["diff", str(a), str(b), "-q", *flag]) == EXIT_DIRTY
        yield

    assert traced_peak(steps()) < 4
    printed = capsys.readouterr().out
    found = len(json.loads(printed)["changed"]) if flag else len(printed.splitlines())
    assert found == 500


@pytest.mark.parametrize("command", ["snapshot", "run-json-file"])
def test_an_output_that_is_a_pipe_or_device_is_written_into_never_replaced(
    tmp_path: Path, command: str
) -> None:
    """``-o /dev/null`` must not replace /dev/null by a regular file (a rename would, as root): a FIFO
    stands in for the device here, and is still a FIFO after its reader got the document."""
    import stat
    import threading

    from catalytic.cli import main

    tree = tmp_path / "d"
    tree.mkdir()
    (tree / "f").write_text("x")
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    try:
        if command == "snapshot":
            code = main(["snapshot", "-q", str(tree), "-o", str(fifo)])
        else:
            run = ["run", "-q", "--root", str(tmp_path), "--runs-root", "runs", "--allowed-roots", "runs"]
            code = main([*run, "--catalytic-domains", "d", "--json-file", str(fifo), "--", "true"])
    finally:
        reader.join(10)
        if reader.is_alive():  # nothing was written: unblock the reader (never block here ourselves)
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            reader.join(10)
    assert code == 0
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert json.loads(got[0])
