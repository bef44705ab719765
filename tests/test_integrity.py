"""Tamper evidence: every ledger file, the digest, the signature and the LEDGER.jsonl chain."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import catalytic
from catalytic.ledger import chain, digest
from catalytic.ledger import format as fmt
from catalytic.ledger.canonical import dumps, loads
from catalytic.ledger.integrity import check_chain, check_seal

# Workspaces laid out like the seed's project: ledgers in CONTRACTS/_runs (see conftest.seed_layout).
pytestmark = pytest.mark.usefixtures("seed_layout")


RUNS = "CONTRACTS/_runs"


def make_run(root: Path, run_id: str, *, command: tuple[str, ...] = ("true",), **kw: object) -> Path:
    (root / "scratch").mkdir(exist_ok=True)
    (root / "scratch" / "keep.txt").write_text("keep\n")
    result = catalytic.run(list(command), root=root, run_id=run_id, catalytic_domains=["scratch"], **kw)  # type: ignore[arg-type]
    return result.ledger_dir


def codes(problems: list[object]) -> set[str]:
    return {p.code for p in problems}  # type: ignore[attr-defined]


def test_a_fresh_ledger_is_sealed_and_chained(tmp_path: Path) -> None:
    ledger = make_run(tmp_path, "r1")
    doc = loads((ledger / digest.DIGEST_FILE).read_bytes())
    assert set(doc["files"]) == set(fmt.WRITE_ORDER)
    assert doc["root"] == digest.root_of(doc["files"])
    line = loads((tmp_path / RUNS / fmt.CHAIN_FILE).read_bytes())
    assert line == {
        "chain": chain.CHAIN_SCHEMA,
        "ledger_digest": doc["root"],
        "prev": chain.GENESIS,
        "run_id": "r1",
        "seq": 0,
        "status": "restored",
    }
    assert check_seal(ledger, require_digest=True) == []
    assert check_chain(tmp_path / RUNS) == []


def test_merkle_root_matches_rfc6962_shape() -> None:
    import hashlib

    def h(b: bytes) -> bytes:
        return hashlib.sha256(b).digest()

    a, b, c = b"a", b"b", b"c"
    assert digest.merkle_root([a]) == h(b"\x00a")
    assert digest.merkle_root([a, b]) == h(b"\x01" + h(b"\x00a") + h(b"\x00b"))
    left = h(b"\x01" + h(b"\x00a") + h(b"\x00b"))
    assert digest.merkle_root([a, b, c]) == h(b"\x01" + left + h(b"\x00c"))


def test_big_files_hashed_in_threads_keep_their_own_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files hashed at the same time (one thread each) are each given their own hash; symlinks, FIFOs and
    directories stay uncovered whatever their size."""
    import hashlib

    monkeypatch.setattr(digest, "THREAD_BYTES", 64)
    contents = {
        f"{name}.json": os.urandom(size) for name, size in (("a", 10), ("b", 300), ("c", 5000), ("d", 70))
    }
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "link.json").symlink_to("./" * 40 + "c.json")  # lstat size 86: hashed in a thread, as None
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "quarantine").mkdir()
    assert digest.file_hashes(tmp_path) == {
        name: hashlib.sha256(data).hexdigest() for name, data in contents.items()
    }


@pytest.mark.parametrize("name", fmt.WRITE_ORDER)
def test_editing_any_ledger_file_is_detected(tmp_path: Path, name: str) -> None:
    ledger = make_run(tmp_path, "r1")
    path = ledger / name
    value = loads(path.read_bytes())
    # A plausible forgery: valid canonical JSON with one extra key / element.
    if isinstance(value, dict):
        value["forged"] = {} if name != fmt.STATUS else True
    else:
        value.append({"path": "forged", "type": "directory"})
    path.write_text(dumps(value))
    problems = check_seal(ledger)
    assert "DIGEST_MISMATCH" in codes(problems)
    assert any(name in str(p) for p in problems)


