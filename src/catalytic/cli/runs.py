"""``catalytic runs``: list the runs in the runs root, newest first (a table, or JSON)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from catalytic.cli.locate import add_location, runs_root
from catalytic.cli.output import print_json
from catalytic.errors import UsageError
from catalytic.ledger import format as fmt

_RELATIVE = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class RunRow:
    """One run as ``catalytic runs`` shows it."""

    run_id: str
    timestamp: str | None
    intent: str | None
    status: str
    exit_code: int | None
    duration: float | None
    isolation: str | None


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``catalytic runs``."""
    p = subparsers.add_parser(
        "runs",
        help="list the recorded runs, newest first",
        description="List the runs in the runs root: id, start time, intent, status, exit code, "
        "duration and isolation. A run without STATUS.json is 'incomplete', one whose STATUS.json "
        "cannot be read 'unreadable'; in a runs root with a LEDGER.jsonl chain, a run the chain does not "
        "name is 'unchained' (catalytic did not seal it); a run whose ledger is being written now is "
        "'running'.",
    )
    p.add_argument("--dirty", action="store_true", help="only runs that are not restored")
    p.add_argument(
        "--since",
        metavar="WHEN",
        help="only runs started at or after WHEN: an ISO date/time (UTC unless it says otherwise) "
        "or an age such as 30m, 12h, 7d, 2w",
    )
    p.add_argument("--limit", type=int, metavar="N", help="at most N runs")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    add_location(p)
    p.set_defaults(execute=execute_cli)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: an ISO date/time or an age like ``12h``."""
    match = _RELATIVE.fullmatch(text.strip())
    if match:
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return (now or datetime.now(UTC)) - delta
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r}: expected an ISO date/time or an age like 12h or 7d") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _load(ledger_dir: Path, name: str) -> dict[str, Any] | None:
    """The object in ``name`` ({} when absent, None when unreadable or not an object); like every ledger
    read, strict and safe (no symlink followed, no FIFO waited on, no nesting too deep)."""
    from catalytic.ledger.reader import open_dir, read_ledger_file

    try:
        dir_fd = open_dir(ledger_dir)
    except OSError:
        return None
    try:
        loaded = read_ledger_file(dir_fd, name)
    finally:
        os.close(dir_fd)
    if loaded.problem is not None:
        return {} if loaded.problem.code == "MISSING_FILE" else None
    return loaded.document if isinstance(loaded.document, dict) else None


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def read_row(ledger_dir: Path) -> RunRow:
    """The row of one ledger (tolerates broken or incomplete ledgers: they are listed, not hidden; a
    STATUS.json that cannot be read as an object shows as 'unreadable')."""
    info = _load(ledger_dir, fmt.RUN_INFO) or {}
    status = _load(ledger_dir, fmt.STATUS)
    start, end = _parse_time(info.get("timestamp")), _parse_time(info.get("finished_at"))
    exit_code = info.get("exit_code")
    return RunRow(
        run_id=ledger_dir.name,
        timestamp=info.get("timestamp") if isinstance(info.get("timestamp"), str) else None,
        intent=info.get("intent") if isinstance(info.get("intent"), str) else None,
        status="unreadable" if status is None else str(status.get("status", "incomplete")),
        exit_code=exit_code if isinstance(exit_code, int) else None,
        duration=round((end - start).total_seconds(), 3) if start and end else None,
        isolation=info.get("isolation") if isinstance(info.get("isolation"), str) else None,
    )


def _vouched(row: RunRow, known: dict[str, str] | None) -> RunRow:
    """The row as the runs root's chain vouches for it: a run the chain does not know is 'unchained',
    never 'restored'; one the chain records as dirty is dirty whatever its STATUS.json says."""
    if known is None or row.status == "incomplete":
        return row
    if row.run_id not in known:
        return replace(row, status="unchained")
    if row.status == "restored" and known[row.run_id] != "restored":
        return replace(row, status=known[row.run_id] or "unchained")
    return row


def list_runs(root: Path) -> list[RunRow]:
    """Every run in the runs root ``root``, newest first."""
    from catalytic.ledger.chain import is_run_name, known_runs
    from catalytic.locks import in_progress

    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise UsageError(
            f"runs root {str(root)!r} cannot be read: {exc.strerror}", code="BAD_RUNS_ROOT"
        ) from None
    known = known_runs(root)
    rows = []
    for n in names:
        if not is_run_name(n):
            continue
        if in_progress(root, n):  # its ledger is being written: never read as a finished one
            rows.append(RunRow(n, None, None, "running", None, None, None))
        elif (root / n / fmt.RUN_INFO).is_file():
            rows.append(_vouched(read_row(root / n), known))
    rows.sort(key=lambda r: (r.timestamp or "", r.run_id), reverse=True)
    return rows


def _table(rows: list[RunRow]) -> str:
    header = ("RUN ID", "STARTED (UTC)", "STATUS", "EXIT", "DURATION", "ISOLATION", "INTENT")
    body = [
        (
            r.run_id,
            (r.timestamp or "-")[:19].replace("T", " "),
            r.status,
            "-" if r.exit_code is None else str(r.exit_code),
            "-" if r.duration is None else f"{r.duration:.2f}s",
            r.isolation or "-",
            r.intent or "",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header) - 1)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
        for row in [header, *body]
    ]
    return "\n".join(lines) + "\n"


def execute_cli(args: argparse.Namespace) -> int:
    """Print the runs; return 0."""
    rows = list_runs(runs_root(args))
    if args.dirty:
        rows = [r for r in rows if r.status != "restored"]
    if args.since:
        since = parse_since(args.since)
        rows = [r for r in rows if (t := _parse_time(r.timestamp)) is not None and t >= since]
    if args.limit is not None:
        rows = rows[: max(args.limit, 0)]
    if args.json:
        print_json([asdict(r) for r in rows])
    elif rows:
        sys.stdout.write(_table(rows))
    else:
        sys.stderr.write("no runs\n")
    return 0
