"""Benchmark catalytic against baselines measured in the same run (the targets of issue 3).

    .venv/bin/python benchmarks/run.py                        # empty, 10k, 100k, large (a few minutes)
    .venv/bin/python benchmarks/run.py --cases 1m             # 1M x 64 B files (and the 100k case it is
                                                              # compared with); ~5 GB of disk, 1M inodes
    .venv/bin/python benchmarks/run.py --scale 0.01 --repeat 1   # smoke size (the test suite uses this)

Every case generates its tree under a temporary directory and removes it afterwards, runs each command
``--repeat`` times and prints the median wall time, the peak RSS (the largest ``ru_maxrss`` of any process
of the command's tree over the repeats, see measure_tree.py) and the ratio against the baseline the target
names. A final table lists every target with MET or MISSED.

Baselines, all measured in the same invocation:
- ``find d -type f -print0 | xargs -0 -n 256 -P<cores> sha256sum``: one pass of coreutils over the tree
  (the targets' "one sha256sum pass"); the issue's literal form without ``-n`` is printed next to it for
  information (xargs then packs ~128 KiB of names per sha256sum, so on small trees fewer processes than
  cores get work);
- ``b3sum`` (one pass, when installed: Debian package ``b3sum``; skipped otherwise);
- hashlib on all cores (one pass, large files);
- the naive reference ``naive.py``: what the seed's prototype does (rglob, read_bytes, sha256, a dict per
  domain, twice around the command, compare, write the six JSON ledger files).
"Cold cache" means no stat cache (a fresh runs root); the OS page cache is warm for every command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import trees

HERE = Path(__file__).resolve().parent
PY = sys.executable
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
ALL_CASES = ("empty", "10k", "100k", "large", "1m")
DEFAULT_CASES = ("empty", "10k", "100k", "large")
# DESIGN.md's performance anchors (same machine kind), printed next to what this run measures.
ANCHORS = {
    ("10k", "sha256sum"): "0.127 s",
    ("100k", "sha256sum"): "0.63 s",
    ("10k", "b3sum"): "0.124 s",
    ("100k", "b3sum"): "0.97 s",
    ("10k", "naive"): "seed 0.77 s",
    ("100k", "naive"): "seed 5.76 s / 140 MiB",
}


@dataclass
class Measure:
    wall: float  # median over the repeats
    rss_mib: float  # peak over the repeats of the largest ru_maxrss in the process tree
    main_rss_mib: float  # peak over the repeats of wait4's ru_maxrss for the command (and what it reaped)
    walls: list[float] = field(default_factory=list)


def measure(cmd: list[str], cwd: Path, repeat: int, before: Callable[[], None] | None = None) -> Measure:
    """Run ``cmd`` ``repeat`` times through measure_tree.py (``before`` runs untimed before each)."""
    walls: list[float] = []
    rss = main = 0.0
    for _ in range(repeat):
        if before:
            before()
        proc = subprocess.run(
            [PY, str(HERE / "measure_tree.py"), *cmd], cwd=cwd, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise SystemExit(f"measuring failed: {' '.join(cmd)}\n{proc.stderr}")
        result = json.loads(proc.stdout.splitlines()[-1])
        if result["returncode"] != 0:
            raise SystemExit(f"benchmark command failed ({result['returncode']}): {' '.join(cmd)}")
        walls.append(result["wall"])
        rss = max(rss, result["tree_maxrss"] / 1024)
        main = max(main, result["main_maxrss"] / 1024)
    return Measure(statistics.median(walls), rss, main, walls)


def clear(path: Path) -> Callable[[], None]:
    """A ``before`` hook: remove ``path`` (a runs root: the next catalytic run starts with no cache)."""
    return lambda: trees.remove(path)


def drop_ledgers(runs: Path) -> Callable[[], None]:
    """A ``before`` hook for warm runs: keep the stat cache (``_cache``), remove earlier ledgers so a
    large case does not fill the disk."""

    def hook() -> None:
        if runs.is_dir():
            for child in runs.iterdir():
                if child.name != "_cache":
                    trees.remove(child) if child.is_dir() else child.unlink()

    return hook


def sha256sum_pass(cores: int, per_call: int | None = 256) -> list[str]:
    n = f"-n {per_call} " if per_call else ""
    return ["bash", "-c", f"find d -type f -print0 | xargs -0 {n}-P{cores} sha256sum >/dev/null"]


def catalytic_run(*extra: str) -> list[str]:
    return [PY, "-m", "catalytic", "run", "-q", "--catalytic-domains", "d", "--runs-root", "runs", *extra]


def naive_run() -> list[str]:
    return [PY, str(HERE / "naive.py"), "--runs-root", "naive-runs", "d", "--", "true"]


@dataclass
class Target:
    name: str
    measured: str
    ratio: float
    limit: float
    at_least: bool = False
    unit: str = "x"

    @property
    def met(self) -> bool:
        return self.ratio >= self.limit if self.at_least else self.ratio <= self.limit

    @property
    def value(self) -> str:
        return (
            f"{self.ratio:.0f}{self.unit}" if self.unit.strip() == "MiB" else f"{self.ratio:.2f}{self.unit}"
        )

    @property
    def rule(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.limit:g}{self.unit}"


class Report:
    def __init__(self) -> None:
        self.targets: list[Target] = []

    def row(self, what: str, m: Measure, ratio: str = "", note: str = "") -> None:
        print(f"  {what:<52} {m.wall:8.3f} s {m.rss_mib:6.0f} MiB  {ratio:>8}  {note}", flush=True)

    def target(self, target: Target) -> None:
        self.targets.append(target)
        verdict = "MET" if target.met else "MISSED"
        print(f"  -> {target.name}: {target.value} ({target.rule}) {verdict}", flush=True)

    def summary(self, repeat: int, skipped: list[str]) -> None:
        print(f"\nTargets (medians of {repeat} run(s); RSS = peak ru_maxrss of any process of the tree)")
        width = max([len(t.name) for t in self.targets] + [6])
        print(f"  {'target':<{width}}  {'measured':<44} {'value':>10}  {'limit':<10} verdict")
        for t in self.targets:
            value = t.value
            verdict = "MET" if t.met else "MISSED"
            print(f"  {t.name:<{width}}  {t.measured:<44} {value:>10}  {t.rule:<10} {verdict}")
        for name in skipped:
            print(f"  {name}: not measured")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per command (median)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every tree size (smoke: 0.01)")
    parser.add_argument(
        "--cases",
        "--only",
        dest="cases",
        nargs="+",
        choices=ALL_CASES,
        help=f"cases to run (default: {' '.join(DEFAULT_CASES)}); 1m also runs 100k, its reference",
    )
    parser.add_argument("--huge", action="store_true", help="add the 1m case to the selected cases")
    parser.add_argument("--tmp", help="where to build trees (default: the system temp dir)")
    args = parser.parse_args(argv)
    cases = set(args.cases or DEFAULT_CASES) | ({"1m"} if args.huge else set())
    if "1m" in cases:
        cases.add("100k")
    # Measure catalytic as installed: with its bytecode cached. An environment that sets
    # PYTHONDONTWRITEBYTECODE would make every timed run recompile the package (~30 ms here).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    import catalytic

    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(catalytic.__file__).parent), str(HERE)],
        check=True,
    )
    b3sum = shutil.which("b3sum")
    print(f"catalytic benchmark: {CORES} cores, python {sys.version.split()[0]}, repeat {args.repeat}")
    print(f"b3sum: {b3sum or 'not installed (baseline skipped)'}")
    print("columns: median wall, peak RSS of the process tree, ratio to the case's sha256sum pass, notes")
    report = Report()
    r = args.repeat
    cold_ref: dict[str, Measure] = {}  # the 100k case's cold and warm runs, for the 1m ratios

    def anchor(case: str, what: str) -> str:
        # DESIGN.md's figures are for the full sizes only.
        return f"DESIGN.md: {ANCHORS[case, what]}" if args.scale == 1 and (case, what) in ANCHORS else ""

    def n(count: int) -> int:
        return max(1, int(count * args.scale))

    with tempfile.TemporaryDirectory(prefix="catalytic-bench-", dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)

        if "empty" in cases:
            ws = tmp / "empty"
            (ws / "d").mkdir(parents=True)
            print("\n[empty domain] catalytic run -- true")
            base = measure([PY, "-c", "pass"], ws, r)
            report.row("python -c pass", base)
            m = measure([*catalytic_run(), "--", "true"], ws, r, before=clear(ws / "runs"))
            report.row("catalytic run", m, f"{m.wall / base.wall:.2f}x", "(ratio to python -c pass)")
            report.target(
                Target(
                    "empty: run / python -c pass",
                    f"{m.wall:.3f} s vs {base.wall:.3f} s",
                    m.wall / base.wall,
                    2.5,
                )
            )
            trees.remove(ws, CORES)

        small_cases = [("10k", n(10_000), 4096, 2.0, 3.0), ("100k", n(100_000), 1024, 1.6, 5.0)]
        for name, files, size, limit, naive_factor in small_cases:
            if name not in cases:
                continue
            ws = tmp / name
            trees.make_tree(ws / "d", files, size, jobs=CORES)
            time.sleep(0.3)  # let the newest files age past the stat cache's racy window
            print(f"\n[{name}: {files} files x {size} B] whole run of `true`")
            one = measure(sha256sum_pass(CORES), ws, r)
            report.row(
                f"find | xargs -0 -n 256 -P{CORES} sha256sum (one pass)",
                one,
                "1.00x",
                anchor(name, "sha256sum"),
            )
            literal = measure(sha256sum_pass(CORES, None), ws, r)
            report.row(
                f"find | xargs -0 -P{CORES} sha256sum (issue's form)",
                literal,
                f"{literal.wall / one.wall:.2f}x",
                "informational: no -n",
            )
            if b3sum:
                b3 = measure(["bash", "-c", f"find d -type f -print0 | xargs -0 {b3sum} >/dev/null"], ws, r)
                report.row(
                    "find | xargs -0 b3sum (one pass)",
                    b3,
                    f"{b3.wall / one.wall:.2f}x",
                    anchor(name, "b3sum"),
                )
            naive = measure(naive_run(), ws, r, before=clear(ws / "naive-runs"))
            report.row(
                "naive reference (seed prototype, naive.py)",
                naive,
                f"{naive.wall / one.wall:.2f}x",
                anchor(name, "naive"),
            )
            cold = measure([*catalytic_run(), "--", "true"], ws, r, before=clear(ws / "runs"))
            report.row("catalytic run, cold cache", cold, f"{cold.wall / one.wall:.2f}x")
            report.target(
                Target(
                    f"{name}: cold run / sha256sum pass",
                    f"{cold.wall:.3f} s vs {one.wall:.3f} s",
                    cold.wall / one.wall,
                    limit,
                )
            )
            report.target(
                Target(
                    f"{name}: naive / cold run (speed-up)",
                    f"naive {naive.wall:.3f} s vs {cold.wall:.3f} s",
                    naive.wall / cold.wall,
                    naive_factor,
                    at_least=True,
                )
            )
            nocache = measure([*catalytic_run("--no-cache"), "--", "true"], ws, r, before=clear(ws / "runs"))
            report.row("catalytic run --no-cache", nocache, f"{nocache.wall / one.wall:.2f}x")
            j1 = measure([*catalytic_run("--jobs", "1"), "--", "true"], ws, r, before=clear(ws / "runs"))
            report.row("catalytic run --jobs 1, cold cache", j1, f"{j1.wall / one.wall:.2f}x")
            trees.remove(ws / "runs")
            subprocess.run([*catalytic_run(), "--", "true"], cwd=ws, check=True)
            warm = measure([*catalytic_run(), "--", "true"], ws, r, before=drop_ledgers(ws / "runs"))
            report.row("catalytic run, warm cache", warm, f"{warm.wall / one.wall:.2f}x")
            if name == "100k":
                report.target(
                    Target(
                        "100k: warm run / sha256sum pass",
                        f"{warm.wall:.3f} s vs {one.wall:.3f} s",
                        warm.wall / one.wall,
                        1.0,
                    )
                )
                cold_ref.update(cold=cold, warm=warm)
            trees.remove(ws, CORES)

        if "large" in cases:
            ws = tmp / "large"
            size = max(1 << 20, int((128 << 20) * args.scale))
            trees.make_large(ws / "d", 8, size)
            time.sleep(0.3)
            print(f"\n[large: 8 files x {size >> 20} MiB] whole run")
            hl = measure([PY, str(HERE / "hashlib_pass.py"), "d", str(CORES)], ws, r)
            report.row(f"hashlib sha256, {CORES} threads (one pass)", hl)
            report.row(
                f"find | xargs -0 -n 256 -P{CORES} sha256sum (one pass)",
                measure(sha256sum_pass(CORES), ws, r),
            )
            cold = measure([*catalytic_run(), "--", "true"], ws, r, before=clear(ws / "runs"))
            report.row(
                "catalytic run sha256, cold cache", cold, f"{cold.wall / hl.wall:.2f}x", "(ratio to hashlib)"
            )
            report.target(
                Target(
                    "large: sha256 run / hashlib",
                    f"{cold.wall:.3f} s vs {hl.wall:.3f} s",
                    cold.wall / hl.wall,
                    1.5,
                )
            )
            b3 = measure([*catalytic_run("--hash", "blake3"), "--", "true"], ws, r, before=clear(ws / "runs"))
            if b3sum:
                one_b3 = measure([b3sum, *sorted(str(p) for p in (ws / "d").iterdir())], ws, r)
                report.row("b3sum (one pass)", one_b3)
                report.row(
                    "catalytic run blake3, cold cache",
                    b3,
                    f"{b3.wall / one_b3.wall:.2f}x",
                    "(ratio to b3sum)",
                )
                report.target(
                    Target(
                        "large: blake3 run / b3sum",
                        f"{b3.wall:.3f} s vs {one_b3.wall:.3f} s",
                        b3.wall / one_b3.wall,
                        3.0,
                    )
                )
            else:
                hb3 = measure([PY, str(HERE / "hashlib_pass.py"), "d", str(CORES), "blake3"], ws, r)
                report.row(f"python blake3, {CORES} threads (one pass)", hb3)
                report.row(
                    "catalytic run blake3, cold cache",
                    b3,
                    f"{b3.wall / hb3.wall:.2f}x",
                    "(ratio to python blake3; b3sum missing, target not measured)",
                )
            trees.remove(ws, CORES)

        if "1m" in cases:
            run_1m(tmp / "1m", n(1_000_000), r, report, cold_ref)

    skipped = []
    if "large" in cases and not b3sum:
        skipped.append("large: blake3 run / b3sum (b3sum not installed)")
    if "1m" not in cases:
        skipped.append("1m: peak RSS and wall / 100k (run with --cases 1m)")
    report.summary(r, skipped)
    return 0


def run_1m(ws: Path, files: int, r: int, report: Report, ref: dict[str, Measure]) -> None:
    """1M files x 64 B: whole runs, cold and warm; peak RSS and the wall ratio to the 100k case."""
    ws.mkdir(parents=True)
    st = os.statvfs(ws)
    # Each 64-byte file takes an inode and (without inline data) a block; each ledger ~100 B per file.
    need_bytes, need_inodes = files * (st.f_frsize + 600) + (1 << 30), files + 10_000
    if st.f_bavail * st.f_frsize < need_bytes or (st.f_files and st.f_favail < need_inodes):
        print(f"\n[1m] skipped: needs ~{need_bytes >> 30} GiB and {need_inodes} inodes free under {ws}")
        return
    start = time.perf_counter()
    trees.make_tree(ws / "d", files, 64, jobs=CORES)
    written = time.perf_counter() - start
    print(f"\n[1m: {files} files x 64 B] whole run of `true` (tree written in {written:.1f} s)")
    time.sleep(0.3)
    try:
        for kind in ("cold", "warm"):
            if kind == "cold":
                m = measure([*catalytic_run(), "--", "true"], ws, r, before=clear(ws / "runs"))
            else:
                subprocess.run([*catalytic_run(), "--", "true"], cwd=ws, check=True)
                m = measure([*catalytic_run(), "--", "true"], ws, r, before=drop_ledgers(ws / "runs"))
            base = ref.get(kind)
            ratio = f"{m.wall / base.wall:.2f}x" if base else ""
            report.row(
                f"catalytic run, {kind} cache",
                m,
                ratio,
                f"(ratio to 100k {kind}); wait4 RSS of the command {m.main_rss_mib:.0f} MiB",
            )
            report.target(
                Target(f"1m: {kind} run peak RSS", f"{m.rss_mib:.0f} MiB", m.rss_mib, 150, unit=" MiB")
            )
            if base:
                report.target(
                    Target(
                        f"1m: {kind} run / 100k {kind} run",
                        f"{m.wall:.2f} s vs {base.wall:.2f} s",
                        m.wall / base.wall,
                        11,
                    )
                )
    finally:
        start = time.perf_counter()
        trees.remove(ws, CORES)
        print(f"  (1m tree removed in {time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    raise SystemExit(main())
