"""Run the full adversarial suite (tests/adversarial) and print its report.

    .venv/bin/python benchmarks/adversarial.py            # full sizes: >10,000 validator cases
    .venv/bin/python benchmarks/adversarial.py --quick    # the CI sample

Prints cases per category, false "restored" verdicts and tracebacks (both must be 0); exits non-zero
when a test failed or either count is not 0. See docs/adversarial.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the CI sizes instead of the full ones")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (e.g. -k validator)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        env = {**os.environ, "CATALYTIC_ADVERSARIAL_REPORT": str(report_path)}
        if not args.quick:
            env["CATALYTIC_ADVERSARIAL"] = "full"
        start = time.perf_counter()
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/adversarial"]
        proc = subprocess.run(
            [*command, *args.pytest_args],
            cwd=ROOT,
            env=env,
            check=False,
        )
        elapsed = time.perf_counter() - start
        if not report_path.exists():
            print("adversarial: no report was written (did every test fail to start?)", file=sys.stderr)
            return proc.returncode or 1
        data = json.loads(report_path.read_text())
    cases: dict[str, int] = data["cases"]
    validator = sum(n for k, n in cases.items() if k.startswith("validator:"))
    print()
    print(f"adversarial suite ({'quick' if args.quick else 'full'}), {elapsed:.0f} s")
    for name, count in cases.items():
        print(f"  {name:<28}{count:>8}")
    print(f"  {'total':<28}{sum(cases.values()):>8}   (validator: {validator} generated ledgers)")
    print(f"false 'restored' verdicts: {data['false_restored']}")
    print(f"tracebacks: {data['tracebacks']}")
    if data["false_restored"] or data["tracebacks"]:
        return 1
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
