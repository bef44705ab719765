"""Overhead of write tracing: a command that creates and deletes 10k files, traced vs untraced.

Usage: ``.venv/bin/python benchmarks/trace_overhead.py [--files 10000] [--repeat 5]``. Prints the
median wall time of the whole ``catalytic run`` (all five phases) and of the execute phase alone,
untraced and with each available backend, and the traced/untraced ratios.
"""

from __future__ import annotations

import argparse
import resource
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


def cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def once(root: Path, backend: str | None, i: int) -> tuple[float, float, int, bool, float]:
    start, cpu_start = time.perf_counter(), cpu()
    result = run(
        [sys.executable, "churn.py"],
        root=root,
        run_id=f"{backend or 'untraced'}-{i}",
        catalytic_domains=["scratch"],
        trace=backend is not None,
        trace_backend=backend,
    )
    total, used = time.perf_counter() - start, cpu() - cpu_start
    assert result.restored, result.summary()
    trace = result.trace
    events = len(trace.events) if trace else 0
    return total, result.timings["execute"], events, bool(trace and trace.complete), used


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
        modes: list[str | None] = [None]
        modes += [b for b in ("fanotify", "watchdog") if available(b, root)]
        samples: dict[str | None, list[tuple[float, float, int, bool, float]]] = {m: [] for m in modes}
        # Interleaved, so that load from other processes falls on every mode alike, and rotated: the
        # filesystem is still committing the previous run's 10k deletions when the next run starts.
        for i in range(args.repeat):
            for mode in modes[i % len(modes) :] + modes[: i % len(modes)]:
                samples[mode].append(once(root, mode, i))
        base_total = statistics.median(x[0] for x in samples[None])
        base_exec = statistics.median(x[1] for x in samples[None])
        base_cpu = statistics.median(x[4] for x in samples[None])
        print(f"{args.files} files created+deleted, median of {args.repeat} interleaved, rotated runs")
        print(
            f"{'mode':<12}{'whole run':>12}{'ratio':>8}{'execute':>12}{'ratio':>8}"
            f"{'CPU':>10}{'ratio':>8}{'events':>9}  complete"
        )
        for mode in modes:
            total = statistics.median(x[0] for x in samples[mode])
            execute = statistics.median(x[1] for x in samples[mode])
            used = statistics.median(x[4] for x in samples[mode])
            events = samples[mode][-1][2]
            complete = "-" if mode is None else str(all(x[3] for x in samples[mode]))
            print(
                f"{mode or 'untraced':<12}{total:>11.3f}s{total / base_total:>8.2f}{execute:>11.3f}s"
                f"{execute / base_exec:>8.2f}{used:>9.3f}s{used / base_cpu:>8.2f}"
                f"{events if mode else '-':>9}  {complete}"
            )
        for backend in ("fanotify", "watchdog"):
            if backend not in modes:
                print(f"{backend:<12} unavailable here")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
