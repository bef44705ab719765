"""Owner, hard links and xattrs: recorded in MODES, a change is a change, rollback puts them back."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import catalytic
from catalytic.cli import main
from catalytic.snapshot import attrs, snapshot_tree
from catalytic.snapshot.entry import MODE_PATTERN
from isolation_helpers import DOMAIN, RUNS, ledger, make_workspace, run

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")


def _xattrs_supported(path: Path) -> bool:
    probe = path / ".probe"
    probe.write_text("")
    try:
        os.setxattr(probe, "user.catalytic-probe", b"1")
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = make_workspace(tmp_path / "ws")
    if not _xattrs_supported(root):
        pytest.skip("the file system of the temporary directory has no user xattrs")
    return root


def _modes(root: Path) -> dict[str, str]:
    return {e.path: e.mode for e in snapshot_tree(root / DOMAIN).entries if e.mode is not None}


def _validate(root: Path, run_id: str = "r1") -> int:
    return main(["validate", "--run-dir", str(root / RUNS / run_id)])


def test_a_usual_tree_has_plain_modes(ws: Path) -> None:
    modes = _modes(ws)
    assert modes and all(re.fullmatch("[0-7]{4}", m) for m in modes.values())


def test_the_schema_pattern_is_the_grammar() -> None:
    schema = json.loads(
        (Path(catalytic.__file__).parent / "ledger" / "schemas" / "modes.schema.json").read_text()
    )
    assert schema["$defs"]["mode"]["pattern"] == "^" + MODE_PATTERN + r"(?![\s\S])"


def test_values_parse_back() -> None:
    st = os.lstat(__file__)
    text = attrs.value_of(st, "ab" * 32, "0640")
    parsed = attrs.parse(text)
    assert parsed.bits == 0o640 and parsed.xattrs == "ab" * 32 and attrs.xattrs_named(text) == "ab" * 32
    with pytest.raises(ValueError):
        attrs.parse("0644 q=1")
    assert attrs.xattrs_named("0644 x=zz") is None


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (f"{sys.executable} -c \"import os; os.setxattr('{DOMAIN}/a.txt', 'user.tag', b'evil')\"", " x="),
        (f"ln {DOMAIN}/a.txt elsewhere", " n=2"),
    ],
    ids=["xattr", "hard-link-from-outside"],
)
def test_an_attribute_change_is_not_restored(
    ws: Path, command: str, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (ws / DOMAIN / "a.txt").read_bytes()
    assert run(ws, command=command, isolation="none") == 4
    assert (ws / DOMAIN / "a.txt").read_bytes() == before  # the bytes are the same: only the attributes
    docs = ledger(ws)
    assert docs["STATUS.json"]["status"] == "dirty"
    change = docs["RESTORE_DIFF.json"][DOMAIN]["changed"]["a.txt"]
    assert change["before"] == change["after"]
    assert field not in change["mode_before"] and field in change["mode_after"]
    # The validator recomputes the same change from the documents: the run is dirty, nothing else.
    assert _validate(ws) == 1
    out = capsys.readouterr().out
    assert "NOT_RESTORED" in out and "SCHEMA" not in out and "MISMATCH" not in out


@ROOT_ONLY
def test_an_owner_change_is_not_restored(ws: Path) -> None:
    assert run(ws, command=f"chown 4242:4343 {DOMAIN}/sub/b.txt", isolation="none") == 4
    change = ledger(ws)["RESTORE_DIFF.json"][DOMAIN]["changed"]["sub/b.txt"]
    assert change["mode_before"] == "0644" and change["mode_after"] == "0644 o=4242:4343"


def test_a_forged_attribute_value_fails_validation(ws: Path) -> None:
    assert run(ws, command="true", isolation="none") == 0
    post = ws / RUNS / "r1" / "POST_MODES.json"
    doc = json.loads(post.read_text())
    doc[DOMAIN]["a.txt"] = "0644 q=1"
    post.unlink()  # a hard link of PRE_MODES when nothing changed
    post.write_text(json.dumps(doc, separators=(",", ":"), sort_keys=True) + "\n")
    assert _validate(ws) == 1


def _attributes(path: Path) -> tuple[int, int, int, int, dict[str, bytes | None]]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid, st.st_mode, st.st_nlink, attrs.read_path(os.fspath(path))


def test_rollback_puts_back_xattrs_and_breaks_an_outside_link(ws: Path) -> None:
    a, b = ws / DOMAIN / "a.txt", ws / DOMAIN / "sub" / "b.txt"
    os.setxattr(b, "user.keep", b"original")
    os.setxattr(b, "user.gone", b"removed by the command")
    wanted = {p: _attributes(p) for p in (a, b)}
    before = _modes(ws)
    command = (
        f"ln {DOMAIN}/a.txt outside && "
        f"{sys.executable} -c \"import os; p='{DOMAIN}/sub/b.txt'; os.setxattr(p, 'user.keep', b'forged'); "
        f"os.removexattr(p, 'user.gone'); os.setxattr(p, 'user.new', b'x')\""
    )
    assert run(ws, command=command, isolation="rollback") == 4
    rollback = ledger(ws)["STATUS.json"]["rollback"]
    assert rollback["performed"] is True and rollback["verified"] is True, rollback
    assert _modes(ws) == before
    assert {p: _attributes(p) for p in (a, b)} == wanted
    assert (ws / "outside").read_text() == "alpha\n" and os.lstat(ws / "outside").st_nlink == 1


@ROOT_ONLY
def test_rollback_puts_back_the_owner(ws: Path) -> None:
    target = ws / DOMAIN / "run.sh"
    os.chown(target, 1234, 1234)
    before = _modes(ws)
    assert before["run.sh"] == "0755 o=1234:1234"
    assert (
        run(ws, command=f"chown 0:0 {DOMAIN}/run.sh && chown 777:777 {DOMAIN}/a.txt", isolation="rollback")
        == 4
    )
    assert ledger(ws)["STATUS.json"]["rollback"]["verified"] is True
    assert _modes(ws) == before
    st = os.lstat(target)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 1234, 0o755)


def test_restore_command_puts_back_xattrs(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = ws / DOMAIN / "sub" / "b.txt"
    os.setxattr(b, "user.keep", b"v1")
    before = _modes(ws)
    assert run(ws, command="true", isolation="rollback") == 0
    os.setxattr(b, "user.keep", b"v2")
    os.setxattr(ws / DOMAIN / "sub", "user.added", b"later")
    os.chmod(ws / DOMAIN / "run.sh", 0o700)
    assert _modes(ws) != before
    capsys.readouterr()
    assert main(["restore", "r1", "--root", str(ws), "--dry-run"]) == 0
    said = capsys.readouterr().err
    assert f"would set attributes {DOMAIN}/sub/b.txt" in said and f"would chmod {DOMAIN}/run.sh" in said
    assert main(["restore", "r1", "--root", str(ws)]) == 0
    assert _modes(ws) == before
    assert os.getxattr(b, "user.keep") == b"v1"


def test_gc_keeps_the_xattr_blobs_of_a_kept_state(ws: Path) -> None:
    os.setxattr(ws / DOMAIN / "a.txt", "user.keep", b"v1")
    assert run(ws, command="true", isolation="rollback") == 0
    blobs = ws / RUNS / "_store" / "objects" / attrs.BLOB_ALGORITHM
    assert len(list(blobs.rglob("*"))) == 2  # one folder, one blob
    assert main(["gc", "--root", str(ws)]) == 0
    assert len([p for p in blobs.rglob("*") if p.is_file()]) == 1
    os.removexattr(ws / DOMAIN / "a.txt", "user.keep")
    assert main(["restore", "r1", "--root", str(ws)]) == 0
    assert os.getxattr(ws / DOMAIN / "a.txt", "user.keep") == b"v1"


def test_a_snapshot_reads_xattrs_without_following_a_symlink(tmp_path: Path) -> None:
    if not _xattrs_supported(tmp_path):
        pytest.skip("the file system of the temporary directory has no user xattrs")
    (tmp_path / "d").mkdir()
    (tmp_path / "target").write_text("t")
    os.setxattr(tmp_path / "target", "user.t", b"1")
    os.symlink("../target", tmp_path / "d" / "link")
    entries = snapshot_tree(tmp_path / "d").entries
    assert [e.path for e in entries] == [".", "link"]
    assert entries[1].mode is None and " x=" not in (entries[0].mode or "")
    out = subprocess.run(
        [sys.executable, "-m", "catalytic", "snapshot", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def _mtimes(root: Path) -> dict[str, int]:
    top = root / DOMAIN
    found = {".": os.lstat(top).st_mtime_ns}
    for dirpath, dirs, files in os.walk(top):
        for name in dirs + files:
            path = Path(dirpath) / name
            found[path.relative_to(top).as_posix()] = os.lstat(path).st_mtime_ns
    return found


def test_rollback_puts_back_modification_times(ws: Path) -> None:
    old = 1_000_000_000_000_000_000  # 2001: far from now, so a time the restore left would show
    for rel in _mtimes(ws):
        os.utime(ws / DOMAIN / rel, ns=(old, old), follow_symlinks=False)
    before = _mtimes(ws)
    command = (
        f"echo changed > {DOMAIN}/a.txt && rm {DOMAIN}/sub/b.txt && touch {DOMAIN}/new && "
        f"chmod 700 {DOMAIN}/run.sh"
    )
    assert run(ws, command=command, isolation="rollback") == 4
    assert ledger(ws)["STATUS.json"]["rollback"]["verified"] is True
    assert _mtimes(ws) == before


def test_restore_command_puts_back_modification_times(ws: Path) -> None:
    old = 1_000_000_000_000_000_000
    os.utime(ws / DOMAIN / "a.txt", ns=(old, old))
    os.utime(ws / DOMAIN / "sub", ns=(old, old))
    assert run(ws, command="true", isolation="rollback") == 0
    before = _mtimes(ws)
    (ws / DOMAIN / "a.txt").write_text("edited later\n")
    (ws / DOMAIN / "sub" / "extra").write_text("x")
    assert main(["restore", "r1", "--root", str(ws)]) == 0
    assert _mtimes(ws) == before
    # A damaged times file costs the times, never the restore.
    (ws / RUNS / "_store" / "states" / "r1.json.times").write_text("[not json\n")
    (ws / DOMAIN / "a.txt").write_text("edited again\n")
    assert main(["restore", "r1", "--root", str(ws)]) == 0
    assert (ws / DOMAIN / "a.txt").read_text() == "alpha\n"


def test_overlay_own_xattrs_are_not_the_command_s(ws: Path) -> None:
    from isolation_helpers import overlay_skip_reason

    reason = overlay_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    # Opening a file for writing copies it up (overlayfs may mark the copy with its own xattrs); the bytes,
    # bits and times are the same: the domain is as it was.
    assert run(ws, command=f": >> {DOMAIN}/a.txt && chmod 755 {DOMAIN}/sub", isolation="overlay") == 0
    assert ledger(ws)["STATUS.json"]["status"] == "restored"
    # The command's own xattrs are still seen through the overlay.
    command = f"{sys.executable} -c \"import os; os.setxattr('{DOMAIN}/a.txt', 'user.tag', b'x')\""
    assert run(ws, command=command, isolation="overlay", run_id="r2") == 4
    assert " x=" in ledger(ws, "r2")["RESTORE_DIFF.json"][DOMAIN]["changed"]["a.txt"]["mode_after"]


def test_what_changed_names_each_attribute() -> None:
    from catalytic.diff import what_changed
    from catalytic.events import event, render

    digest = "ab" * 32
    record = {
        "before": digest,
        "after": digest,
        "mode_before": "0644",
        "mode_after": f"0600 o=0:0 n=2 x={digest}",
    }
    assert what_changed(record) == "mode 0644 -> 0600, owner, links 1 -> 2, xattrs"
    assert what_changed({"before": digest, "after": "cd" * 32}) == "content"
    assert what_changed({"before": digest, "after": "dir", "mode_before": "0644", "mode_after": "0755"}) == (
        "type, mode 0644 -> 0755"
    )
    line = render(event("diff_entry", change="changed", path="d/f", what="xattrs"))
    assert line == "    changed d/f (xattrs)"
