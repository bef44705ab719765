"""Commands that try to plant a ledger, or to reach an output through a symlink (issue 18, items 1 and 4).

Nothing the command writes into the runs root may be taken for catalytic's own ledger, and ``run`` and
``validate`` agree about an output reached through a symlinked component of its path.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import RUNS, cli, ledger, run_args, status, tally


def _runs_json(ws: Path) -> dict[str, dict[str, Any]]:
    proc = cli(ws, "runs", "--json")
    assert proc.returncode == 0, proc.stderr
    return {row["run_id"]: row for row in json.loads(proc.stdout)}


def _clean_run(ws: Path, run_id: str = "clean") -> Path:
    proc = cli(ws, *run_args(run_id))
    assert proc.returncode == 0, proc.stderr
    return ledger(ws, run_id)


#: The planting command: copy an earlier clean ledger into the run's own ledger directory, make it
#: say it is this run (resealing it, or dropping the seal), then dirty the domain.
PLANT = """
import json, os, shutil, sys
from pathlib import Path
src, dst, how = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
run_id = dst.name
for name in os.listdir(src):
    if name not in ("LEDGER_DIGEST.json", "SIGNATURE.json"):
        shutil.copy(src / name, dst / name)
for name in ("RUN_INFO.json", "STATUS.json"):
    doc = json.loads((dst / name).read_text())
    doc["run_id"] = run_id
    (dst / name).write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\\n")
if how == "resealed":
    from catalytic.ledger import digest
    doc = digest.compute(dst, run_id)
    (dst / "LEDGER_DIGEST.json").write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\\n")
with open("scratch/f0.txt", "a") as f:
    f.write("dirty\\n")
