"""Hostile ledgers (hypothesis): the validator never raises, never passes a broken ledger, never
follows a path out of the workspace, and always names the problem.

Each case starts from a real ledger written by ``catalytic run`` (one restored, one dirty run) and
breaks it in one way. Every mutation here makes the ledger wrong, so ``passed`` is always a false
verdict; an ``INTERNAL`` error (the validator's own catch-all) or an exception counts as a traceback.
Quick sizes run in CI; ``CATALYTIC_ADVERSARIAL=full`` runs more than 10,000 cases.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalytic.cli import main
from catalytic.ledger import format as fmt
from catalytic.ledger.canonical import encode
from catalytic.validate import CatalyticLedgerValidator

from .conftest import FULL, tally

PER_TEST = 2000 if FULL else 40
SETTINGS = settings(
    max_examples=PER_TEST,
    deadline=None,
    derandomize=not FULL,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FILES = list(fmt.WRITE_ORDER)
KNOWN_CODES = {
    "NOT_FOUND", "BAD_FILE", "MISSING_FILE", "INCOMPLETE", "BAD_JSON", "SCHEMA", "NOT_CANONICAL",
    "BAD_PATH", "RUN_ID_MISMATCH", "DOMAIN_MISMATCH", "MODES_MISMATCH", "NOT_VERIFIED",
    "DIFF_MISMATCH", "NOT_RESTORED", "STATUS_MISMATCH", "DIRTY", "INTERRUPTED", "NOT_ALLOWED",
    "UNDECLARED", "OUTPUT_UNLISTED", "OUTPUT_MISSING", "OUTPUT_CHANGED", "MERKLE_MISMATCH",
}  # fmt: skip


class Lab:
    """A workspace with two real ledgers to copy from, and a scratch ledger to break."""

    def __init__(self, base: Path) -> None:
        self.ws = base / "ws"
        self.runs = self.ws / "CONTRACTS" / "_runs"
        self.outside = base / "outside"
        (self.ws / "scratch" / "sub").mkdir(parents=True)
        (self.ws / "CONTRACTS").mkdir()  # the seed's layout: ledgers in CONTRACTS/_runs
        (self.ws / "scratch" / "a.txt").write_text("a\n")
        (self.ws / "scratch" / "sub" / "b.bin").write_bytes(b"\x00\x01")
        self.outside.mkdir()
        self.templates: dict[str, dict[str, bytes]] = {}
        for kind, command in (
            ("restored", "mkdir -p CORTEX/_generated && echo out > CORTEX/_generated/out.txt"),
            ("dirty", "echo more >> scratch/a.txt"),
        ):
            subprocess.run(
                [sys.executable, "-m", "catalytic", "run", "-q", "--run-id", kind,
                 "--catalytic-domains", "scratch", "--durable-outputs", "CORTEX/_generated",
                 "--", "sh", "-c", command],
                cwd=self.ws, check=False, capture_output=True,
            )  # fmt: skip
            self.templates[kind] = {n: (self.runs / kind / n).read_bytes() for n in FILES}
        assert CatalyticLedgerValidator(self.runs / "restored", root=self.ws).validate()[0]
        assert not CatalyticLedgerValidator(self.runs / "dirty", root=self.ws).validate()[0]
        # The broken ledgers are written without a seal: with the chain beside them every one would also
        # be DIGEST_MISSING, which would hide whether the fault itself was found. The chain has its own tests.
        (self.runs / "LEDGER.jsonl").unlink()
        # Bait: a copy of the good ledger outside the workspace, so following a link would "pass".
        for name, data in self.templates["restored"].items():
            (self.outside / name).write_bytes(data)
        (self.outside / "out.txt").write_text("out\n")

    def docs(self, kind: str) -> dict[str, Any]:
        return {n: json.loads(b) for n, b in self.templates[kind].items()}

    def write(self, kind: str, files: dict[str, bytes | None], run_id: str | None = None) -> Path:
        """The ledger ``kind`` with ``files`` replaced (None: removed), under its run id."""
        run_dir = self.runs / (run_id or kind)
        if run_dir.is_symlink() or run_dir.is_file():
            run_dir.unlink()
        elif run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir()
        for name, data in {**self.templates[kind], **files}.items():
            if data is not None:
                (run_dir / name).write_bytes(data)
        return run_dir


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return Lab(tmp_path_factory.mktemp("validator"))


def check(lab: Lab, run_dir: Path, category: str, expect: set[str] | None = None) -> None:
    """Validate in-process and through the CLI; record the verdict; fail loudly on a bad one."""
    crashed = 0
    try:
        passed, report = CatalyticLedgerValidator(run_dir, root=lab.ws).validate()
    except Exception as exc:  # pragma: no cover - this is what the suite hunts for
        tally(f"validator:{category}", tracebacks=1)
        raise AssertionError(f"validator raised {exc!r}") from exc
    codes = {e["code"] for e in report["errors"]}
    crashed += int("INTERNAL" in codes)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["validate", "--root", str(lab.ws), "--run-dir", str(run_dir)])
    text = out.getvalue() + err.getvalue()
    crashed += int("Traceback" in text or "internal error" in text)
    tally(f"validator:{category}", false_restored=int(passed or rc == 0), tracebacks=int(bool(crashed)))
    assert not crashed, report
    assert not passed and rc == 1, (category, report)
    assert report["errors"] and all(e["message"] for e in report["errors"])
    assert codes <= KNOWN_CODES, codes
    if expect is not None:
        assert codes & expect, (category, expect, report["errors"])
    assert "FAIL:" in out.getvalue()


# -- strategies ---------------------------------------------------------------------------------

names = st.sampled_from(FILES)
kinds = st.sampled_from(["restored", "dirty"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
BAD_PATHS = st.sampled_from(
    [
        "../escape",
        "a/../../b",
        "/etc/passwd",
        "C:\\x",
        "a\\b",
        "a\x00b",
        "",
        ".",
        "a//b",
        "./a",
        "a/",
        "..",
        "../",
    ]
)


def _paths_of(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            found += _paths_of(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += _paths_of(v, (*prefix, i))
    return found


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    doc[path[0]] = _set(doc[path[0]], path[1:], value)
    return doc


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# -- cases ----------------------------------------------------------------------------------------


@SETTINGS
@given(kind=kinds, name=names, data=st.data())
def test_truncated(lab: Lab, kind: str, name: str, data: st.DataObject) -> None:
    raw = lab.templates[kind][name]
    cut = data.draw(st.integers(0, len(raw) - 1))
    check(lab, lab.write(kind, {name: raw[:cut]}), "truncated")


@SETTINGS
@given(kind=kinds, name=names, junk=st.binary(min_size=1, max_size=64), data=st.data())
def test_invalid_json(lab: Lab, kind: str, name: str, junk: bytes, data: st.DataObject) -> None:
    raw = lab.templates[kind][name]
    at = data.draw(st.integers(0, len(raw)))
    mutated = raw[:at] + junk + raw[at:]
    try:
        json.loads(mutated)
        return  # still JSON (e.g. a space inside a string): a content change, covered elsewhere
    except ValueError:
        pass
    check(lab, lab.write(kind, {name: mutated}), "invalid_json")


@SETTINGS
@given(kind=kinds, name=names, data=st.data())
def test_wrong_types(lab: Lab, kind: str, name: str, data: st.DataObject) -> None:
    docs = lab.docs(kind)
    doc = docs[name]
    path = data.draw(st.sampled_from(_paths_of(doc)))
    current: Any = doc
    for step in path:
        current = current[step]
    value = data.draw(json_values.filter(lambda v: _type_name(v) != _type_name(current)))
    mutated = _set(copy.deepcopy(doc), path, value)
    if name in (fmt.RUN_INFO, fmt.STATUS) and _schema_allows(name, mutated):
        return  # a type the schema accepts there (an extension key, a nullable field, 0 for a number)
    check(lab, lab.write(kind, {name: encode(mutated)}), "wrong_types")


def _schema(name: str) -> dict[str, Any]:
    stem = {fmt.RUN_INFO: "run_info", fmt.STATUS: "status"}[name]
    path = Path(fmt.__file__).parent / "schemas" / f"{stem}.schema.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@functools.cache
def _schema_validator(name: str) -> Any:
    schema = _schema(name)
    return jsonschema.validators.validator_for(schema)(schema)


def _schema_allows(name: str, document: Any) -> bool:
    return bool(_schema_validator(name).is_valid(document))


@SETTINGS
@given(kind=kinds, name=names, data=st.data())
def test_huge_numbers_and_strings(lab: Lab, kind: str, name: str, data: st.DataObject) -> None:
    raw = lab.templates[kind][name].decode()
    how = data.draw(st.sampled_from(["digits", "exponent", "string", "nesting"]))
    if how == "digits":
        mutated = raw.replace("{", '{"\x00":' + "9" * data.draw(st.integers(20, 100_000)) + ",", 1)
    elif how == "exponent":
        mutated = raw.replace("{", '{"\x00":1e' + str(data.draw(st.integers(309, 10**6))) + ",", 1)
    elif how == "string":
        size = data.draw(st.integers(1, 3_000_000))
        mutated = raw.replace("{", '{"\x00":"' + "x" * size + '",', 1)
    else:
        depth = data.draw(st.integers(500, 200_000))
        mutated = raw.replace("{", '{"\x00":' + "[" * depth + "]" * depth + ",", 1)
    if mutated == raw:  # OUTPUTS of the dirty run is "[]": put the value in the list instead
        mutated = '["' + "x" * 10_000 + '"]\n'
    check(lab, lab.write(kind, {name: mutated.encode()}), "huge_values")


@SETTINGS
@given(kind=kinds, name=names, data=st.data())
def test_missing_and_extra_keys(lab: Lab, kind: str, name: str, data: st.DataObject) -> None:
    docs = lab.docs(kind)
    doc = docs[name]
    objects = [p for p in _paths_of(doc) if isinstance(_get(doc, p), dict) and _get(doc, p)]
    if data.draw(st.booleans()) or not objects:
        # A whole file missing.
        check(lab, lab.write(kind, {name: None}), "missing_keys", {"MISSING_FILE", "INCOMPLETE"})
        return
    path = data.draw(st.sampled_from(objects))
    target = _get(doc, path)
    if data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(target)))
        top = path[0] if path else key
        if name in (fmt.RUN_INFO, fmt.STATUS) and top not in _required(name):
            return  # optional keys (and anything inside them) may be absent
        if name == fmt.RUN_INFO and key in (
            "durable_outputs",
            "allowed_roots",
            "runs_root",
            "hash_algorithm",
        ):
            return
        del target[key]
        category = "missing_keys"
    else:
        if name in (fmt.RUN_INFO, fmt.STATUS, fmt.OUTPUTS) or (name == fmt.RUN_INFO and path):
            return  # RUN_INFO/STATUS take extension keys
        key = data.draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in target))
        target[key] = data.draw(st.sampled_from(["dir", "0644", "0" * 64, {}]))
        category = "extra_keys"
    check(lab, lab.write(kind, {name: encode(doc)}), category)


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def _required(name: str) -> set[str]:
    return set(_schema(name).get("required", []))


@SETTINGS
@given(bad=BAD_PATHS, where=st.sampled_from(["domain", "manifest", "output", "declared"]))
def test_hostile_paths(lab: Lab, bad: str, where: str) -> None:
    docs = lab.docs("restored")
    if where == "domain":
        if bad == ".":
            return  # the whole workspace is a valid (if unusual) domain
        for name in (fmt.PRE_MANIFEST, fmt.POST_MANIFEST, fmt.PRE_MODES, fmt.POST_MODES, fmt.RESTORE_DIFF):
            docs[name] = {bad: docs[name]["scratch"]}
        docs[fmt.RUN_INFO]["catalytic_domains"] = [bad]
    elif where == "manifest":
        if bad in ("C:\\x", "a\\b", "."):
            # On POSIX a backslash is an ordinary byte of a file name, and "." is the domain itself.
            return
        for name in (fmt.PRE_MANIFEST, fmt.POST_MANIFEST):
            docs[name]["scratch"][bad] = "dir"
        for name in (fmt.PRE_MODES, fmt.POST_MODES):
            docs[name]["scratch"][bad] = "0755"
    elif where == "output":
        # Point the recorded output at the bait outside the workspace, with its true sha256.
        record = docs[fmt.OUTPUTS][-1]
        record["path"] = bad if bad not in ("", ".") else "../outside/out.txt"
        if ".." in bad or bad.startswith("/"):
            record["path"] = "../outside/out.txt" if ".." in bad else str(lab.outside / "out.txt")
    else:
        docs[fmt.RUN_INFO]["durable_outputs"] = [bad]
        docs[fmt.RUN_INFO]["durable_output_roots"] = [bad]
    files = {n: encode(d) for n, d in docs.items()}
    check(lab, lab.write("restored", files), "hostile_paths")


@SETTINGS
@given(name=names, how=st.sampled_from(["outside", "inside", "dangling", "run_dir"]))
def test_symlinked_ledger_files(lab: Lab, name: str, how: str) -> None:
    if how == "run_dir":
        run_dir = lab.runs / "restored"
        shutil.rmtree(run_dir, ignore_errors=True)
        if run_dir.is_symlink():
            run_dir.unlink()
        run_dir.symlink_to(lab.outside)
        check(lab, run_dir, "symlinks", {"BAD_FILE"})
        run_dir.unlink()
        return
    run_dir = lab.write("restored", {name: None})
    target = {
        "outside": lab.outside / name,
        "inside": lab.ws / "scratch" / "a.txt",
        "dangling": lab.ws / "nope",
    }[how]
    (run_dir / name).symlink_to(target)
    check(lab, run_dir, "symlinks", {"BAD_FILE", "MISSING_FILE", "INCOMPLETE"})


@SETTINGS
@given(kind=kinds, data=st.data())
def test_manifests_disagree_with_restore_diff(lab: Lab, kind: str, data: st.DataObject) -> None:
    docs = lab.docs(kind)
    pre, post, diff = (
        docs[fmt.PRE_MANIFEST]["scratch"],
        docs[fmt.POST_MANIFEST]["scratch"],
        docs[fmt.RESTORE_DIFF],
    )
    how = data.draw(
        st.sampled_from(["post-changed", "post-added", "pre-removed", "diff-emptied", "diff-invented"])
    )
    files = [p for p, v in post.items() if len(v) == 64]
    if how == "post-changed":
        post[data.draw(st.sampled_from(files))] = data.draw(
            st.text("0123456789abcdef", min_size=64, max_size=64)
        )
    elif how == "post-added":
        post[data.draw(st.text(min_size=1, max_size=12).filter(lambda p: p not in post and "/" not in p))] = (
            "0" * 64
        )
    elif how == "pre-removed":
        del pre[data.draw(st.sampled_from([p for p in pre if p != "."]))]
    elif how == "diff-emptied":
        diff["scratch"] = {"added": {}, "removed": {}, "changed": {}}
    else:
        diff["scratch"]["added"]["ghost"] = "0" * 64
    if data.draw(st.booleans()):
        # And make STATUS agree with the (false) empty diff.
        docs[fmt.STATUS].update(status="restored", restoration_verified=True, reason=None, error=None)
    files_out = {n: encode(d) for n, d in docs.items()}
    if files_out == {n: encode(json.loads(b)) for n, b in lab.templates[kind].items()} and kind == "restored":
        return
    check(lab, lab.write(kind, files_out), "diff_disagrees")


@SETTINGS
@given(lie=st.sampled_from(["restored", "verified", "both", "not-interrupted"]))
def test_status_that_lies(lab: Lab, lie: str) -> None:
    docs = lab.docs("dirty")
    status = docs[fmt.STATUS]
    if lie in ("restored", "both"):
        status["status"] = "restored"
        status["reason"] = None
    if lie in ("verified", "both"):
        status["restoration_verified"] = True
    if lie == "not-interrupted":
        status.update(status="restored", restoration_verified=True, reason=None, interrupted=False)
    check(lab, lab.write("dirty", {fmt.STATUS: encode(status)}), "status_lies")
