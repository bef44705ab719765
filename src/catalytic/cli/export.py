"""``catalytic export RUN_ID --format in-toto --output FILE``: a run ledger as supply-chain metadata."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from catalytic.cli.locate import add_location, ledger_dir
from catalytic.cli.output import print_json


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``catalytic export``."""
    p = subparsers.add_parser(
        "export",
        help="export a run ledger as an in-toto link",
        description="Write the run as an in-toto link: materials = pre-manifest files, products = "
        "post-manifest files and durable outputs, byproducts = return value, command = argv. "
        "Needs the 'in-toto' package (pip install 'catalytic[intoto]').",
    )
    p.add_argument("run", metavar="RUN_ID", help="a run id in the runs root, or a ledger directory")
    p.add_argument("--format", choices=("in-toto",), default="in-toto", help="export format")
    p.add_argument("--output", "-o", required=True, metavar="FILE", help="where to write the link")
    p.add_argument("--sign-key", metavar="PREFIX", help="sign the link with this Ed25519 private key")
    p.add_argument("--name", default="catalytic-run", help="the in-toto step name (default catalytic-run)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    add_location(p)
    p.set_defaults(execute=execute_cli)


def execute_cli(args: argparse.Namespace) -> int:
    """Export the ledger; return 0."""
    from catalytic.integrations.intoto import export_link

    directory = ledger_dir(args, args.run)
    keyid = export_link(directory, Path(args.output), key_path=args.sign_key, name=args.name)
    if args.json:
        print_json({"ledger": str(directory), "output": args.output, "keyid": keyid or None})
    else:
        signed = f", signed by {keyid[:16]}..." if keyid else ", unsigned"
        sys.stdout.write(f"in-toto link {args.output} (step {args.name!r}{signed})\n")
    return 0
