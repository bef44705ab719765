"""``catalytic keygen --output PREFIX``: make an Ed25519 key pair for signing ledgers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from catalytic.cli.output import print_json


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``catalytic keygen``."""
    p = subparsers.add_parser(
        "keygen",
        help="create an Ed25519 key pair for signing ledgers and in-toto links",
        description="Write PREFIX (private key, PKCS#8 PEM, mode 0600) and PREFIX.pub (public key, PEM). "
        "Needs the 'cryptography' package (pip install 'catalytic[sign]').",
    )
    p.add_argument("--output", "-o", required=True, metavar="PREFIX", help="where to write the key pair")
    p.add_argument("--force", action="store_true", help="replace existing key files")
    p.add_argument("--json", action="store_true", help="print the paths and key id as JSON")
    p.set_defaults(execute=execute_cli)


def execute_cli(args: argparse.Namespace) -> int:
    """Generate the key pair; print where it went and its key id."""
    from catalytic.integrations.signing import generate, load_public_key

    private, public = generate(Path(args.output), overwrite=args.force)
    keyid = load_public_key(public).keyid
    if args.json:
        print_json({"private_key": str(private), "public_key": str(public), "keyid": keyid})
    else:
        sys.stdout.write(
            f"private key: {private} (keep it secret)\npublic key:  {public}\nkey id:      {keyid}\n"
        )
    return 0
