"""Benchmark catalytic against baselines measured in the same run.

    .venv/bin/python benchmarks/run.py              # the standard cases (a few minutes)
    .venv/bin/python benchmarks/run.py --huge       # also 1M small files (needs ~5 GB of inodes/space, slow)
    .venv/bin/python benchmarks/run.py --scale 0.01 --repeat 1   # smoke size (used by the test suite)

Every case generates its tree under a temporary directory, runs each command ``--repeat`` times and
prints the median wall time, the peak RSS of the slowest process tree member (``ru_maxrss`` of the child)
and the ratio against the baseline the target names. Baselines: ``find | xargs -0 -P<cores> sha256sum``
(one pass), ``b3sum`` (one pass, when installed), hashlib sha256 on all cores (one pass, large files), and
the naive reference: what the seed's prototype does (walk, read every file, sha256, dict in memory, twice).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class Measure:
    wall: float
    rss_mib: float


def measure(cmd: list[str], cwd: Path, repeat: int, before: list[str] | None = None) -> Measure:
    """Median wall time and peak RSS of ``cmd`` over ``repeat`` runs (``before`` runs untimed first)."""
    walls: list[float] = []
    rss = 0.0
    for _ in range(repeat):
        if before:
            subprocess.run(before, cwd=cwd, check=True)
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL)
        _pid, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - start)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}")
        rss = max(rss, usage.ru_maxrss / 1024)
    return Measure(statistics.median(walls), rss)


def make_tree(root: Path, files: int, size: int, per_dir: int = 1000) -> None:
    """``files`` files of ``size`` bytes (distinct contents) in directories of ``per_dir``."""
    root.mkdir(parents=True)
    block = os.urandom(max(size, 1))
    for i in range(files):
        sub = root / f"d{i // per_dir:05d}"
        if i % per_dir == 0:
            sub.mkdir()
        data = (i.to_bytes(8, "little") + block)[:size]
        with open(sub / f"f{i:07d}", "wb") as out:
            out.write(data)


def make_large(root: Path, files: int, size: int) -> None:
    root.mkdir(parents=True)
    chunk = os.urandom(1 << 20)
    for i in range(files):
        with open(root / f"big{i}", "wb") as out:
            left = size
            out.write(i.to_bytes(8, "little"))
            left -= 8
            while left > 0:
                out.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)


def sha256sum_pass(domain: Path) -> list[str]:
    return ["bash", "-c", f"find {domain} -type f -print0 | xargs -0 -n 256 -P{CORES} sha256sum >/dev/null"]


def catalytic_run(domain: str, runs_root: str, *extra: str) -> list[str]:
    return [
        PY,
        "-m",
        "catalytic",
        "run",
        "-q",
        "--catalytic-domains",
        domain,
        "--runs-root",
        runs_root,
        *extra,
        "--",
        "true",
    ]


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str, str]] = []

    def add(
        self, case: str, what: str, m: Measure, ratio: str = "", target: str = "", verdict: str = ""
    ) -> None:
        self.rows.append(
            (case, what, f"{m.wall:8.3f} s", f"{m.rss_mib:6.0f} MiB", ratio, f"{target} {verdict}")
        )
        print(
            f"  {what:<44} {m.wall:8.3f} s {m.rss_mib:6.0f} MiB  {ratio:>10}  {target} {verdict}", flush=True
        )


def verdict(value: float, limit: float, *, at_least: bool = False) -> str:
    ok = value >= limit if at_least else value <= limit
    return "OK" if ok else "MISSED"


def fresh(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per command (median)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every tree size (smoke: 0.01)")
    parser.add_argument("--huge", action="store_true", help="also run the 1M-file case")
    parser.add_argument("--only", nargs="+", help="run only these cases (empty, 10k, 100k, large, 1m)")
    parser.add_argument("--tmp", help="where to build trees (default: the system temp dir)")
    args = parser.parse_args(argv)
    cases = set(args.only or ["empty", "10k", "100k", "large"] + (["1m"] if args.huge else []))
    # Measure catalytic as installed: with its bytecode cached. An environment that sets
    # PYTHONDONTWRITEBYTECODE would make every timed run recompile the package (~30 ms here).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    import catalytic

    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(catalytic.__file__).parent)], check=True
    )
    b3sum = shutil.which("b3sum")
    print(f"catalytic benchmark: {CORES} cores, python {sys.version.split()[0]}, repeat {args.repeat}")
    print(f"b3sum: {b3sum or 'not installed (baseline skipped)'}")
    report = Report()
    with tempfile.TemporaryDirectory(prefix="catalytic-bench-", dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        r = args.repeat

        def n(count: int) -> int:
            return max(1, int(count * args.scale))

        if "empty" in cases:
            ws = tmp / "empty"
            (ws / "d").mkdir(parents=True)
            print("\n[empty domain] catalytic run -- true")
            base = measure([PY, "-c", "pass"], ws, r)
            report.add("empty", "python -c pass", base)
            m = measure(catalytic_run("d", "runs"), ws, r, before=["rm", "-rf", "runs"])
            ratio = m.wall / base.wall
            report.add("empty", "catalytic run", m, f"{ratio:.2f}x", "<= 2.5x python", verdict(ratio, 2.5))

        small_cases = [("10k", n(10_000), 4096, 2.0, 3.0), ("100k", n(100_000), 1024, 1.6, 5.0)]
        results_100k: Measure | None = None
        for name, files, size, limit, naive_factor in small_cases:
            if name not in cases:
                continue
            ws = tmp / name
            make_tree(ws / "d", files, size)
            time.sleep(0.3)  # let the newest files age past the stat cache's racy window
            print(f"\n[{name}: {files} files x {size} B] whole run of `true`")
            one = measure(sha256sum_pass(ws / "d"), ws, r)
            report.add(name, f"find | xargs -P{CORES} sha256sum (one pass)", one)
            if b3sum:
                report.add(
                    name,
                    "b3sum (one pass)",
                    measure(["bash", "-c", f"find d -type f -print0 | xargs -0 {b3sum} >/dev/null"], ws, r),
                )
            naive = measure([PY, str(HERE / "naive.py"), "d"], ws, r)
            report.add(name, "naive reference (seed prototype)", naive, f"{naive.wall / one.wall:.2f}x")
            cold = measure(catalytic_run("d", "runs"), ws, r, before=["rm", "-rf", "runs"])
            ratio = cold.wall / one.wall
            report.add(
                name,
                "catalytic run, cold cache",
                cold,
                f"{ratio:.2f}x",
                f"<= {limit}x sha256sum",
                verdict(ratio, limit),
            )
            speed = naive.wall / cold.wall
            report.add(
                name,
                "  naive / catalytic",
                cold,
                f"{speed:.2f}x",
                f">= {naive_factor}x faster",
                verdict(speed, naive_factor, at_least=True),
            )
            nocache = measure(catalytic_run("d", "runs", "--no-cache"), ws, r, before=["rm", "-rf", "runs"])
            report.add(name, "catalytic run --no-cache", nocache, f"{nocache.wall / one.wall:.2f}x")
            j1 = measure(catalytic_run("d", "runs", "--jobs", "1"), ws, r, before=["rm", "-rf", "runs"])
            report.add(name, "catalytic run --jobs 1, cold cache", j1, f"{j1.wall / one.wall:.2f}x")
            subprocess.run(catalytic_run("d", "runs"), cwd=ws, check=True)
            warm = measure(catalytic_run("d", "runs"), ws, r)
            ratio = warm.wall / one.wall
            if name == "100k":
                report.add(
                    name,
                    "catalytic run, warm cache",
                    warm,
                    f"{ratio:.2f}x",
                    "<= 1.0x sha256sum",
                    verdict(ratio, 1.0),
                )
                results_100k = warm
            else:
                report.add(name, "catalytic run, warm cache", warm, f"{ratio:.2f}x")
            if name == "100k":
                results_100k = cold
            fresh(ws)

        if "large" in cases:
            ws = tmp / "large"
            size = max(1 << 20, int((128 << 20) * args.scale))
            make_large(ws / "d", 8, size)
            time.sleep(0.3)
            print(f"\n[large: 8 files x {size >> 20} MiB] whole run")
            hl = measure([PY, str(HERE / "hashlib_pass.py"), "d", str(CORES)], ws, r)
            report.add("large", f"hashlib sha256, {CORES} threads (one pass)", hl)
            report.add(
                "large",
                f"find | xargs -P{CORES} sha256sum (one pass)",
                measure(sha256sum_pass(ws / "d"), ws, r),
            )
            cold = measure(catalytic_run("d", "runs"), ws, r, before=["rm", "-rf", "runs"])
            ratio = cold.wall / hl.wall
            report.add(
                "large",
                "catalytic run sha256, cold cache",
                cold,
                f"{ratio:.2f}x",
                "<= 1.5x hashlib",
                verdict(ratio, 1.5),
            )
            b3 = measure(catalytic_run("d", "runs", "--hash", "blake3"), ws, r, before=["rm", "-rf", "runs"])
            if b3sum:
                one_b3 = measure([b3sum, *sorted(str(p) for p in (ws / "d").iterdir())], ws, r)
                report.add("large", "b3sum (one pass)", one_b3)
                ratio = b3.wall / one_b3.wall
                report.add(
                    "large",
                    "catalytic run blake3, cold cache",
                    b3,
                    f"{ratio:.2f}x",
                    "<= 3x b3sum",
                    verdict(ratio, 3.0),
                )
            else:
                hb3 = measure([PY, str(HERE / "hashlib_pass.py"), "d", str(CORES), "blake3"], ws, r)
                report.add("large", f"python blake3, {CORES} threads (one pass)", hb3)
                report.add(
                    "large",
                    "catalytic run blake3, cold cache",
                    b3,
                    f"{b3.wall / hb3.wall:.2f}x",
                    "(b3sum missing)",
                )
            fresh(ws)

        if "1m" in cases:
            ws = tmp / "1m"
            files = n(1_000_000)
            make_tree(ws / "d", files, 64)
            time.sleep(0.3)
            print(f"\n[1m: {files} files x 64 B] whole run, cold cache")
            m = measure(catalytic_run("d", "runs"), ws, 1, before=["rm", "-rf", "runs"])
            report.add(
                "1m", "catalytic run, cold cache", m, "", "peak RSS <= 150 MiB", verdict(m.rss_mib, 150)
            )
            if results_100k is not None:
                ratio = m.wall / results_100k.wall
                report.add("1m", "  wall / 100k cold wall", m, f"{ratio:.2f}x", "<= 11x", verdict(ratio, 11))
            fresh(ws)
    print("\nmedians of", args.repeat, "runs; RSS is the peak of the measured process")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
