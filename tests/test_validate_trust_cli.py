"""``catalytic validate`` with the seal, the chain and ``--trusted-key``, end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from catalytic.cli import main
from catalytic.ledger.canonical import dumps, loads

# Workspaces laid out like the seed's project: ledgers in CONTRACTS/_runs (see conftest.seed_layout).
pytestmark = pytest.mark.usefixtures("seed_layout")


pytest.importorskip("cryptography", reason="cryptography is in the dev extra")


def run(tmp_path: Path, run_id: str, *extra: str) -> None:
    (tmp_path / "scratch").mkdir(exist_ok=True)
    args = ["run", "-q", "--root", str(tmp_path), "--run-id", run_id, "--catalytic-domains", "scratch"]
    assert main([*args, *extra, "--", "true"]) == 0


def validate(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    code = main(["validate", "--root", str(tmp_path), "--all", "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def errors(doc: dict) -> set[str]:  # type: ignore[type-arg]
    found = {e["code"] for r in doc["reports"] for e in r["errors"]}
    return found | {e["code"] for e in doc.get("chain", {}).get("errors", [])}


def test_signed_runs_pass_with_the_right_key_and_fail_with_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, other = tmp_path / "key", tmp_path / "other"
    assert main(["keygen", "--output", str(key)]) == 0
    assert main(["keygen", "--output", str(other)]) == 0
    run(tmp_path, "r1", "--sign-key", str(key))
    run(tmp_path, "r2", "--sign-key", str(key))
    capsys.readouterr()
    code, doc = validate(tmp_path, capsys, "--trusted-key", f"{key}.pub")
    assert code == 0 and doc["passed"] and doc["chain"] == {"passed": True, "errors": []}
    code, doc = validate(tmp_path, capsys, "--trusted-key", f"{other}.pub")
    assert code == 1 and errors(doc) == {"SIGNATURE_INVALID"}
    # Either of two trusted keys will do.
    code, _ = validate(tmp_path, capsys, "--trusted-key", f"{other}.pub", "--trusted-key", f"{key}.pub")
    assert code == 0


def test_unsigned_run_fails_with_a_trusted_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "key"
    assert main(["keygen", "--output", str(key)]) == 0
    run(tmp_path, "r1")
    capsys.readouterr()
    code, doc = validate(tmp_path, capsys)
    assert code == 0
    code, doc = validate(tmp_path, capsys, "--trusted-key", f"{key}.pub")
    assert code == 1 and errors(doc) == {"SIGNATURE_MISSING"}


def test_edited_file_and_rewritten_chain_fail_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for run_id in ("r1", "r2", "r3"):
        run(tmp_path, run_id)
    runs = tmp_path / "CONTRACTS/_runs"
    info = loads((runs / "r2/RUN_INFO.json").read_bytes())
    info["intent"] = "something else"
    (runs / "r2/RUN_INFO.json").write_text(dumps(info))
    capsys.readouterr()
    code, doc = validate(tmp_path, capsys)
    assert code == 1
    bad = {r["run_id"]: [e["code"] for e in r["errors"]] for r in doc["reports"] if not r["passed"]}
    assert bad == {"r2": ["DIGEST_MISMATCH"]}

    (runs / "r2/RUN_INFO.json").write_text(dumps({**info, "intent": ""}))
    code, doc = validate(tmp_path, capsys)
    assert code == 0, doc
    lines = (runs / "LEDGER.jsonl").read_bytes().splitlines(keepends=True)
    (runs / "LEDGER.jsonl").write_bytes(lines[0] + lines[2])
    code, doc = validate(tmp_path, capsys)
    assert code == 1 and doc["chain"]["passed"] is False
    assert {"CHAIN_BROKEN", "CHAIN_ORDER", "UNCHAINED"} <= errors(doc)
    # The text output names the chain.
    assert main(["validate", "--root", str(tmp_path), "--all"]) == 1
    assert "FAIL: chain LEDGER.jsonl" in capsys.readouterr().out
    code, _ = validate(tmp_path, capsys, "--no-chain-check")
    assert code == 0


def test_removed_digest_needs_the_chain_or_require_seal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(tmp_path, "r1")
    ledger = tmp_path / "CONTRACTS/_runs/r1"
    (ledger / "LEDGER_DIGEST.json").unlink()
    capsys.readouterr()
    # The chain beside the run records it as sealed: --run-dir alone notices.
    assert main(["validate", "--run-dir", str(ledger), "--json"]) == 1
    assert errors(json.loads(capsys.readouterr().out)) == {"DIGEST_MISSING"}
    code, doc = validate(tmp_path, capsys)
    assert code == 1 and errors(doc) == {"DIGEST_MISSING"}
    # A copy without its runs root has no chain to ask: only --require-seal notices then.
    copy = tmp_path / "copied" / "r1"
    shutil.copytree(ledger, copy)
    assert main(["validate", "--run-dir", str(copy), "--json"]) == 0
    capsys.readouterr()
    assert main(["validate", "--run-dir", str(copy), "--json", "--require-seal"]) == 1


def test_a_run_resealed_after_a_forgery_disagrees_with_the_chain_beside_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from catalytic.ledger import digest

    run(tmp_path, "r1")
    ledger = tmp_path / "CONTRACTS/_runs/r1"
    info = loads((ledger / "RUN_INFO.json").read_bytes())
    info["intent"] = "forged"
    (ledger / "RUN_INFO.json").write_text(dumps(info))
    (ledger / digest.DIGEST_FILE).write_text(dumps(digest.compute(ledger, "r1")))
    capsys.readouterr()
    assert main(["validate", "--run-dir", str(ledger), "--json"]) == 1
    assert errors(json.loads(capsys.readouterr().out)) == {"CHAIN_DIGEST"}


def test_bad_trusted_key_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(tmp_path, "r1")
    (tmp_path / "junk.pub").write_text("not a key\n")
    assert (
        main(["validate", "--root", str(tmp_path), "--all", "--trusted-key", str(tmp_path / "junk.pub")]) == 2
    )


def test_anchor_catches_a_consistently_rewritten_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from catalytic.ledger import chain, digest

    for run_id in ("r1", "r2"):
        run(tmp_path, run_id)
    runs = tmp_path / "CONTRACTS/_runs"
    anchor = tmp_path / "anchored.jsonl"
    shutil.copy(runs / "LEDGER.jsonl", anchor)
    run(tmp_path, "r3")
    capsys.readouterr()
    code, doc = validate(tmp_path, capsys, "--anchor", str(anchor))
    assert code == 0, doc
    # A forger edits r2, re-seals it and rebuilds the whole chain: consistent, so only the anchor sees it.
    info = loads((runs / "r2/RUN_INFO.json").read_bytes())
    (runs / "r2/RUN_INFO.json").write_text(dumps({**info, "intent": "forged"}))
    (runs / "LEDGER.jsonl").unlink()
    for run_id in ("r1", "r2", "r3"):
        doc_ = digest.compute(runs / run_id, run_id)
        (runs / run_id / digest.DIGEST_FILE).write_text(dumps(doc_))
        with chain.locked(runs):
            chain.append(runs, run_id, doc_["root"], "restored")
    code, doc = validate(tmp_path, capsys)
    assert code == 0, doc
    code, doc = validate(tmp_path, capsys, "--anchor", str(anchor))
    assert code == 1 and errors(doc) == {"CHAIN_ANCHOR"}
    assert "line 2" in doc["chain"]["errors"][0]["message"]