@pytest.mark.parametrize("name", fmt.WRITE_ORDER)
def test_removing_any_ledger_file_is_detected(tmp_path: Path, name: str) -> None:
    ledger = make_run(tmp_path, "r1")
    (ledger / name).unlink()
    assert "DIGEST_FILE" in codes(check_seal(ledger))


def test_adding_a_file_and_whitespace_edits_are_detected(tmp_path: Path) -> None:
    ledger = make_run(tmp_path, "r1")
    (ledger / "EXTRA.json").write_text("{}\n")
    assert codes(check_seal(ledger)) == {"DIGEST_FILE"}
    (ledger / "EXTRA.json").unlink()
    status = ledger / fmt.STATUS
    status.write_bytes(status.read_bytes().rstrip(b"\n") + b" \n")
    assert codes(check_seal(ledger)) == {"DIGEST_MISMATCH"}


def test_rewriting_the_digest_to_match_is_caught_by_the_chain(tmp_path: Path) -> None:
    ledger = make_run(tmp_path, "r1")
    status = loads((ledger / fmt.STATUS).read_bytes())
    status["status"] = "restored"
    status["reason"] = "forged"
    (ledger / fmt.STATUS).write_text(dumps(status))
    (ledger / digest.DIGEST_FILE).write_text(dumps(digest.compute(ledger, "r1")))
    assert check_seal(ledger) == []  # a consistent forgery of the ledger alone...
    assert codes(check_chain(tmp_path / RUNS)) == {"CHAIN_DIGEST"}  # ...still disagrees with the chain


def test_deleting_the_digest_of_a_chained_run_is_detected(tmp_path: Path) -> None:
    ledger = make_run(tmp_path, "r1")
    (ledger / digest.DIGEST_FILE).unlink()
    assert "DIGEST_MISSING" in codes(check_chain(tmp_path / RUNS))
    assert "DIGEST_MISSING" in codes(check_seal(ledger, require_digest=True))


def three_runs(root: Path) -> tuple[Path, list[bytes]]:
    for run_id in ("r1", "r2", "r3"):
        make_run(root, run_id)
    path = root / RUNS / fmt.CHAIN_FILE
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    assert check_chain(root / RUNS) == []
    return path, lines


def test_rewritten_chain_line_is_detected(tmp_path: Path) -> None:
    path, lines = three_runs(tmp_path)
    entry = json.loads(lines[1])
    entry["status"] = "dirty"
    lines[1] = dumps(entry).encode()
    path.write_bytes(b"".join(lines))
    problems = check_chain(tmp_path / RUNS)
    assert "CHAIN_BROKEN" in codes(problems)
    assert any("r3" in str(p) for p in problems)


def test_removed_chain_line_is_detected(tmp_path: Path) -> None:
    path, lines = three_runs(tmp_path)
    path.write_bytes(lines[0] + lines[2])
    assert {"CHAIN_BROKEN", "CHAIN_ORDER", "UNCHAINED"} <= codes(check_chain(tmp_path / RUNS))


def test_removed_last_chain_line_is_detected(tmp_path: Path) -> None:
    path, lines = three_runs(tmp_path)
    path.write_bytes(lines[0] + lines[1])
    problems = check_chain(tmp_path / RUNS)
    assert codes(problems) == {"UNCHAINED"}
    assert "r3" in str(problems[0])


def test_reordered_chain_is_detected(tmp_path: Path) -> None:
    path, lines = three_runs(tmp_path)
    path.write_bytes(lines[1] + lines[0] + lines[2])
    assert {"CHAIN_BROKEN", "CHAIN_ORDER"} <= codes(check_chain(tmp_path / RUNS))


def test_removed_run_directory_is_detected(tmp_path: Path) -> None:
    import shutil

    three_runs(tmp_path)
    shutil.rmtree(tmp_path / RUNS / "r2")
    problems = check_chain(tmp_path / RUNS)
    assert codes(problems) == {"CHAIN_RUN_MISSING"}


