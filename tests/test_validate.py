"""The validator as a library: valid ledgers pass, every kind of tampering fails with its code."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from catalytic.validate import CatalyticLedgerValidator
from ledger_factory import DOMAIN, FILES, Ledger, build_ledger, build_seed_ledger, sha


def check(ledger: Ledger, **kwargs: Any) -> tuple[bool, dict[str, Any]]:
    ok, report = CatalyticLedgerValidator(ledger.run_dir, **kwargs).validate()
    return ok, dict(report)


def codes(report: dict[str, Any]) -> set[str]:
    return {e["code"] for e in report["errors"]}


def messages(report: dict[str, Any], code: str) -> list[str]:
    return [e["message"] for e in report["errors"] if e["code"] == code]


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return build_ledger(tmp_path / "ws")


def test_valid_ledger_passes_with_full_report(ledger: Ledger) -> None:
    ok, report = check(ledger)
    assert ok, report["errors"]
    assert report == {
        "run_dir": str(ledger.run_dir),
        "run_id": "cortex-build-demo",
        "intent": "Build cortex index",
        "exit_code": 0,
        "outputs": 4,
        "status": "restored",
        "passed": True,
        "errors": [],
        "superseded": [],
    }


def test_seed_shaped_ledger_passes_without_modes_or_schema_version(tmp_path: Path) -> None:
    seed = build_seed_ledger(tmp_path / "ws")
    assert not (seed.run_dir / "PRE_MODES.json").exists()
    ok, report = check(seed)
    assert ok, report["errors"]
    assert report["outputs"] == 2


def test_workspace_root_is_derived_from_runs_root_not_the_cwd(tmp_path: Path, monkeypatch: Any) -> None:
    ledger = build_ledger(tmp_path / "ws", runs_root="ledgers/deep")
    monkeypatch.chdir(tmp_path)
    assert check(ledger)[0]
    # With an explicit root elsewhere the outputs are not found there.
    ok, report = check(ledger, root=tmp_path)
    assert not ok and codes(report) == {"OUTPUT_MISSING"}


def _set(key: str, value: Any) -> Callable[[Any], None]:
    return lambda doc: doc.__setitem__(key, value)


SEMANTIC_EDITS: list[tuple[str, Callable[[Any], Any], str]] = [
    ("RUN_INFO.json", _set("catalytic_domains", ["other/_tmp"]), "DOMAIN_MISMATCH"),
    ("PRE_MANIFEST.json", lambda d: d[DOMAIN].__setitem__("a.txt", sha(b"x")), "NOT_RESTORED"),
    ("PRE_MODES.json", lambda d: d[DOMAIN].__setitem__("a.txt", "0755"), "NOT_RESTORED"),
    ("POST_MANIFEST.json", lambda d: d[DOMAIN].pop("sub/b.bin"), "NOT_RESTORED"),
    ("POST_MODES.json", lambda d: d[DOMAIN].__setitem__("sub", "0700"), "NOT_RESTORED"),
    ("RESTORE_DIFF.json", lambda d: d[DOMAIN]["added"].__setitem__("new", "dir"), "DIFF_MISMATCH"),
    ("OUTPUTS.json", lambda d: d[0].__setitem__("sha256", sha(b"other")), "OUTPUT_CHANGED"),
    ("STATUS.json", _set("exit_code", 3), "STATUS_MISMATCH"),
]


@pytest.mark.parametrize(("name", "change", "code"), SEMANTIC_EDITS, ids=[e[0] for e in SEMANTIC_EDITS])
def test_semantic_edit_of_each_file_fails(
    ledger: Ledger, name: str, change: Callable[[Any], Any], code: str
) -> None:
    ledger.edit(name, change)
    ok, report = check(ledger)
    assert not ok
    assert code in codes(report), report["errors"]
    assert "SCHEMA" not in codes(report)


def test_edited_manifest_is_named_in_the_diff_mismatch(ledger: Ledger) -> None:
    ledger.edit("POST_MANIFEST.json", lambda d: d[DOMAIN].__setitem__("left.tmp", sha(b"")))
    _ok, report = check(ledger)
    # No mode was recorded for the new entry either.
    assert codes(report) == {"NOT_RESTORED", "DIFF_MISMATCH", "STATUS_MISMATCH", "MODES_MISMATCH"}
    assert any("'left.tmp'" in m for m in messages(report, "NOT_RESTORED"))
    assert all("RESTORE_DIFF.json" in m for m in messages(report, "DIFF_MISMATCH"))
    assert all("STATUS.json" in m for m in messages(report, "STATUS_MISMATCH"))


@pytest.mark.parametrize("name", FILES)
def test_removed_file_fails(ledger: Ledger, name: str) -> None:
    ledger.path(name).unlink()
    ok, report = check(ledger)
    assert not ok
    expected = "INCOMPLETE" if name == "STATUS.json" else "MISSING_FILE"
    assert expected in codes(report)
    assert any(name in m for m in messages(report, expected))


@pytest.mark.parametrize("name", FILES)
def test_truncated_file_fails_as_bad_json(ledger: Ledger, name: str) -> None:
    data = ledger.path(name).read_bytes()
    ledger.path(name).write_bytes(data[: len(data) // 2])
    ok, report = check(ledger)
    assert not ok
    assert any(name in m for m in messages(report, "BAD_JSON")), report["errors"]


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize(
    "garbage",
    [b"", b"{not json}", b"\xff\xfe{}", b'{"a": 1, "a": 2}', b"[NaN]", b"[1e400]"],
    ids=["empty", "syntax", "bad-utf8", "duplicate-key", "nan", "overflow"],
)
def test_invalid_json_fails(ledger: Ledger, name: str, garbage: bytes) -> None:
    ledger.path(name).write_bytes(garbage)
    ok, report = check(ledger)
    assert not ok
    assert any(name in m for m in messages(report, "BAD_JSON")), report["errors"]


@pytest.mark.parametrize("name", FILES)
def test_schema_violation_names_file_and_json_path(ledger: Ledger, name: str) -> None:
    ledger.write(name, {"x": [1]} if name == "OUTPUTS.json" else [{"x": 1}])
    ok, report = check(ledger)
    assert not ok
    found = messages(report, "SCHEMA")
    assert found and all(m.startswith(f"{name} at $") for m in found)


def test_schema_error_carries_nested_json_path(ledger: Ledger) -> None:
    ledger.edit("PRE_MANIFEST.json", lambda d: d[DOMAIN].__setitem__("a.txt", "ABC"))
    _ok, report = check(ledger)
    assert any(f"$['{DOMAIN}']['a.txt']" in m for m in messages(report, "SCHEMA")), report["errors"]


def test_ledger_file_that_is_a_symlink_is_bad_file(ledger: Ledger, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_bytes(ledger.path("STATUS.json").read_bytes())
    ledger.path("STATUS.json").unlink()
    ledger.path("STATUS.json").symlink_to(target)
    _ok, report = check(ledger)
    assert any("STATUS.json" in m for m in messages(report, "BAD_FILE"))


def test_status_that_lies_about_a_dirty_run(ledger: Ledger) -> None:
    # The command left a file behind; manifests and diff say so honestly, STATUS claims success.
    ledger.edit("POST_MANIFEST.json", lambda d: d[DOMAIN].__setitem__("left.tmp", sha(b"")))
    ledger.edit("POST_MODES.json", lambda d: d[DOMAIN].__setitem__("left.tmp", "0644"))
    ledger.edit("RESTORE_DIFF.json", lambda d: d[DOMAIN]["added"].__setitem__("left.tmp", sha(b"")))
    _ok, report = check(ledger)
    assert codes(report) == {"NOT_RESTORED", "STATUS_MISMATCH"}


def test_honest_dirty_run_fails_without_mismatch(ledger: Ledger) -> None:
    ledger.edit("POST_MANIFEST.json", lambda d: d[DOMAIN].__setitem__("left.tmp", sha(b"")))
    ledger.edit("POST_MODES.json", lambda d: d[DOMAIN].__setitem__("left.tmp", "0644"))
    ledger.edit("RESTORE_DIFF.json", lambda d: d[DOMAIN]["added"].__setitem__("left.tmp", sha(b"")))
    ledger.edit("STATUS.json", lambda d: d.update(status="dirty", restoration_verified=False, reason="left"))
    _ok, report = check(ledger)
    assert codes(report) == {"NOT_RESTORED", "DIRTY"}
    assert report["status"] == "dirty"


def test_restore_diff_inconsistent_with_manifests(ledger: Ledger) -> None:
    ledger.edit(
        "RESTORE_DIFF.json",
        lambda d: d[DOMAIN]["changed"].__setitem__("a.txt", {"before": "dir", "after": "dir"}),
    )
    _ok, report = check(ledger)
    assert codes(report) == {"DIFF_MISMATCH"}
    assert "RESTORE_DIFF.json" in messages(report, "DIFF_MISMATCH")[0]


def test_status_restored_but_not_verified(ledger: Ledger) -> None:
    ledger.edit("STATUS.json", _set("restoration_verified", False))
    assert codes(check(ledger)[1]) == {"STATUS_MISMATCH"}


def test_status_dirty_while_proof_is_clean(ledger: Ledger) -> None:
    ledger.edit("STATUS.json", _set("status", "dirty"))
    assert codes(check(ledger)[1]) == {"STATUS_MISMATCH", "DIRTY"}


def test_interrupted_run_fails(ledger: Ledger) -> None:
    ledger.edit("RUN_INFO.json", lambda d: d.update(interrupted=True, signal="SIGINT"))
    ledger.edit("STATUS.json", lambda d: d.update(interrupted=True))
    assert codes(check(ledger)[1]) == {"INTERRUPTED"}


SIGNAL_CASES = [("SIGTERM", "STATUS_MISMATCH"), ("", "SCHEMA"), ("kill", "SCHEMA")]


@pytest.mark.parametrize(("signal", "code"), SIGNAL_CASES)
def test_a_signal_names_a_signal_of_an_interrupted_run(ledger: Ledger, signal: str, code: str) -> None:
    """RUN_INFO's signal is null unless the run was interrupted, and then a signal's name."""
    ledger.edit("RUN_INFO.json", lambda d: d.update(signal=signal))
    ok, report = check(ledger)
    assert not ok and code in codes(report), report["errors"]


def test_run_id_must_be_the_directory_name(ledger: Ledger) -> None:
    ledger.run_dir = ledger.run_dir.rename(ledger.run_dir.with_name("renamed"))
    _ok, report = check(ledger)
    assert codes(report) == {"RUN_ID_MISMATCH"}


def test_domain_missing_from_post_is_not_verified(ledger: Ledger) -> None:
    ledger.write("POST_MANIFEST.json", {})
    ledger.write("POST_MODES.json", {})
    ledger.write("RESTORE_DIFF.json", {})
    _ok, report = check(ledger)
    assert codes(report) == {"NOT_VERIFIED", "STATUS_MISMATCH"}


def test_missing_modes_are_required_for_v1(ledger: Ledger) -> None:
    ledger.path("POST_MODES.json").unlink()
    assert codes(check(ledger)[1]) == {"MISSING_FILE"}


def test_modes_for_a_symlink_are_a_mismatch(ledger: Ledger) -> None:
    for name in ("PRE_MODES.json", "POST_MODES.json"):
        ledger.edit(name, lambda d: d[DOMAIN].__setitem__("link", "0777"))
    assert codes(check(ledger)[1]) == {"MODES_MISMATCH"}


def test_non_canonical_v1_file_fails(ledger: Ledger) -> None:
    import json

    ledger.path("STATUS.json").write_text(json.dumps(ledger.read("STATUS.json"), indent=2))
    _ok, report = check(ledger)
    assert codes(report) == {"NOT_CANONICAL"}
    assert "STATUS.json" in report["errors"][0]["message"]


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "C:/x", "CORTEX\\_generated\\x", "a\x00b", "a//b"])
def test_unsafe_output_path_is_bad_path(ledger: Ledger, bad: str) -> None:
    ledger.edit("OUTPUTS.json", lambda d: d.append({"path": bad, "type": "directory"}))
    assert "BAD_PATH" in codes(check(ledger, allowed_roots=["."])[1])


def test_unsafe_manifest_path_is_bad_path(ledger: Ledger) -> None:
    for name in ("PRE_MANIFEST.json", "POST_MANIFEST.json"):
        ledger.edit(name, lambda d: d[DOMAIN].__setitem__("../escape", "dir"))
    for name in ("PRE_MODES.json", "POST_MODES.json"):
        ledger.edit(name, lambda d: d[DOMAIN].__setitem__("../escape", "0755"))
    _ok, report = check(ledger)
    assert codes(report) == {"BAD_PATH"}
    assert all("'../escape'" in m for m in messages(report, "BAD_PATH"))


def test_output_changed_on_disk(ledger: Ledger) -> None:
    (ledger.root / "CORTEX/_generated/pack/x.txt").write_bytes(b"tampered")
    _ok, report = check(ledger)
    assert codes(report) == {"OUTPUT_CHANGED"}
    assert "pack/x.txt" in report["errors"][0]["message"]


def test_output_removed_from_disk(ledger: Ledger) -> None:
    (ledger.root / "CORTEX/_generated/cortex.json").unlink()
    assert codes(check(ledger)[1]) == {"OUTPUT_MISSING"}


def test_output_type_and_symlink_target_changes(ledger: Ledger) -> None:
    gen = ledger.root / "CORTEX/_generated"
    (gen / "latest").unlink()
    (gen / "latest").symlink_to("pack")
    (gen / "pack/x.txt").unlink()
    (gen / "pack/x.txt").mkdir()
    _ok, report = check(ledger)
    found = messages(report, "OUTPUT_CHANGED")
    assert len(found) == 2
    assert any("target is now 'pack'" in m for m in found)
    assert any("is now a directory" in m for m in found)


def test_output_is_never_read_through_a_symlinked_parent(ledger: Ledger, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt").write_bytes(b"packed\n")  # same bytes: following the link would "pass"
    gen = ledger.root / "CORTEX/_generated"
    for child in (gen / "pack").iterdir():
        child.unlink()
    (gen / "pack").rmdir()
    (gen / "pack").symlink_to(outside)
    ok, report = check(ledger)
    assert not ok
    assert "CORTEX/_generated/pack/x.txt" in " ".join(messages(report, "OUTPUT_CHANGED"))


def test_no_outputs_check_skips_the_disk(ledger: Ledger) -> None:
    (ledger.root / "CORTEX/_generated/cortex.json").unlink()
    assert not check(ledger)[0]
    assert check(ledger, check_outputs=False)[0]


def test_allowed_root_is_compared_by_whole_segments(ledger: Ledger) -> None:
    ledger.edit("OUTPUTS.json", lambda d: d.append({"path": "CORTEX/_generated_x", "type": "directory"}))
    ledger.edit("RUN_INFO.json", lambda d: d["durable_outputs"].append("CORTEX/_generated_x"))
    (ledger.root / "CORTEX/_generated_x").mkdir()
    _ok, report = check(ledger)
    assert any("'CORTEX/_generated_x'" in m for m in messages(report, "NOT_ALLOWED")), report["errors"]


def test_allowed_roots_argument_overrides_the_ledger(ledger: Ledger) -> None:
    _ok, report = check(ledger, allowed_roots=["MEMORY/LLM_PACKER/_packs"])
    assert codes(report) == {"NOT_ALLOWED"}
    assert check(ledger, allowed_roots=["CORTEX/_generated/"])[0]


def test_seed_defaults_apply_without_allowed_roots(tmp_path: Path) -> None:
    seed = build_seed_ledger(tmp_path / "ws")
    seed.edit("OUTPUTS.json", lambda d: d.append({"path": "src/x.py", "type": "directory"}))
    (seed.root / "src/x.py").mkdir(parents=True)
    _ok, report = check(seed)
    assert codes(report) == {"NOT_ALLOWED", "UNDECLARED"}


def test_output_listed_nowhere_is_unlisted(ledger: Ledger) -> None:
    ledger.edit("OUTPUTS.json", lambda d: d.pop(0))
    assert codes(check(ledger)[1]) == {"OUTPUT_UNLISTED"}


def test_blake3_manifest_is_accepted(ledger: Ledger) -> None:
    ledger.edit("RUN_INFO.json", _set("hash_algorithm", "blake3"))
    assert check(ledger)[0]
    ledger.edit("RUN_INFO.json", _set("hash_algorithm", "md5"))
    assert codes(check(ledger)[1]) == {"SCHEMA"}


def test_many_errors_are_reported_at_once(ledger: Ledger) -> None:
    ledger.path("PRE_MODES.json").unlink()
    ledger.path("OUTPUTS.json").write_bytes(b"[")
    ledger.edit("STATUS.json", _set("run_id", "someone-else"))
    ledger.edit("RUN_INFO.json", _set("interrupted", True))
    _ok, report = check(ledger)
    assert {"MISSING_FILE", "BAD_JSON", "STATUS_MISMATCH", "INTERRUPTED"} <= codes(report)
    assert report["errors"] and len(report["errors"]) >= 5  # interrupted also mismatches STATUS


def test_missing_run_dir_is_not_found(tmp_path: Path) -> None:
    ok, report = CatalyticLedgerValidator(tmp_path / "nope").validate()
    assert not ok and codes(dict(report)) == {"NOT_FOUND"}
    assert report["run_id"] == "nope"


def test_symlinked_run_dir_is_refused(ledger: Ledger, tmp_path: Path) -> None:
    link = tmp_path / "link"
    os.symlink(ledger.run_dir, link)
    _ok, report = CatalyticLedgerValidator(link).validate()
    assert codes(dict(report)) == {"BAD_FILE"}
