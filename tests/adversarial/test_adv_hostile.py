"""Commands that try to fool the proof: each must end dirty or as an error, never "restored"."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from .conftest import FULL, Paused, cli, run_args, status, tally


def _run(ws: Path, run_id: str, script: str, domains: tuple[str, ...] = ("scratch",)) -> tuple[int, str]:
    proc = cli(ws, *run_args(run_id, domains, sys.executable, "-c", script))
    return proc.returncode, proc.stderr


def _verdict(ws: Path, run_id: str, rc: int, err: str, category: str = "hostile") -> dict[str, object] | None:
    st = status(ws, run_id)
    false_restored = int(st is not None and st["status"] == "restored") or int(rc == 0)
    tally(category, false_restored=false_restored, tracebacks=int("Traceback" in err))
    assert "Traceback" not in err, err
    assert rc != 0, err
    assert st is None or (st["status"] == "dirty" and st["restoration_verified"] is False), st
    if st is not None:
        # The offline validator agrees: the ledger does not pass.
        check = cli(ws, "validate", "--run-dir", f"CONTRACTS/_runs/{run_id}")
        assert check.returncode == 1, check.stdout
        assert "Traceback" not in check.stdout + check.stderr
    return st


def test_same_size_rewrite_with_restored_times(ws: Path) -> None:
    script = (
        "import os\n"
        "p = 'scratch/f0.txt'\n"
        "st = os.stat(p)\n"
        "data = open(p, 'rb').read()\n"
        "open(p, 'wb').write(bytes([data[0] ^ 1]) + data[1:])\n"
        "os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))\n"
    )
    rc, err = _run(ws, "sametime", script)
    st = _verdict(ws, "sametime", rc, err)
    assert rc == 4 and st is not None and "1 changed" in str(st["reason"])
    assert os.stat(ws / "scratch/f0.txt").st_size == 70


def test_domain_swapped_for_a_symlink_and_left(ws: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = f"import os\nos.rename('scratch', 'scratch.real')\nos.symlink({str(elsewhere)!r}, 'scratch')\n"
    rc, err = _run(ws, "swapped", script)
    _verdict(ws, "swapped", rc, err)


def test_domain_swapped_for_a_symlink_and_back(ws: Path, tmp_path: Path) -> None:
    """Writes through the swapped-in symlink land outside the domain; the swap itself is caught."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import os\n"
        "os.rename('scratch', 'scratch.real')\n"
        f"os.symlink({str(elsewhere)!r}, 'scratch')\n"
        "open('scratch/smuggled', 'w').write('x')\n"
        "os.unlink('scratch')\n"
        "os.rename('scratch.real', 'scratch')\n"
    )
    rc, err = _run(ws, "swapback", script)
    _verdict(ws, "swapback", rc, err)


def test_domain_swapped_during_the_post_snapshot(ws: Path, tmp_path: Path) -> None:
    run = Paused(ws, "snapshot_post.entry@3", run_args("swapmid"), tmp_path)
    (ws / "scratch" / "sub").rename(ws / "sub.real")
    (ws / "scratch" / "sub").symlink_to(ws / "sub.real")
    run.resume()
    rc, _out, err = run.wait()
    _verdict(ws, "swapmid", rc, err)


@pytest.mark.slow
@pytest.mark.parametrize("detach", ["background", "setsid-double-fork"])
def test_daemonised_child_keeps_writing(ws: Path, detach: str) -> None:
    writer = "import time, sys\ntime.sleep(1.0)\nopen('scratch/late', 'w').write('late')\n"
    if detach == "background":
        script = (
            "import subprocess, sys\n"
            f"subprocess.Popen([sys.executable, '-c', {writer!r}], start_new_session=True)\n"
        )
    else:
        script = (
            "import os, sys\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            f"        os.execv(sys.executable, [sys.executable, '-c', {writer!r}])\n"
            "    os._exit(0)\n"
            "os.wait()\n"
        )
    rc, err = _run(ws, f"daemon-{detach}", script)
    st = _verdict(ws, f"daemon-{detach}", rc, err)
    assert st is not None and st["error"] is not None and st["error"]["code"] == "LINGERING"
    time.sleep(1.5)  # the daemon does write, after the run: the dirty verdict was right
    assert (ws / "scratch" / "late").exists()


