"""Ed25519 keys and ledger signatures (needs the ``cryptography`` package, imported lazily).

Key files: ``PREFIX`` holds the private key (PKCS#8 PEM, mode 0600), ``PREFIX.pub`` the public key
(SubjectPublicKeyInfo PEM). A key's id is the one securesystemslib and in-toto compute: sha256 of
the canonical JSON ``{"keytype":"ed25519","keyval":{"public":HEX},"scheme":"ed25519"}``, so a
catalytic key signs in-toto links that ``in-toto`` verifies with the same key id.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from catalytic.errors import EXIT_USAGE, CatalyticError
from catalytic.ledger.canonical import encode

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

INSTALL_HINT = "signing needs the 'cryptography' package: pip install 'catalytic[sign]'"


class KeyFileError(CatalyticError):
    """A key file is missing, unreadable or not an Ed25519 key."""

    code = "BAD_KEY"
    exit_code = EXIT_USAGE


class SignatureDoc(TypedDict):
    schema_version: str
    algorithm: str
    keyid: str
    public_key: str
    signed: str
    signature: str


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise KeyFileError(INSTALL_HINT, code="MISSING_DEPENDENCY") from exc
    return ed25519


def keyid_of(public_hex: str) -> str:
    """securesystemslib's default key id of an Ed25519 public key (hex of its 32 raw bytes)."""
    doc = {"keytype": "ed25519", "keyval": {"public": public_hex}, "scheme": "ed25519"}
    return hashlib.sha256(encode(doc).rstrip(b"\n")).hexdigest()


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 verification key."""

    key: Ed25519PublicKey

    @property
    def hex(self) -> str:
        from cryptography.hazmat.primitives import serialization

        raw = self.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return raw.hex()

    @property
    def keyid(self) -> str:
        return keyid_of(self.hex)

    def verify(self, signature: bytes, payload: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            self.key.verify(signature, payload)
        except InvalidSignature:
            return False
        return True

    def sslib_dict(self) -> dict[str, Any]:
        """The key as securesystemslib / in-toto key metadata (with ``keyid``)."""
        return {
            "keyid": self.keyid,
            "keytype": "ed25519",
            "scheme": "ed25519",
            "keyval": {"public": self.hex},
        }


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key loaded from ``PREFIX``."""

    key: Ed25519PrivateKey
    path: Path

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key())

    def sign(self, payload: bytes) -> bytes:
        return self.key.sign(payload)


def generate(prefix: Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new key pair to ``prefix`` (0600) and ``prefix.pub``; returns both paths."""
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization

    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pub_path = prefix.with_name(prefix.name + ".pub")
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if overwrite else os.O_EXCL)
    for path, data, mode in ((prefix, pem, 0o600), (pub_path, pub, 0o644)):
        try:
            fd = os.open(path, flags, mode)
        except FileExistsError:
            raise KeyFileError(f"{path} already exists (use --force to replace it)") from None
        except OSError as exc:
            raise KeyFileError(f"cannot write {path}: {exc.strerror or exc}") from exc
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    return prefix, pub_path


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key {path}: {exc.strerror or exc}") from exc


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """Load the private key written by :func:`generate` (``PREFIX``)."""
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization

    p = Path(path)
    try:
        key = serialization.load_pem_private_key(_read(p), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{p} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{p} is not an Ed25519 private key")
    return SigningKey(key, p)


def load_public_key(path: str | os.PathLike[str]) -> PublicKey:
    """Load a public key (``PREFIX.pub``); a private key file is accepted too."""
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization

    p = Path(path)
    data = _read(p)
    if b"PRIVATE KEY" in data:
        return load_signing_key(p).public
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{p} is not a PEM public key: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise KeyFileError(f"{p} is not an Ed25519 public key")
    return PublicKey(key)


def sign_ledger(key: SigningKey, run_id: str, root: str) -> SignatureDoc:
    """The ``SIGNATURE.json`` document: an Ed25519 signature of the ledger digest."""
    from catalytic.ledger.digest import signing_payload

    return {
        "schema_version": "catalytic.signature/1",
        "algorithm": "ed25519",
        "keyid": key.public.keyid,
        "public_key": key.public.hex,
        "signed": root,
        "signature": key.sign(signing_payload(run_id, root)).hex(),
    }


def verify_ledger_signature(doc: Any, run_id: str, root: str, trusted: list[PublicKey]) -> str | None:
    """``None`` when ``doc`` is a valid signature of ``root`` by a trusted key, else why not."""
    if not isinstance(doc, dict) or doc.get("algorithm") != "ed25519":
        return "SIGNATURE.json is not an ed25519 signature document"
    if doc.get("signed") != root:
        return "SIGNATURE.json signs a different ledger digest"
    by_id = {k.keyid: k for k in trusted}
    key = by_id.get(str(doc.get("keyid")))
    if key is None:
        return f"signed by key {str(doc.get('keyid'))[:16]}..., which is not a trusted key"
    try:
        signature = bytes.fromhex(str(doc.get("signature")))
    except ValueError:
        return "SIGNATURE.json holds a malformed signature"
    from catalytic.ledger.digest import signing_payload

    if not key.verify(signature, signing_payload(run_id, root)):
        return f"the signature does not verify with trusted key {key.keyid[:16]}..."
    return None
