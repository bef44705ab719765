"""The naive reference: what the seed's prototype (``TOOLS/catalytic_runtime.py``) does, nothing more or less.

    python benchmarks/naive.py --runs-root RUNS DOMAIN [DOMAIN ...] [-- CMD ...]   # CMD defaults to `true`

Followed from the seed's report (CATALYTIC_IMPLEMENTATION_REPORT.md), phase by phase:

0. validate: every domain is a directory;
1. pre-snapshot: per domain, ``for file in domain.rglob("*")`` keep the files and put
   ``{relative path: hashlib.sha256(file.read_bytes()).hexdigest()}`` in an in-memory dict;
2. run the command with ``subprocess.run`` and keep its exit code;
3. post-snapshot: the same walk again;
4. verify: compare the two dicts file by file (added, removed, changed);
5. record: write the six ledger files RUN_INFO.json, PRE_MANIFEST.json (``{domain: {path: sha256}}``),
   POST_MANIFEST.json, RESTORE_DIFF.json (``{domain: {added, removed, changed}}``), OUTPUTS.json and
   STATUS.json with ``json.dump(..., indent=2)`` into ``<runs root>/<run id>/`` (created here).

It prints the prototype's phase lines and exits 1 when the domains were not restored, like the prototype.
It is a benchmark reference, not a tool: no stat cache, no parallelism, no atomic writes, on purpose.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def snapshot(domain: Path) -> dict[str, str]:
    """``{path relative to the domain: sha256}`` of every regular file under ``domain``."""
    manifest: dict[str, str] = {}
    for file in domain.rglob("*"):
        if file.is_file():
            manifest[str(file.relative_to(domain))] = hashlib.sha256(file.read_bytes()).hexdigest()
    return manifest


def compare(pre: dict[str, str], post: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {
        "added": {p: h for p, h in post.items() if p not in pre},
        "removed": {p: h for p, h in pre.items() if p not in post},
        "changed": {p: {"pre": h, "post": post[p]} for p, h in pre.items() if p in post and post[p] != h},
    }


def write_json(path: Path, document: object) -> None:
    with open(path, "w", encoding="utf-8") as out:
        json.dump(document, out, indent=2)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = ["true"]
    if "--" in args:
        command = args[args.index("--") + 1 :] or command
        args = args[: args.index("--")]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs-root", required=True, type=Path)
    parser.add_argument("--run-id")
    parser.add_argument("--intent", default="benchmark")
    parser.add_argument("domains", nargs="+", type=Path)
    opts = parser.parse_args(args)
    run_id = opts.run_id or datetime.now(UTC).strftime("naive-%Y%m%dT%H%M%S%fZ")

    for domain in opts.domains:
        if not domain.is_dir():
            print(f"[catalytic] ERROR: catalytic domain is not a directory: {domain}", file=sys.stderr)
            return 2
    print("[catalytic] Phase 1: Capturing pre-snapshots...")
    pre = {str(domain): snapshot(domain) for domain in opts.domains}
    for domain, manifest in pre.items():
        print(f"[catalytic] Snapshots pre: {domain} ({len(manifest)} files)")
    print(f"[catalytic] Phase 2: Executing command: {' '.join(command)}")
    exit_code = subprocess.run(command, check=False).returncode
    print(f"[catalytic] Command exited with code {exit_code}")
    print("[catalytic] Phase 3: Capturing post-snapshots...")
    post = {str(domain): snapshot(domain) for domain in opts.domains}
    for domain, manifest in post.items():
        print(f"[catalytic] Snapshots post: {domain} ({len(manifest)} files)")
    print("[catalytic] Phase 4: Verifying restoration...")
    diff = {domain: compare(pre[domain], post[domain]) for domain in pre}
    restored = all(not part for parts in diff.values() for part in parts.values())
    print(
        "[catalytic] SUCCESS: Catalytic domains fully restored"
        if restored
        else "[catalytic] FAILURE: catalytic domains were not restored"
    )
    print("[catalytic] Phase 5: Saving run ledger...")
    run_dir = opts.runs_root / run_id
    run_dir.mkdir(parents=True)
    write_json(
        run_dir / "RUN_INFO.json",
        {
            "run_id": run_id,
            "timestamp": datetime.now(UTC).isoformat(),
            "intent": opts.intent,
            "catalytic_domains": [str(d) for d in opts.domains],
            "durable_output_roots": [],
            "command": command,
            "exit_code": exit_code,
        },
    )
    write_json(run_dir / "PRE_MANIFEST.json", pre)
    write_json(run_dir / "POST_MANIFEST.json", post)
    write_json(run_dir / "RESTORE_DIFF.json", diff)
    write_json(run_dir / "OUTPUTS.json", [])
    write_json(
        run_dir / "STATUS.json",
        {
            "status": "restored" if restored else "dirty",
            "restoration_verified": restored,
            "exit_code": exit_code,
        },
    )
    return 0 if restored and exit_code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
