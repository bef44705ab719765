"""``catalytic show RUN_ID``: a run's status, diff, outputs and write-trace timeline, for humans.

``RUN_ID`` is a run id under the runs root or the path of a ledger directory. ``--json`` prints the
same content as one JSON object. rich is imported only when a human view is printed.
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from catalytic.cli.locate import add_location, finished, runs_root
from catalytic.cli.output import print_json
from catalytic.diff import what_changed
from catalytic.errors import CatalyticError, DocumentError
from catalytic.ledger import format as fmt
from catalytic.ledger.reader import open_dir, read_document

EXIT_NOT_FOUND = 2
DOCUMENTS = (fmt.RUN_INFO, fmt.STATUS, fmt.RESTORE_DIFF, fmt.OUTPUTS, fmt.WRITE_LOG)


class RunNotFound(CatalyticError):
    """No ledger for the run id asked for."""

    code = "NOT_FOUND"
    exit_code = EXIT_NOT_FOUND


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``catalytic show``."""
    p = subparsers.add_parser(
        "show",
        help="show a run: status, diff, outputs and the write-trace timeline",
        description="Print a run's ledger for humans: status, the restoration diff, outputs and, when "
        "the run was traced, the timeline of writes (who wrote what, when).",
    )
    p.add_argument("run", metavar="RUN_ID", help="run id under the runs root, or a ledger directory")
    add_location(p)
    p.add_argument("--limit", type=int, default=200, help="timeline events to print (default 200; 0: all)")
    p.add_argument("--json", action="store_true", help="print the run as JSON on stdout")
    p.set_defaults(execute=execute_cli)


def find_ledger(run: str, base: Path) -> Path:
    """The ledger directory for ``run`` (a path to one, or an id under the runs root ``base``)."""
    candidate = Path(run)
    if (candidate / fmt.RUN_INFO).is_file():
        return finished(candidate)
    if os.sep not in run:
        finished(base / run)  # a run writing it now is said so, not "no run ledger"
        if (base / run / fmt.RUN_INFO).is_file():
            return base / run
    raise RunNotFound(f"no run ledger {run!r} (looked in {base})")


def load_run(ledger: Path) -> dict[str, Any]:
    """The run's documents by file name (missing ones absent); a broken one raises DocumentError."""
    try:
        dir_fd = open_dir(ledger)
    except OSError as exc:
        raise DocumentError(f"cannot open {ledger}: {exc.strerror or exc}", code="BAD_FILE") from exc
    docs: dict[str, Any] = {}
    try:
        for name in DOCUMENTS:
            # Held to its schema, so rendering can rely on every shape (a DocumentError otherwise).
            document = read_document(dir_fd, name)
            if document is not None:
                docs[name] = document
    finally:
        os.close(dir_fd)
    return docs


def execute_cli(args: argparse.Namespace) -> int:
    candidate = Path(args.run)
    # A ledger named by its path needs no workspace (nor a config that can be read).
    base = candidate.parent if (candidate / fmt.RUN_INFO).is_file() else runs_root(args)
    ledger = find_ledger(args.run, base)
    docs = load_run(ledger)
    if args.json:
        print_json(
            {
                "ledger": str(ledger),
                "run_info": docs.get(fmt.RUN_INFO),
                "status": docs.get(fmt.STATUS),
                "restore_diff": docs.get(fmt.RESTORE_DIFF),
                "outputs": docs.get(fmt.OUTPUTS),
                "write_log": docs.get(fmt.WRITE_LOG),
            }
        )
        return 0
    render(ledger, docs, limit=args.limit)
    return 0


def _offset(start: str, stamp: str) -> str:
    try:
        a = datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return f"+{(b - a).total_seconds():.6f}s"


_OP_STYLE = {
    "create": "green",
    "mkdir": "green",
    "modify": "yellow",
    "chmod": "magenta",
    "move": "cyan",
    "delete": "red",
    "rmdir": "red",
}


def render(ledger: Path, docs: dict[str, Any], *, limit: int) -> None:
    """Print the run with rich (colours only on a terminal)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False, markup=False, emoji=False)  # the ledger's text is data, not markup
    info: dict[str, Any] = docs.get(fmt.RUN_INFO) or {}
    status: dict[str, Any] = docs.get(fmt.STATUS) or {}
    state = status.get("status", "incomplete (no STATUS.json)")
    colour = "green" if state == "restored" else "red"
    console.print(Text.assemble(("Run ", "bold"), (str(info.get("run_id", ledger.name)), "bold")))
    console.print(f"  ledger:   {ledger}")
    console.print(Text.assemble("  status:   ", (str(state), f"bold {colour}")))
    if status.get("reason"):
        console.print(f"  reason:   {status['reason']}")
    console.print(f"  command:  {' '.join(map(str, info.get('command', [])))}")
    console.print(f"  exit:     {info.get('exit_code')}   started {info.get('timestamp')}")
    if info.get("intent"):
        console.print(f"  intent:   {info['intent']}")

    diff: dict[str, Any] = docs.get(fmt.RESTORE_DIFF) or {}
    changes = Table(title="Restoration diff", title_justify="left", show_edge=False)
    changes.add_column("change")
    changes.add_column("path")
    changes.add_column("what")
    for domain, kinds in diff.items():
        for kind in ("added", "removed", "changed"):
            for name, record in kinds.get(kind, {}).items():
                path = name if name == "." else f"{domain}/{name}"
                what = what_changed(record) if kind == "changed" else ""
                changes.add_row(Text(kind, style="red"), path, what)
    if changes.row_count:
        console.print(changes)
    else:
        console.print("Restoration diff: none (every domain byte-identical)" if diff else "")

    outputs: list[dict[str, Any]] = docs.get(fmt.OUTPUTS) or []
    if outputs:
        table = Table(title="Durable outputs", title_justify="left", show_edge=False)
        table.add_column("path")
        table.add_column("type")
        table.add_column("sha256")
        for out in outputs:
            table.add_row(str(out.get("path")), str(out.get("type")), str(out.get("sha256", ""))[:16])
        console.print(table)

    log: dict[str, Any] | None = docs.get(fmt.WRITE_LOG)
    if log is None:
        console.print("Write trace: not recorded (run with --trace)")
        return
    events: list[dict[str, Any]] = log.get("events", [])
    verdict = (
        Text("complete", style="green")
        if log.get("complete")
        else Text(f"INCOMPLETE: {log.get('reason')}", style="bold red")
    )
    console.print(
        Text.assemble(
            f"Write trace: {log.get('backend')}, scope {log.get('scope')}, {len(events)} events, ", verdict
        )
    )
    shown = events if limit <= 0 else events[:limit]
    if shown:
        table = Table(show_edge=False)
        table.add_column("time", justify="right")
        table.add_column("op")
        table.add_column("path")
        table.add_column("process")
        start = str(log.get("started_at", ""))
        for event in shown:
            path = str(event.get("path"))
            if event.get("op") == "move":
                path += f" -> {event.get('dest')}"
            who = "" if event.get("pid") is None else f"{event.get('process') or '?'} [{event['pid']}]"
            op = str(event.get("op"))
            table.add_row(
                _offset(start, str(event.get("timestamp"))), Text(op, style=_OP_STYLE.get(op, "")), path, who
            )
        console.print(table)
    if len(shown) < len(events):
        console.print(f"... {len(events) - len(shown)} more events (--limit 0 shows all, --json for all)")
