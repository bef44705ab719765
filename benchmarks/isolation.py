"""Overhead of --isolation overlay and rollback versus none, whole `catalytic run -- true`, as ratios.

Usage: .venv/bin/python benchmarks/isolation.py [--cases 10k,100k] [--repeat 3]
Builds each case once in a temporary directory (10k x 4 KiB, 100k x 1 KiB files in one domain), then
times complete runs in fresh subprocesses (warm page cache), best of --repeat. rollback is reported
cold (first run: every file copied into the store) and warm (store already holds the objects).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {"10k": (10_000, 4096), "100k": (100_000, 1024)}
DOMAIN = "CORTEX/_generated/_tmp"


def build(root: Path, count: int, size: int) -> None:
    base = root / DOMAIN
    for i in range(count):
        d = base / f"d{i // 1000:03d}"
        if i % 1000 == 0:
            d.mkdir(parents=True)
        (d / f"f{i:06d}").write_bytes(os.urandom(size))


def one_run(root: Path, run_id: str, isolation: str) -> float:
    cmd = [sys.executable, "-m", "catalytic", "run", "-q", "--run-id", run_id, "--isolation", isolation]
    cmd += ["--catalytic-domains", DOMAIN, "--", "true"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=root, check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default="10k,100k")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--modes", default="none,overlay,rollback")
    args = parser.parse_args()
    print("| case | mode | best s | ratio to none |")
    print("|---|---|---|---|")
    for case in args.cases.split(","):
        count, size = CASES[case]
        tmp = Path(tempfile.mkdtemp(prefix=f"catalytic-bench-{case}-"))
        try:
            build(tmp, count, size)
            n = 0
            results: dict[str, float] = {}
            for mode in args.modes.split(","):
                if mode == "rollback":
                    n += 1
                    results["rollback (cold)"] = one_run(tmp, f"b{n}", mode)
                    mode_label = "rollback (warm)"
                else:
                    mode_label = mode
                times = []
                for _ in range(args.repeat):
                    n += 1
                    times.append(one_run(tmp, f"b{n}", mode))
                results[mode_label] = min(times)
            base = results["none"]
            for label, t in results.items():
                print(f"| {case} | {label} | {t:.3f} | {t / base:.2f}x |", flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