@pytest.mark.parametrize("where", ["walked", "not-yet-walked", "new-file"])
def test_write_while_the_post_snapshot_is_taken(ws: Path, tmp_path: Path, where: str) -> None:
    """A process of the command writes while the post snapshot runs: caught by diff or as lingering."""
    ready = tmp_path / "go"
    writer = (
        "import os, time, sys\n"
        f"while not os.path.exists({str(ready)!r}): time.sleep(0.01)\n"
        f"name = {where!r}\n"
        "path = {'walked': 'scratch/f0.txt', 'not-yet-walked': 'scratch/sub/deep.bin',"
        " 'new-file': 'scratch/zz-new'}[name]\n"
        "open(path, 'ab').write(b'!')\n"
    )
    script = f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {writer!r}])\n"
    run = Paused(
        ws, "snapshot_post.entry@3", run_args("midpost", ("scratch",), sys.executable, "-c", script), tmp_path
    )
    ready.write_text("go")
    time.sleep(0.3)
    run.resume()
    rc, _out, err = run.wait()
    _verdict(ws, "midpost", rc, err)


def _hostile_tree_script(kind: str, outside: Path) -> str:
    big = 100_000 if FULL else 10_000
    return {
        "hardlink-out": f"import os\nos.link({str(outside)!r}, 'scratch/hl')\n",
        "fifo": "import os\nos.mkfifo('scratch/fifo')\n",
        "socket": "import socket\ns = socket.socket(socket.AF_UNIX)\ns.bind('scratch/sock')\n",
        "newline-name": "open('scratch/bad\\nname', 'w').write('x')\n",
        "invalid-utf8-name": "import os\nopen(os.fsencode('scratch/') + b'\\xff\\xfe', 'w').write('x')\n",
        "path-4096": (
            "import os\n"
            "d = 'scratch'\n"
            "while len(os.path.abspath(d)) < 4096 - 300:\n"
            "    d = os.path.join(d, 'x' * 200)\n"
            "    os.mkdir(d)\n"
            "rest = 4095 - len(os.path.abspath(d)) - 1\n"
            "open(os.path.join(d, 'y' * min(rest, 255)), 'w').write('x')\n"
        ),
        "depth-200": "import os\nos.makedirs('scratch/' + '/'.join(['d'] * 200))\n",
        "many-empty-files": (
            "import os\nos.mkdir('scratch/many')\n"
            f"for i in range({big}):\n    open(f'scratch/many/{{i}}', 'w').close()\n"
        ),
    }[kind]


KINDS = [
    "hardlink-out",
    "fifo",
    "socket",
    "newline-name",
    "invalid-utf8-name",
    "path-4096",
    "depth-200",
    pytest.param("many-empty-files", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_entries_are_changes(ws: Path, tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("outside")
    rc, err = _run(ws, f"entries-{kind}", _hostile_tree_script(kind, outside))
    st = _verdict(ws, f"entries-{kind}", rc, err)
    assert st is not None and st["error"] is None, st
    assert "added" in str(st["reason"])


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_entries_restored_by_the_command_are_restored(ws: Path, tmp_path: Path, kind: str) -> None:
    """The other direction: the same entries, present before and untouched, are a clean run."""
    outside = tmp_path / "outside.txt"
    outside.write_text("outside")
    setup = cli(
        ws,
        *run_args(f"setup-{kind}", ("scratch",), sys.executable, "-c", _hostile_tree_script(kind, outside)),
    )
    assert setup.returncode == 4, setup.stderr
    if kind == "socket":
        # The socket file stays after its creator exits; nothing else to do.
        assert (ws / "scratch" / "sock").is_socket()
    proc = cli(ws, *run_args(f"clean-{kind}"))
    st = status(ws, f"clean-{kind}")
    assert proc.returncode == 0, proc.stderr
    assert st is not None and st["status"] == "restored"
    tally("hostile-baseline")
