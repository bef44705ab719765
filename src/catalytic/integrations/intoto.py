"""Export a run ledger as an in-toto link (needs the ``in-toto`` package, imported lazily).

The link records the run as an in-toto step: materials are the regular files of the pre-run
manifest, products the regular files of the post-run manifest plus the durable outputs, byproducts the
command's return value (and the run's status and ledger digest), command the argv. Paths are relative
to the workspace root. Signed with a catalytic Ed25519 key, the link verifies with in-toto's own
``Metablock.verify_signature`` and ``in-toto-verify`` under the same key id.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from catalytic import paths
from catalytic.errors import EXIT_USAGE, CatalyticError
from catalytic.ledger import format as fmt
from catalytic.ledger.canonical import write_output
from catalytic.ledger.digest import DIGEST_FILE

INSTALL_HINT = "in-toto export needs the 'in-toto' package: pip install 'catalytic[intoto]'"
DEFAULT_STEP = "catalytic-run"
_HEX = re.compile("[0-9a-f]{32,128}")


class ExportError(CatalyticError):
    """A ledger cannot be exported."""

    code = "EXPORT"
    exit_code = EXIT_USAGE


def _read(ledger_dir: Path, name: str, *, check: bool = True) -> Any:
    """A document of the ledger, strictly parsed and (with ``check``) held to its schema."""
    from catalytic.ledger.reader import open_dir, read_document

    try:
        dir_fd = open_dir(ledger_dir)
    except OSError as exc:
        raise ExportError(f"cannot open {ledger_dir}: {exc.strerror or exc}", code="INCOMPLETE") from exc
    try:
        schema = "ledger_digest.schema.json" if name == DIGEST_FILE else None
        document = read_document(dir_fd, name, schema=schema, check=check)
    finally:
        os.close(dir_fd)
    if document is None:
        raise ExportError(
            f"{ledger_dir} has no regular file {name}: not a complete ledger", code="INCOMPLETE"
        )
    return document


def _artifacts(manifest: Any, algorithm: str) -> dict[str, dict[str, str]]:
    artifacts: dict[str, dict[str, str]] = {}
    if not isinstance(manifest, dict):
        return artifacts
    for domain, entries in manifest.items():
        if not isinstance(entries, dict):
            continue
        for rel, value in entries.items():
            # Only regular files have a content digest; directories, links and devices are in the ledger.
            if isinstance(value, str) and _HEX.fullmatch(value):
                artifacts[paths.join(domain, rel)] = {algorithm: value}
    return artifacts


def link_fields(ledger_dir: Path, name: str = DEFAULT_STEP) -> dict[str, Any]:
    """The in-toto link's fields for the ledger at ``ledger_dir``."""
    run_info = _read(ledger_dir, fmt.RUN_INFO)
    status = _read(ledger_dir, fmt.STATUS)
    algorithm = str(run_info.get("hash_algorithm", "sha256"))
    # The manifests are read whole but not schema-checked (slow for large ones): _artifacts takes any shape.
    materials = _artifacts(_read(ledger_dir, fmt.PRE_MANIFEST, check=False), algorithm)
    products = _artifacts(_read(ledger_dir, fmt.POST_MANIFEST, check=False), algorithm)
    for record in _read(ledger_dir, fmt.OUTPUTS):
        if isinstance(record, dict) and record.get("type") == "file" and "sha256" in record:
            products[str(record["path"])] = {"sha256": str(record["sha256"])}
    digest_root = None
    if (ledger_dir / DIGEST_FILE).exists():
        digest_root = _read(ledger_dir, DIGEST_FILE).get("root")
    exit_code = run_info.get("exit_code")
    return {
        "name": name,
        "command": [str(a) for a in run_info.get("command", [])],
        "materials": materials,
        "products": products,
        "byproducts": {
            "return-value": exit_code if isinstance(exit_code, int) else -1,
            "stdout": "",
            "stderr": "",
            "catalytic": {
                "run_id": run_info.get("run_id"),
                "status": status.get("status"),
                "restoration_verified": status.get("restoration_verified"),
                "ledger_digest": digest_root,
                "intent": run_info.get("intent"),
            },
        },
        "environment": {"workdir": str(run_info.get("cwd", ""))},
    }


def export_link(
    ledger_dir: Path, output: Path, *, key_path: str | None = None, name: str = DEFAULT_STEP
) -> str:
    """Write the (optionally signed) in-toto link of a ledger to ``output``; returns the key id or ''."""
    try:
        from in_toto.models.link import Link
        from in_toto.models.metadata import Metablock
    except ImportError as exc:
        raise ExportError(INSTALL_HINT, code="MISSING_DEPENDENCY") from exc
    fields = link_fields(ledger_dir, name)
    try:
        metablock = Metablock(signed=Link(**fields))
    except Exception as exc:  # in-toto raises securesystemslib FormatError on bad fields
        raise ExportError(f"in-toto rejects the link: {exc}") from exc
    keyid = ""
    if key_path is not None:
        from catalytic.integrations.signing import load_signing_key

        key = load_signing_key(key_path)
        keyid = key.public.keyid
        # What securesystemslib's CryptoSigner does for Ed25519: sign the link's canonical bytes.
        signature = key.sign(metablock.signed.signable_bytes)
        metablock.signatures.append({"keyid": keyid, "sig": signature.hex()})
    text = json.dumps(metablock.to_dict(), sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    write_output(output, text.encode("utf-8"))
    return keyid