def test_deleted_chain_file_leaves_every_run_unchained(tmp_path: Path) -> None:
    path, _ = three_runs(tmp_path)
    path.unlink()
    assert [p.code for p in check_chain(tmp_path / RUNS)] == ["UNCHAINED"] * 3


def test_torn_last_line_is_reported_and_cut_by_the_next_append(tmp_path: Path) -> None:
    path, lines = three_runs(tmp_path)
    path.write_bytes(lines[0] + lines[1] + lines[2][:20])
    assert "CHAIN_MALFORMED" in codes(check_chain(tmp_path / RUNS))
    make_run(tmp_path, "r4")
    # r3's line is gone (it was torn), r4 follows r2: the chain is whole again, r3 is unchained.
    assert codes(check_chain(tmp_path / RUNS)) == {"UNCHAINED"}


def _append_many(runs_root: str, worker: int) -> None:
    for i in range(25):
        with chain.locked(Path(runs_root)):
            chain.append(Path(runs_root), f"w{worker}-{i}", "0" * 64, "restored")


def test_concurrent_appends_keep_the_chain_whole(tmp_path: Path) -> None:
    runs_root = tmp_path / "runs"
    runs_root.mkdir()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(runs_root), w)) for w in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = chain.read_lines(runs_root)
    assert len(lines) == 150
    # The run directories do not exist; everything else about the chain must be intact.
    assert codes(check_chain(runs_root)) == {"CHAIN_RUN_MISSING"}
    assert len({line.value["run_id"] for line in lines if line.value}) == 150


def test_a_fifo_in_place_of_a_seal_file_never_blocks_the_validator(tmp_path: Path) -> None:
    ledger = make_run(tmp_path, "r1")
    (ledger / digest.DIGEST_FILE).unlink()
    os.mkfifo(ledger / digest.DIGEST_FILE)
    assert codes(check_seal(ledger)) == {"DIGEST_MALFORMED"}
    assert "DIGEST_MISSING" in codes(check_chain(tmp_path / RUNS))


def test_runs_of_the_seed_without_a_seal_pass_unless_required(tmp_path: Path) -> None:
    ledger = make_run(tmp_path, "r1")
    for name in (digest.DIGEST_FILE,):
        os.unlink(ledger / name)
    assert check_seal(ledger) == []
    assert codes(check_seal(ledger, require_digest=True)) == {"DIGEST_MISSING"}


_names = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_.json", min_size=1, max_size=12)
_hashes = st.binary(min_size=32, max_size=32).map(bytes.hex)


@given(st.dictionaries(_names, _hashes, min_size=1, max_size=12), st.data())
def test_any_single_change_to_the_files_changes_the_root(files: dict[str, str], data: st.DataObject) -> None:
    root = digest.root_of(files)
    assert digest.root_of(dict(reversed(list(files.items())))) == root  # order of the mapping is irrelevant
    victim = data.draw(st.sampled_from(sorted(files)))
    changed = dict(files)
    changed[victim] = data.draw(_hashes.filter(lambda h: h != files[victim]))
    assert digest.root_of(changed) != root
    removed = {k: v for k, v in files.items() if k != victim}
    assert digest.root_of(removed) != root
    renamed = dict(removed)
    renamed[victim + "x"] = files[victim]
    assert victim + "x" in files or digest.root_of(renamed) != root


def test_extension_files_such_as_the_write_log_are_sealed_too(tmp_path: Path) -> None:
    ledger = make_run(tmp_path, "traced", trace=True, trace_backend="none")
    files = loads((ledger / digest.DIGEST_FILE).read_bytes())["files"]
    assert fmt.WRITE_LOG in files
    log = loads((ledger / fmt.WRITE_LOG).read_bytes())
    log["events"] = []
    (ledger / fmt.WRITE_LOG).write_text(dumps(log) + " ")
    assert [p.code for p in check_seal(ledger)] == ["DIGEST_MISMATCH"]
