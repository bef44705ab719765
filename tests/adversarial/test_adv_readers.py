"""Hostile documents (hypothesis): every reader of a ledger, manifest, chain, seal or config takes any
byte string and answers with a value, a clean ``CatalyticError`` (or a validator FAIL), never another
exception; every command on such a document exits 1 or 2 with one line, never 3.

The bytes: random bytes, invalid UTF-8, 200,000 ``[``, complete but deep nesting, every wrong
top-level type, ``NaN`` and infinities, numbers out of range, duplicate keys, random JSON, and the real
document with one value replaced by random JSON.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalytic.cli import main
from catalytic.errors import CatalyticError
from catalytic.ledger import format as fmt
from catalytic.ledger.canonical import MAX_DEPTH, loads
from catalytic.ledger.digest import DIGEST_FILE

from .conftest import FULL, tally

SETTINGS = settings(
    max_examples=1000 if FULL else 25,
    deadline=None,
    derandomize=not FULL,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
RUNS = "CONTRACTS/_runs"
FIXED = [
    b"",
    b"[" * 200_000,
    b"{" * 200_000,
    b'{"a":' * 5000 + b"1" + b"}" * 5000,
    b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
    b"[1,2]",
    b"1",
    b'"text"',
    b"null",
    b"true",
    b"{}",
    b"[]",
    b"NaN",
    b'{"a": NaN}',
    b'{"a": Infinity}',
    b"[-Infinity]",
    b"1e99999",
    b'{"a": -1e400}',
    b"9" * 5000,
    b'{"a": 1, "a": 2}',
    b"\xff\xfe{}",
    b'{"\xed\xa0\x80": 1}',
    b'"\\ud800"',
    b"[1,2]\n[3]",
]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _replaced(original: bytes, data: st.DataObject) -> bytes:
    """The real document with one value (at the top or one level down) replaced by random JSON."""
    try:
        document = json.loads(original)
    except ValueError:
        return original
    value = data.draw(JSON)
    if isinstance(document, dict) and document:
        key = data.draw(st.sampled_from(sorted(document)))
        inner = document[key]
        if isinstance(inner, dict) and inner and data.draw(st.booleans()):
            inner[data.draw(st.sampled_from(sorted(inner)))] = value
        else:
            document[key] = value
    elif isinstance(document, list) and document:
        document[data.draw(st.integers(0, len(document) - 1))] = value
    else:
        document = value
    return json.dumps(document).encode()


def hostile(original: bytes, data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["fixed", "bytes", "json", "replaced", "deep"]))
    if kind == "fixed":
        return data.draw(st.sampled_from(FIXED))
    if kind == "bytes":
        return data.draw(st.binary(max_size=300))
    if kind == "json":
        return json.dumps(data.draw(JSON)).encode()
    if kind == "deep":
        n = data.draw(st.integers(MAX_DEPTH - 2, 3000))
        return data.draw(st.sampled_from([b"[" * n + b"]" * n, b'{"k":' * n + b"0" + b"}" * n]))
    return _replaced(original, data)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with two sealed, chained runs (r1 restored with an output, r2 dirty) and a snapshot."""
    ws = tmp_path_factory.mktemp("readers")
    (ws / "CONTRACTS").mkdir()  # the seed's layout: ledgers in CONTRACTS/_runs
    (ws / "scratch").mkdir()
    (ws / "scratch" / "a.txt").write_text("a\n")
    cwd = os.getcwd()
    os.chdir(ws)
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            assert (
                main(
                    [
                        "run",
                        "-q",
                        "--run-id",
                        "r1",
                        "--catalytic-domains",
                        "scratch",
                        "--durable-outputs",
                        "CORTEX/_generated/out.txt",
                        "--",
                        "sh",
                        "-c",
                        "mkdir -p CORTEX/_generated && echo out > CORTEX/_generated/out.txt",
                    ]
                )
                == 0
            )
            assert (
                main(
                    [
                        "run",
                        "-q",
                        "--run-id",
                        "r2",
                        "--catalytic-domains",
                        "scratch",
                        "--",
                        "sh",
                        "-c",
                        "echo more >> scratch/a.txt",
                    ]
                )
                == 4
            )
            assert main(["snapshot", "scratch", "-q", "--output", "snap.json"]) == 0
    finally:
        os.chdir(cwd)  # fmt: skip
    return ws