"""


def _assert_not_passed(ws: Path, run_id: str) -> None:
    check = cli(ws, "validate", "--run-dir", f"{RUNS}/{run_id}")
    assert check.returncode == 1, check.stdout
    every = cli(ws, "validate", "--all")
    assert every.returncode == 1, every.stdout
    assert f"FAIL: {run_id}" in every.stdout, every.stdout
    assert "Traceback" not in check.stderr + every.stderr
    assert _runs_json(ws)[run_id]["status"] != "restored"


@pytest.mark.parametrize("how", ["unsealed", "resealed"])
def test_a_ledger_planted_in_the_runs_own_directory_is_quarantined(ws: Path, how: str) -> None:
    clean = _clean_run(ws)
    planted = ledger(ws, "planted")
    proc = cli(
        ws, *run_args("planted", ("scratch",), sys.executable, "-c", PLANT, str(clean), str(planted), how)
    )
    st = status(ws, "planted")
    tally("ledger-planted", false_restored=int(st is not None and st["status"] == "restored"))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 4, proc.stderr  # dirty, never an internal error
    assert st is not None and st["status"] == "dirty" and st["restoration_verified"] is False
    assert "foreign" in st["reason"] and "RUN_INFO.json" in st["reason"], st["reason"]
    assert "1 changed" in st["reason"], st["reason"]
    # The planted files are kept aside, never taken for ours.
    foreign = planted / "quarantine" / "foreign"
    assert (foreign / "RUN_INFO.json").is_file()
    info = json.loads((planted / "RUN_INFO.json").read_text())
    assert info["command"][0] == sys.executable
    assert json.loads((foreign / "STATUS.json").read_text())["status"] == "restored"
    _assert_not_passed(ws, "planted")


@pytest.mark.parametrize("replacement", ["directory", "symlink"])
def test_a_ledger_directory_replaced_by_the_command_is_not_ours(
    ws: Path, tmp_path: Path, replacement: str
) -> None:
    clean = _clean_run(ws)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(clean, elsewhere)
    target = ledger(ws, "replaced")
    script = (
        "import os, shutil, sys\n"
        f"os.rename({str(target)!r}, {str(target)!r} + '.moved')\n"
        + (
            f"shutil.copytree({str(elsewhere)!r}, {str(target)!r})\n"
            if replacement == "directory"
            else f"os.symlink({str(elsewhere)!r}, {str(target)!r})\n"
        )
        + "open('scratch/f0.txt', 'a').write('x')\n"
    )
    proc = cli(ws, *run_args("replaced", ("scratch",), sys.executable, "-c", script))
    st = status(ws, "replaced")
    tally("ledger-planted", false_restored=int(st is not None and st["status"] == "restored"))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 4, proc.stderr
    assert not target.is_symlink() and st is not None and st["status"] == "dirty"
    assert "replaced" in st["reason"], st["reason"]
    # Nothing was written through the symlink.
    assert sorted(os.listdir(elsewhere)) == sorted(os.listdir(clean))
    assert (target / "quarantine" / "foreign").exists()
    _assert_not_passed(ws, "replaced")


def test_a_ledger_the_chain_does_not_know_fails(ws: Path) -> None:
    """A copy of a clean ledger under a new name, without a seal, is no run of this runs root."""
    clean = _clean_run(ws)
    copy = ledger(ws, "copied")
    shutil.copytree(clean, copy)
    (copy / "LEDGER_DIGEST.json").unlink()
    for name in ("RUN_INFO.json", "STATUS.json"):
        doc = json.loads((copy / name).read_text())
        doc["run_id"] = "copied"
        (copy / name).write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n")
    tally("ledger-planted")
    check = cli(ws, "validate", "--run-dir", f"{RUNS}/copied")
    assert check.returncode == 1 and "UNCHAINED" in check.stdout, check.stdout
    every = cli(ws, "validate", "--all")
    assert every.returncode == 1 and "UNCHAINED" in every.stdout, every.stdout
    assert _runs_json(ws)["copied"]["status"] == "unchained"
    assert _runs_json(ws)["clean"]["status"] == "restored"
    assert cli(ws, "validate", "--run-dir", f"{RUNS}/clean").returncode == 0


# -- item 4: an allowed root replaced by a symlink --------------------------------------------------


def _output_run(ws: Path, run_id: str, script: str, out: str = "CORTEX/_generated/out.txt") -> Any:
    (ws / "CORTEX" / "_generated").mkdir(parents=True, exist_ok=True)
    args = ["run", "-q", "--run-id", run_id, "--catalytic-domains", "scratch", "--durable-outputs", out]
    return cli(ws, *args, "--", sys.executable, "-c", script)


@pytest.mark.parametrize("declared", ["CORTEX/_generated/out.txt", "CORTEX/_generated"])
def test_an_allowed_root_replaced_by_a_symlink_breaks_invariant_2(
    ws: Path, tmp_path: Path, declared: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    script = (
        "import os\n"
        "os.rmdir('CORTEX/_generated')\n"
        f"os.symlink({str(out)!r}, 'CORTEX/_generated')\n"
        "open('CORTEX/_generated/out.txt', 'w').write('result')\n"
    )
    proc = _output_run(ws, "escaped", script, declared)
    st = status(ws, "escaped")
    tally("output-symlink", false_restored=int(proc.returncode == 0))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 4, proc.stderr
    assert st is not None and st["status"] == "dirty" and st["error"]["code"] == "OUTPUT_ESCAPED"
    assert "CORTEX/_generated" in st["reason"] and "symbolic link" in st["reason"], st["reason"]
    outputs = json.loads((ledger(ws, "escaped") / "OUTPUTS.json").read_text())
    assert outputs == []
    check = cli(ws, "validate", "--run-dir", f"{RUNS}/escaped")
    assert check.returncode == 1 and "OUTPUT_ESCAPED" in check.stdout, check.stdout
    assert "OUTPUT_UNLISTED" not in check.stdout, check.stdout


def test_a_parent_of_an_output_replaced_by_a_symlink_inside_the_root(ws: Path) -> None:
    """Even a symlink that stays in the workspace is a component the validator never follows: both refuse."""
    script = (
        "import os\n"
        "os.makedirs('CORTEX/_generated/real')\n"
        "os.symlink('real', 'CORTEX/_generated/sub')\n"
        "open('CORTEX/_generated/sub/out.txt', 'w').write('result')\n"
    )
    proc = _output_run(ws, "inner", script, "CORTEX/_generated/sub/out.txt")
    st = status(ws, "inner")
    tally("output-symlink", false_restored=int(proc.returncode == 0))
    assert proc.returncode == 4, proc.stderr
    assert st is not None and st["error"]["code"] == "OUTPUT_ESCAPED"
    check = cli(ws, "validate", "--run-dir", f"{RUNS}/inner")
    assert check.returncode == 1 and "OUTPUT_ESCAPED" in check.stdout, check.stdout


def test_an_output_that_is_itself_a_symlink_is_still_recorded(ws: Path) -> None:
    script = "import os\nos.symlink('elsewhere', 'CORTEX/_generated/latest')\n"
    proc = _output_run(ws, "leaf", script, "CORTEX/_generated/latest")
    assert proc.returncode == 0, proc.stderr
    outputs = json.loads((ledger(ws, "leaf") / "OUTPUTS.json").read_text())
    assert outputs == [{"path": "CORTEX/_generated/latest", "type": "symlink", "target": "elsewhere"}]
    assert cli(ws, "validate", "--run-dir", f"{RUNS}/leaf").returncode == 0


def test_an_output_root_replaced_after_a_clean_run_fails_validation(ws: Path, tmp_path: Path) -> None:
    proc = _output_run(ws, "later", "open('CORTEX/_generated/out.txt', 'w').write('r')\n")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    (ws / "CORTEX" / "_generated").rename(out)
    (ws / "CORTEX" / "_generated").symlink_to(out)
    check = cli(ws, "validate", "--run-dir", f"{RUNS}/later")
    assert check.returncode == 1 and "OUTPUT_ESCAPED" in check.stdout, check.stdout


@pytest.mark.parametrize("replacement", ["symlink", "removed"])
def test_a_runs_root_replaced_by_the_command_is_an_error_not_a_crash(
    ws: Path, tmp_path: Path, replacement: str
) -> None:
    _clean_run(ws)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = "import os\nos.rename('CONTRACTS/_runs', 'CONTRACTS/_runs.moved')\n" + (
        f"os.symlink({str(elsewhere)!r}, 'CONTRACTS/_runs')\n" if replacement == "symlink" else ""
    )
    proc = cli(ws, *run_args("rootswap", ("scratch",), sys.executable, "-c", script))
    tally("ledger-planted", false_restored=int(proc.returncode == 0))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stderr
    # Nowhere left to write a ledger of ours: one line, exit 1, nothing written elsewhere.
    assert "LEDGER_FOREIGN" in proc.stderr and "runs root" in proc.stderr, proc.stderr
    assert not (elsewhere / "rootswap").exists()


#: A process the command leaves behind takes the run lock of its own run once the run ended, to pass as
#: "in progress" forever (the reader then does not check it).
HOLD_LOCK = """
import fcntl, hashlib, os, sys, time
name = "run-" + hashlib.sha256(sys.argv[2].encode()).hexdigest()[:32] + ".lock"
path = os.path.join(sys.argv[1], "_locks", name)
os.makedirs(os.path.dirname(path), exist_ok=True)
fd = os.open(path, os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
open(sys.argv[3], "w").close()
time.sleep(60)
"""


def test_a_run_held_as_in_progress_never_passes(ws: Path, tmp_path: Path) -> None:
    import subprocess

    proc = cli(ws, *run_args("held", ("scratch",), "sh", "-c", "echo dirty > scratch/f0.txt"))
    assert proc.returncode == 4, proc.stderr
    ready = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(ws / RUNS), "held", str(ready)])
    try:
        while not ready.exists():
            assert holder.poll() is None
            time.sleep(0.01)
        check = cli(ws, "validate", "--all")
        rows = _runs_json(ws)
        tally(
            "ledger-planted",
            false_restored=int(check.returncode == 0 or rows["held"]["status"] == "restored"),
        )
        assert check.returncode == 1 and "RUN_IN_PROGRESS" in check.stdout
        assert rows["held"]["status"] == "running"
    finally:
        holder.kill()
        holder.wait()
    check = cli(ws, "validate", "--all")
    assert check.returncode == 1 and "NOT_RESTORED" in check.stdout  # the lock gone, the run is read again
