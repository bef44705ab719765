"""The streamed validator (ledger/stream.py, ledger/entries.py) reports what the whole-file path reports.

Every case validates a ledger twice: as ``catalytic validate`` does (streaming the four large documents
when they are canonical) and with the stream turned off (every document parsed whole, then cut into the
same batches for the same rules), and the two reports must be identical. Each case also pins which path
the first run took, so a stream that silently gave up on everything could not pass.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalytic.diff import diff_entries
from catalytic.ledger.canonical import dumps, encode
from catalytic.ledger.reader import parse_json, schema_problems
from catalytic.ledger.stream import NotStreamable, read_batches
from catalytic.snapshot import entries_from_documents
from catalytic.snapshot.merkle import MERKLE_FORMAT, manifest_root
from catalytic.validate import CatalyticLedgerValidator
from ledger_factory import DOMAIN, Ledger, build_ledger, build_seed_ledger, sha

PRE, POST = "PRE_MANIFEST.json", "POST_MANIFEST.json"
PRE_MODES, POST_MODES = "PRE_MODES.json", "POST_MODES.json"


class WholeFileValidator(CatalyticLedgerValidator):
    """The validator with the streamed pass turned off: every document is parsed whole."""

    def _stream(self, dir_fd: int, v1: bool) -> Any:
        return None


def both(run_dir: Path) -> tuple[dict[str, Any], bool, dict[str, Any]]:
    """(report with streaming, whether it streamed, report of the whole-file path)."""
    validator = CatalyticLedgerValidator(run_dir, check_outputs=False)
    _, streamed_report = validator.validate()
    _, whole_report = WholeFileValidator(run_dir, check_outputs=False).validate()
    return dict(streamed_report), validator.streamed, dict(whole_report)


def codes(report: dict[str, Any]) -> set[str]:
    return {e["code"] for e in report["errors"]}


def _raw(ledger: Ledger, name: str, change: Callable[[bytes], bytes]) -> None:
    path = ledger.path(name)
    path.write_bytes(change(path.read_bytes()))


def _with_roots(ledger: Ledger, wrong: bool = False) -> None:
    pre, post = ledger.read(PRE), ledger.read(POST)
    pre_modes, post_modes = ledger.read(PRE_MODES), ledger.read(POST_MODES)
    roots = {
        d: {
            "pre": manifest_root(pre[d], pre_modes.get(d), "sha256", MERKLE_FORMAT),
            "post": manifest_root(post.get(d, {}), post_modes.get(d), "sha256", MERKLE_FORMAT),
        }
        for d in pre
    }
    if wrong:
        roots[DOMAIN]["post"] = "0" * 64

    def change(info: dict[str, Any]) -> None:
        info["merkle_format"] = MERKLE_FORMAT
        info["merkle_roots"] = roots

    ledger.edit("RUN_INFO.json", change)


def _set(name: str, path: str, value: str | None, domain: str = DOMAIN) -> Callable[[Ledger], None]:
    def apply(ledger: Ledger) -> None:
        def change(doc: dict[str, Any]) -> None:
            entries = doc.setdefault(domain, {})
            if value is None:
                del entries[path]
            else:
                entries[path] = value

        ledger.edit(name, change)

    return apply


def _both_phases(path: str, value: str, mode: str | None) -> Callable[[Ledger], None]:
    def apply(ledger: Ledger) -> None:
        for name in (PRE, POST):
            _set(name, path, value)(ledger)
        if mode is not None:
            for name in (PRE_MODES, POST_MODES):
                _set(name, path, mode)(ledger)

    return apply


def _many_bad_paths(ledger: Ledger) -> None:
    for name, value in ((PRE, "dir"), (POST, "dir"), (PRE_MODES, "0755"), (POST_MODES, "0755")):
        ledger.edit(name, lambda doc, v=value: doc[DOMAIN].update({f"x//{i:03d}": v for i in range(150)}))


def _odd_names(ledger: Ledger) -> None:
    # Undecodable bytes (\\udcXX), non-ASCII, a newline and a quote: escapes, and an order that is not
    # the code point order ("\\udc80" is the byte 0x80, before the UTF-8 of "一").
    names = ["caf\udce9", "café", "\udc80x", "一", 'quote"d', "new\nline", "tab\there", "back\\slash"]
    for name in names:
        _both_phases(name, sha(name.encode("utf-8", "surrogateescape")), "0644")(ledger)


def _reordered(ledger: Ledger) -> None:
    # Valid compact JSON, every key once, but "sub" before ".": only the order is not canonical.
    manifest = ledger.read(PRE)[DOMAIN]
    reordered = {"sub": manifest.pop("sub"), **manifest}
    text = json.dumps({DOMAIN: reordered}, separators=(",", ":"), ensure_ascii=False)
    ledger.path(PRE).write_text(text + "\n", "utf-8")


CASES: list[tuple[str, Callable[[Ledger], None], bool, set[str]]] = [
    ("clean", lambda ledger: None, True, set()),
    ("edited value", _set(POST, "a.txt", sha(b"beta\n")), True, {"DIFF_MISMATCH", "NOT_RESTORED"}),
    ("added entry", _set(POST, "new", "fifo"), True, {"DIFF_MISMATCH", "NOT_RESTORED", "MODES_MISMATCH"}),
    ("removed entry", _set(POST, "sub/b.bin", None), True, {"NOT_RESTORED", "MODES_MISMATCH"}),
    ("mode changed", _set(POST_MODES, "a.txt", "0600"), True, {"DIFF_MISMATCH", "NOT_RESTORED"}),
    ("mode missing", _set(POST_MODES, "a.txt", None), True, {"MODES_MISMATCH", "NOT_RESTORED"}),
    ("mode for a symlink", _set(PRE_MODES, "link", "0777"), True, {"MODES_MISMATCH"}),
    ("mode for no entry", _set(PRE_MODES, "ghost", "0644"), True, {"MODES_MISMATCH"}),
    ("modes domain not in manifest", _set(PRE_MODES, ".", "0755", "elsewhere"), True, {"MODES_MISMATCH"}),
    ("domain only in POST", _set(POST, ".", "dir", "AAA"), True, {"DOMAIN_MISMATCH", "MODES_MISMATCH"}),
    (
        "empty domain",
        lambda ledger: ledger.edit(PRE, lambda d: d.update({"Z": {}})),
        True,
        {"DOMAIN_MISMATCH"},
    ),
    ("bad path", _both_phases("../up", "dir", "0755"), True, {"BAD_PATH"}),
    ("more than 100 bad paths", _many_bad_paths, True, {"BAD_PATH"}),
    ("odd names", _odd_names, True, set()),
    ("Merkle roots", _with_roots, True, set()),
    ("wrong Merkle root", lambda ledger: _with_roots(ledger, wrong=True), True, {"MERKLE_MISMATCH"}),
    (
        "reordered keys",
        _reordered,
        False,
        {"NOT_CANONICAL"},
    ),
    (
        "duplicate key",
        lambda ledger: _raw(ledger, PRE, lambda b: b.replace(b'{".":"dir",', b'{".":"dir",".":"dir",')),
        False,
        {"BAD_JSON"},
    ),
    (
        "white space",
        lambda ledger: _raw(ledger, PRE_MODES, lambda b: b.replace(b'":"0644"', b'": "0644"', 1)),
        False,
        {"NOT_CANONICAL"},
    ),
    (
        "escaped letter",
        lambda ledger: _raw(ledger, POST, lambda b: b.replace(b'"a.txt"', b'"\\u0061.txt"')),
        False,
        {"NOT_CANONICAL"},
    ),
    (
        "upper-case escape",
        lambda ledger: _raw(ledger, POST, lambda b: b.replace(b'"sub"', b'"s\\u0075b"')),
        False,
        {"NOT_CANONICAL"},
    ),
    ("truncated", lambda ledger: _raw(ledger, POST, lambda b: b[:-20]), False, {"BAD_JSON"}),
    ("no final newline", lambda ledger: _raw(ledger, POST_MODES, lambda b: b[:-1]), False, {"NOT_CANONICAL"}),
    (
        "two final newlines",
        lambda ledger: _raw(ledger, POST_MODES, lambda b: b + b"\n"),
        False,
        {"NOT_CANONICAL"},
    ),
    ("wrong mode format", _set(PRE_MODES, "a.txt", "644"), False, {"SCHEMA"}),
    ("wrong value", _set(PRE, "a.txt", "file"), False, {"SCHEMA"}),
    (
        "number value",
        lambda ledger: ledger.edit(PRE, lambda d: d[DOMAIN].update({"a.txt": 7})),
        False,
        {"SCHEMA"},
    ),
    (
        "not UTF-8",
        lambda ledger: _raw(ledger, PRE, lambda b: b.replace(b"a.txt", b"a\xff.txt")),
        False,
        {"BAD_JSON"},
    ),
    ("missing MODES", lambda ledger: ledger.path(POST_MODES).unlink(), False, {"MISSING_FILE"}),
    (
        "symlinked manifest",
        lambda ledger: (ledger.path(PRE).unlink(), os.symlink(POST, ledger.path(PRE))),
        False,
        {"BAD_FILE"},
    ),
]


@pytest.mark.parametrize(
    ("tamper", "expect_stream", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_streamed_report_equals_whole_file_report(
    tmp_path: Path, tamper: Callable[[Ledger], None], expect_stream: bool, expected: set[str]
) -> None:
    ledger = build_ledger(tmp_path)
    tamper(ledger)
    streamed, did_stream, whole = both(ledger.run_dir)
    assert did_stream is expect_stream
    assert streamed == whole
    assert expected <= codes(streamed)
    assert streamed["passed"] is (not expected and not streamed["errors"])


def test_capped_problems_are_counted_the_same(tmp_path: Path) -> None:
    ledger = build_ledger(tmp_path)
    _many_bad_paths(ledger)
    streamed, did_stream, whole = both(ledger.run_dir)
    assert did_stream
    more = [e for e in streamed["errors"] if "more not listed" in e["message"]]
    assert more == [e for e in whole["errors"] if "more not listed" in e["message"]]
    assert more and more[0]["message"] == "PRE_MANIFEST.json: 50 more not listed"


def test_seed_ledgers_give_the_same_report(tmp_path: Path) -> None:
    # Indented JSON and no MODES files: the whole-file path, as before.
    seed = build_seed_ledger(tmp_path / "indented")
    streamed, did_stream, whole = both(seed.run_dir)
    assert not did_stream
    assert streamed == whole
    assert streamed["passed"]
    # The same ledger in canonical form, with MODES that leave out a file (allowed before
    # catalytic.ledger/1) and one that names no entry (never allowed): streamed, same report.
    seed = build_seed_ledger(tmp_path / "canonical")
    for name in (PRE, POST):
        seed.write(name, seed.read(name))
    seed.write(PRE_MODES, {DOMAIN: {"index_temp_001.json": "0644"}})
    seed.write(POST_MODES, {DOMAIN: {"index_temp_001.json": "0644", "ghost": "0644"}})
    streamed, did_stream, whole = both(seed.run_dir)
    assert did_stream
    assert streamed == whole
    assert codes(streamed) == {"MODES_MISMATCH"}


def test_a_document_in_any_key_order_is_checked_in_byte_order(tmp_path: Path) -> None:
    """A hand-written document is checked by the same rules in the same order as its canonical form: its
    problems are those of the canonical ledger (in byte order of the paths, whatever the file's order), plus
    NOT_CANONICAL for each rewritten file."""
    ledger = build_ledger(tmp_path / "run")
    for name in (PRE, POST):
        _set(name, "zz//a", "dir")(ledger)
        _set(name, "b/../c", "dir")(ledger)
        _set(name, "x/./y", "dir", domain="zzz")(ledger)
    streamed, did_stream, _ = both(ledger.run_dir)
    assert did_stream
    assert [e["message"] for e in streamed["errors"] if e["code"] == "BAD_PATH"][:3] == [
        f"{PRE}: path 'b/../c' in domain {DOMAIN!r} goes through '..'",
        f"{PRE}: path 'zz//a' in domain {DOMAIN!r} is not normalised (empty or '.' segment)",
        f"{PRE}: path 'x/./y' in domain 'zzz' is not normalised (empty or '.' segment)",
    ]
    for name in (PRE, POST, PRE_MODES, POST_MODES):
        reversed_doc = {d: dict(reversed(e.items())) for d, e in reversed(ledger.read(name).items())}
        ledger.path(name).write_text(json.dumps(reversed_doc, indent=1), "utf-8")
    whole, did_stream, _ = both(ledger.run_dir)
    assert not did_stream
    rewritten = [f"{name} is not in canonical JSON form" for name in (PRE, POST, PRE_MODES, POST_MODES)]
    assert [e["message"] for e in whole["errors"] if e["code"] == "NOT_CANONICAL"] == rewritten
    assert [e for e in whole["errors"] if e["code"] != "NOT_CANONICAL"] == streamed["errors"]


# -- property tests ----------------------------------------------------------------------------------

_segment = st.text(
    st.characters(codec="utf-8", exclude_characters="/") | st.sampled_from(["\udc80", "\udcff", "\udce9"]),
    min_size=1,
    max_size=6,
)
_path = st.lists(_segment, min_size=1, max_size=3).map("/".join) | st.sampled_from(
    [".", "..", "a//b", "/abs"]
)
_value = st.sampled_from(
    ["dir", "fifo", "socket", "chardev:1:3", "other:140", "symlink:t", "symlink:\udc80\n"]
) | (st.binary(min_size=1, max_size=4).map(sha))
_mode = st.sampled_from(["0644", "0755", "4755", "0000"])
_entries = st.dictionaries(_path, st.tuples(_value, _mode | st.none()), max_size=12)


def _split(entries: dict[str, tuple[str, str | None]]) -> tuple[dict[str, str], dict[str, str]]:
    manifest = {p: v for p, (v, _) in entries.items()}
    modes = {p: m for p, (v, m) in entries.items() if m is not None and not v.startswith("symlink:")}
    return manifest, modes


@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pre=_entries,
    post_changes=_entries,
    removed=st.sets(_path, max_size=3),
    extra_domain=st.booleans(),
    record_diff=st.booleans(),
    roots=st.sampled_from(["none", "right", "wrong"]),
)
def test_generated_ledgers_give_the_same_report(
    pre: dict[str, tuple[str, str | None]],
    post_changes: dict[str, tuple[str, str | None]],
    removed: set[str],
    extra_domain: bool,
    record_diff: bool,
    roots: str,
) -> None:
    post = {**pre, **post_changes}
    for path in removed:
        post.pop(path, None)
    pre_manifest, pre_modes = _split(pre)
    post_manifest, post_modes = _split(post)
    with tempfile.TemporaryDirectory() as tmp:
        ledger = build_ledger(Path(tmp))
        docs = {
            PRE: {DOMAIN: pre_manifest},
            PRE_MODES: {DOMAIN: pre_modes},
            POST: {DOMAIN: post_manifest},
            POST_MODES: {DOMAIN: post_modes},
        }
        if extra_domain:
            docs[PRE]["B/other"] = dict(pre_manifest)
            docs[POST_MODES]["B/other"] = dict(post_modes)
        for name, doc in docs.items():
            ledger.write(name, doc)
        if record_diff:
            diff = diff_entries(
                entries_from_documents(pre_manifest, pre_modes),
                entries_from_documents(post_manifest, post_modes),
            )
            ledger.write("RESTORE_DIFF.json", {DOMAIN: diff.to_json()})
        if roots != "none":
            _with_roots(ledger, wrong=roots == "wrong")
        streamed, did_stream, whole = both(ledger.run_dir)
        assert did_stream
        assert streamed == whole


def _stream_entries(path: Path, kind: str) -> dict[str, dict[str, str]]:
    fd = os.open(path, os.O_RDONLY)
    try:
        doc: dict[str, dict[str, str]] = {}
        for domain, keys, values in read_batches(fd, kind, 1 << 30):  # type: ignore[arg-type]
            doc.setdefault(domain, {}).update(zip(keys, values, strict=True))
        return doc
    finally:
        os.close(fd)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=_entries,
    cut=st.integers(min_value=0),
    length=st.integers(min_value=0, max_value=3),
    insert=st.sampled_from(
        [b"", b" ", b"\n", b'"', b"\\", b",", b"}", b"{", b":", b"\\u0041", b"\xc3", b"\\udc80", b"a"]
    ),
)
def test_the_stream_reader_accepts_only_canonical_schema_valid_files(
    entries: dict[str, tuple[str, str | None]], cut: int, length: int, insert: bytes
) -> None:
    manifest, _ = _split(entries)
    canonical = encode({DOMAIN: manifest, "z": {}})
    position = cut % (len(canonical) + 1)
    data = canonical[:position] + insert + canonical[position + length :]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / PRE
        path.write_bytes(data)
        try:
            streamed = _stream_entries(path, "manifest")
        except NotStreamable:
            streamed = None
    if streamed is None:
        # Refusing is always safe (the whole-file path decides); it must not refuse canonical files.
        assert data != canonical
        return
    document = parse_json(data)
    assert encode(document) == data
    assert schema_problems(document, "manifest.schema.json", PRE) == []
    assert streamed == document
    assert list(streamed) == list(document)


def test_the_stream_reader_reads_across_blocks(tmp_path: Path) -> None:
    # Names with escapes land on block boundaries somewhere in a file of several blocks.
    manifest = {f"d/{i:06d}-\udce9-\n-{'x' * (i % 97)}": sha(str(i).encode()) for i in range(20000)}
    modes = dict.fromkeys(manifest, "0644")
    (tmp_path / PRE).write_text(dumps({"a": manifest, "b": {}, "c": manifest}), "utf-8")
    (tmp_path / PRE_MODES).write_text(dumps({"a": modes}), "utf-8")
    assert (tmp_path / PRE).stat().st_size > 4 << 20
    assert _stream_entries(tmp_path / PRE, "manifest") == {"a": manifest, "b": {}, "c": manifest}
    assert _stream_entries(tmp_path / PRE_MODES, "modes") == {"a": modes}