@contextlib.contextmanager
def planted(path: Path, data: bytes) -> Iterator[None]:
    """``path`` holds ``data`` for the duration of the block, then its own bytes again."""
    original = path.read_bytes()
    path.write_bytes(data)
    try:
        yield
    finally:
        path.write_bytes(original)


def _show(lab: Path) -> Any:
    from catalytic.cli.show import load_run

    return load_run(lab / RUNS / "r1")


def _export(lab: Path) -> Any:
    from catalytic.integrations.intoto import link_fields

    return link_fields(lab / RUNS / "r1")


def _runs(lab: Path) -> Any:
    from catalytic.cli.runs import list_runs

    return list_runs(lab / RUNS)


def _diff(lab: Path) -> Any:
    # The manifest's reader is `catalytic diff` itself (streamed, or read whole with its shape checked).
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["diff", str(lab / "snap.json"), str(lab / "scratch")])
    assert rc in (0, 1, 2) and err.getvalue().count("catalytic: error:") <= 1, err.getvalue()


def _config(lab: Path) -> Any:
    from catalytic.policy import load_config

    return load_config(lab)


def _read_document(name: str) -> Callable[[Path], Any]:
    def read(lab: Path) -> Any:
        from catalytic.ledger.reader import open_dir, read_document

        fd = open_dir(lab / RUNS / "r1")
        try:
            return read_document(fd, name)
        finally:
            os.close(fd)

    return read


#: (document relative to the lab, reader) for every reader that raises on a bad document.
RAISING: list[tuple[str, str, Callable[[Path], Any]]] = [
    *((f"{RUNS}/r1/{name}", f"read_document:{name}", _read_document(name)) for name in fmt.WRITE_ORDER),
    *((f"{RUNS}/r1/{name}", f"show:{name}", _show) for name in (fmt.RUN_INFO, fmt.STATUS, fmt.OUTPUTS)),
    *((f"{RUNS}/r1/{name}", f"export:{name}", _export) for name in (*fmt.WRITE_ORDER, DIGEST_FILE)),
    *((f"{RUNS}/r1/{name}", f"runs:{name}", _runs) for name in (fmt.RUN_INFO, fmt.STATUS)),
    ("snap.json", "diff:manifest", _diff),
    ("catalytic.toml", "config:catalytic.toml", _config),
    ("pyproject.toml", "config:pyproject.toml", _config),
]


@pytest.mark.parametrize(
    ("rel", "reader"), [(rel, fn) for rel, _, fn in RAISING], ids=[i for _, i, _ in RAISING]
)
@SETTINGS
@given(data=st.data())
def test_a_reader_answers_any_bytes_with_a_value_or_a_catalytic_error(
    lab: Path, rel: str, reader: Callable[[Path], Any], data: st.DataObject
) -> None:
    path = lab / rel
    if not path.exists():
        path.write_bytes(b"")
    with planted(path, hostile(path.read_bytes(), data)):
        try:
            reader(lab)
        except CatalyticError as exc:
            assert "\n" not in exc.message, exc.message
    tally("readers")


@SETTINGS
@given(data=st.data())
def test_the_parser_answers_any_bytes_with_a_value_or_a_value_error(data: st.DataObject) -> None:
    raw = hostile(b'{"a": [1, {"b": "c"}]}', data)
    try:
        value = loads(raw, unique_keys=data.draw(st.booleans()))
    except ValueError as exc:
        assert "\n" not in str(exc)
    else:
        json.dumps(value, allow_nan=False)  # finite, and shallow enough to encode again


VALIDATED = [*(f"r1/{name}" for name in (*fmt.WRITE_ORDER, DIGEST_FILE)), fmt.CHAIN_FILE]


