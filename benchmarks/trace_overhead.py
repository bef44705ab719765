"""Overhead of write tracing: a command that creates and deletes 10k files, traced vs untraced.

Usage: ``.venv/bin/python benchmarks/trace_overhead.py [--files 10000] [--repeat 5]``. Prints the
median wall time of the whole ``catalytic run`` (all five phases) and of the execute phase alone,
untraced and with each available backend, and the traced/untraced ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from catalytic.api import run
from catalytic.errors import TraceUnavailable
from catalytic.trace import BACKENDS, TraceScope

CHURN = """\
import os
os.makedirs('scratch/tmp', exist_ok=True)
names = [f'scratch/tmp/f{i}' for i in range({n})]
for name in names:
    with open(name, 'w') as fh:
        fh.write('x')
for name in names:
    os.unlink(name)
os.rmdir('scratch/tmp')
"""


def available(backend: str, root: Path) -> bool:
    try:
        tracer = BACKENDS[backend]()
        tracer.start(TraceScope(root, "domains", (".",)))
    except TraceUnavailable:
        return False
    tracer.stop()
    return True


def measure(root: Path, backend: str | None, files: int, repeat: int) -> tuple[float, float, int, bool]:
    totals: list[float] = []
    executes: list[float] = []
    events, complete = 0, True
    for i in range(repeat):
        run_id = f"{backend or 'untraced'}-{i}"
        start = time.perf_counter()
        result = run(
            [sys.executable, "churn.py"],
            root=root,
            run_id=run_id,
            catalytic_domains=["scratch"],
            trace=backend is not None,
            trace_backend=backend,
        )
        totals.append(time.perf_counter() - start)
        executes.append(result.timings["execute"])
        assert result.restored, result.summary()
        if result.trace is not None:
            events, complete = len(result.trace.events), complete and result.trace.complete
    return statistics.median(totals), statistics.median(executes), events, complete


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "scratch").mkdir()
        (root / "churn.py").write_text(CHURN.replace("{n}", str(args.files)))
        import os

        os.chdir(root)
        base_total, base_exec, _, _ = measure(root, None, args.files, args.repeat)
        print(f"{args.files} files created+deleted, median of {args.repeat} runs")
        print(f"{'mode':<12}{'whole run':>12}{'ratio':>8}{'execute':>12}{'ratio':>8}{'events':>9}  complete")
        print(f"{'untraced':<12}{base_total:>11.3f}s{1:>8.2f}{base_exec:>11.3f}s{1:>8.2f}{'-':>9}  -")
        for backend in ("fanotify", "watchdog"):
            if not available(backend, root):
                print(f"{backend:<12} unavailable here")
                continue
            total, execute, events, complete = measure(root, backend, args.files, args.repeat)
            print(
                f"{backend:<12}{total:>11.3f}s{total / base_total:>8.2f}{execute:>11.3f}s"
                f"{execute / base_exec:>8.2f}{events:>9}  {complete}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
