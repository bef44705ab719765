"""The ledger digest: one Merkle root (RFC 6962 shape, sha256) over every file of a run ledger.

Leaf ``i`` is ``name_i || 0x00 || sha256(bytes of file i)`` for the ledger's files sorted by name
(their bytes are canonical JSON, so equal content always gives equal leaves). The tree is the one of
RFC 6962 section 2.1: ``MTH({d}) = sha256(0x00 || d)`` and ``MTH(D) = sha256(0x01 || MTH(D[:k]) ||
MTH(D[k:]))`` with ``k`` the largest power of two below ``len(D)``. ``LEDGER_DIGEST.json`` records the
per-file hashes and the root; ``SIGNATURE.json`` (optional) signs the root. See docs/ledger.md.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TypedDict

from catalytic.errors import LedgerError
from catalytic.threads import each_at_once

DIGEST_FILE = "LEDGER_DIGEST.json"
SIGNATURE_FILE = "SIGNATURE.json"
DIGEST_SCHEMA = "catalytic.digest/1"
#: Ledger files at least this big are hashed in threads (see :func:`file_hashes`).
THREAD_BYTES = 1 << 20
#: Written after the digest, so never part of it.
SEAL_FILES = frozenset({DIGEST_FILE, SIGNATURE_FILE})


class DigestDoc(TypedDict):
    schema_version: str
    algorithm: str
    run_id: str
    files: dict[str, str]
    root: str


def read_regular(path: Path) -> bytes | None:
    """The bytes of ``path`` if it is a regular file (never following a symlink, never blocking on a
    FIFO); ``None`` when it is missing or something else. Ledgers may be hostile: see ledger/reader.py."""
    chunks = _regular_chunks(path)
    return None if chunks is None else b"".join(chunks)


def sha256_of_regular(path: Path) -> str | None:
    """Like :func:`read_regular`, but only the sha256 of the bytes, read in 1 MiB pieces (constant memory)."""
    chunks = _regular_chunks(path)
    if chunks is None:
        return None
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def _regular_chunks(path: Path) -> Iterator[bytes] | None:
    """The bytes of a regular file in pieces, or None (see :func:`read_regular`)."""
    flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK, errno.ENXIO):
            return None
        raise LedgerError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError as exc:
        os.close(fd)
        raise LedgerError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not regular:
        os.close(fd)
        return None
    return _pieces(fd, path)


def _pieces(fd: int, path: Path) -> Iterator[bytes]:
    try:
        while chunk := os.read(fd, 1 << 20):
            yield chunk
    except OSError as exc:
        raise LedgerError(f"cannot read {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def file_hashes(ledger_dir: Path) -> dict[str, str]:
    """sha256 of every top-level regular file of the ledger except the seal files and temp files.

    Files of :data:`THREAD_BYTES` or more (the manifests) are hashed at the same time, one thread each:
    hashlib lets go of the GIL while it hashes a big piece, so they use every core.
    """
    try:
        names = sorted(os.listdir(ledger_dir))
    except OSError as exc:
        raise LedgerError(f"cannot read the ledger {ledger_dir}: {exc.strerror or exc}") from exc
    small: list[str] = []
    big: list[str] = []
    for name in names:
        if name in SEAL_FILES or name.startswith("."):
            continue
        try:
            size = os.lstat(ledger_dir / name).st_size
        except OSError:
            size = 0  # sha256_of_regular says what it is
        (big if size >= THREAD_BYTES else small).append(name)
    found = dict(zip(big, each_at_once(lambda name: sha256_of_regular(ledger_dir / name), big), strict=True))
    found.update((name, sha256_of_regular(ledger_dir / name)) for name in small)
    # Directories (quarantine/), symlinks and special files are not covered.
    return {name: digest for name, digest in sorted(found.items()) if digest is not None}


def _leaf(name: str, file_hash: str) -> bytes:
    return name.encode("utf-8", "surrogateescape") + b"\x00" + bytes.fromhex(file_hash)


def merkle_root(leaves: list[bytes]) -> bytes:
    """The RFC 6962 Merkle tree hash of ``leaves`` (sha256 of the empty string when there are none)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + merkle_root(leaves[:k]) + merkle_root(leaves[k:])).digest()


def root_of(files: Mapping[str, str]) -> str:
    """The ledger digest (hex) of a ``{file name: sha256}`` mapping."""
    return merkle_root([_leaf(name, files[name]) for name in sorted(files)]).hex()


def compute(ledger_dir: Path, run_id: str) -> DigestDoc:
    """The ``LEDGER_DIGEST.json`` document of the ledger as it is on disk now."""
    files = file_hashes(ledger_dir)
    return {
        "schema_version": DIGEST_SCHEMA,
        "algorithm": "sha256",
        "run_id": run_id,
        "files": files,
        "root": root_of(files),
    }


def signing_payload(run_id: str, root: str) -> bytes:
    """The exact bytes an Ed25519 signature of a ledger covers (canonical JSON, domain-separated)."""
    from catalytic.ledger.canonical import encode

    return encode({"_type": "catalytic.ledger-signature/1", "root": root, "run_id": run_id})