@pytest.mark.parametrize("rel", VALIDATED)
@SETTINGS
@given(data=st.data())
def test_the_validator_fails_any_broken_document_without_an_internal_error(
    lab: Path, rel: str, data: st.DataObject
) -> None:
    from catalytic.ledger.integrity import check_chain
    from catalytic.validate import CatalyticLedgerValidator

    path = lab / RUNS / rel
    original = path.read_bytes()
    raw = hostile(original, data)
    with planted(path, raw):
        ok, report = CatalyticLedgerValidator(lab / RUNS / "r1", root=lab).validate()
        chain = check_chain(lab / RUNS)
    codes = {e["code"] for e in report["errors"]} | {p.code for p in chain}
    assert "INTERNAL" not in codes, report["errors"]
    if raw != original:
        # Any change to a sealed, chained ledger or to its chain line is found.
        assert not ok or chain, (rel, raw[:80])
    tally("readers")


#: The commands of the issue, each on the r1 ledger (or the runs root).
COMMANDS = [
    ["validate", "--all"],
    ["validate", "--run-dir", f"{RUNS}/r1"],
    ["runs"],
    ["runs", "--json"],
    ["show", "r1"],
    ["show", "r1", "--json"],
    ["export", "r1", "-o", "link.json"],
    ["diff", f"{RUNS}/r1/PRE_MANIFEST.json", "scratch"],
    ["diff", "snap.json", "scratch"],
]
BROKEN = {
    "deep": b"[" * 200_000,
    "deep_complete": b"[" * 900 + b"]" * 900,
    "list": b"[1,2]",
    "nan": b'{"run_id": NaN}',
    "huge": b"1e99999",
    "utf8": b"\xff\xfe",
}
PLANTED = [
    f"{RUNS}/r1/{name}" for name in (fmt.RUN_INFO, fmt.STATUS, fmt.PRE_MANIFEST, fmt.OUTPUTS, DIGEST_FILE)
]


@pytest.mark.parametrize("kind", sorted(BROKEN))
@pytest.mark.parametrize("rel", [*PLANTED, f"{RUNS}/{fmt.CHAIN_FILE}", "snap.json"])
def test_no_command_exits_3_on_a_broken_document(
    lab: Path, rel: str, kind: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(lab)
    with planted(lab / rel, BROKEN[kind]):
        for command in COMMANDS:
            rc = main(command)
            out, err = capsys.readouterr()
            assert rc != 3 and "internal error" not in err and "Traceback" not in err, (command, err)
            if command[0] == "runs":
                assert rc == 0  # runs lists broken ledgers: an unreadable STATUS.json shows as such
                if rel.endswith(fmt.STATUS):
                    assert "unreadable" in out
            elif rc != 0:
                assert rc in (1, 2), (command, rc)
                errors = [line for line in err.splitlines() if line.startswith("catalytic: error:")]
                assert len(errors) <= 1, (command, err)
                assert errors or "FAIL" in out, (command, out, err)
    tally("readers", cases=len(COMMANDS))


@pytest.mark.parametrize(
    "document",
    [
        {"format": "catalytic.manifest/1"},
        {"format": "catalytic.manifest/1", "manifest": [1]},
        {"format": "catalytic.manifest/1", "manifest": {"a": 1}},
        {"format": "catalytic.manifest/1", "manifest": {}, "modes": 5},
        {"format": "catalytic.manifest/1", "manifest": {}, "hash_algorithm": "md5"},
    ],
)
def test_diff_refuses_a_manifest_of_the_wrong_shape(
    lab: Path, document: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(lab)
    with planted(lab / "snap.json", json.dumps(document).encode()):
        assert main(["diff", "snap.json", "scratch"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a catalytic manifest" in err


def test_show_prints_ledger_text_as_text(lab: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    # rich markup in a reason (a closing tag that opens nothing) once raised MarkupError.
    monkeypatch.chdir(lab)
    status = lab / RUNS / "r2" / fmt.STATUS
    document = json.loads(status.read_bytes())
    document["reason"] = "[/bold] [red]x"
    with planted(status, json.dumps(document).encode()):
        assert main(["show", "r2"]) == 0
    assert "[/bold] [red]x" in capsys.readouterr().out


@pytest.fixture(autouse=True)
def _no_leftovers(lab: Path) -> Iterator[None]:
    yield
    for name in ("link.json",):
        with contextlib.suppress(FileNotFoundError):
            (lab / name).unlink()
    for name in ("catalytic.toml", "pyproject.toml"):
        path = lab / name
        if path.exists() and path.read_bytes() == b"":
            path.unlink()
    shutil.rmtree(lab / RUNS / "_cache", ignore_errors=True)
