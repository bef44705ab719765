"""Hash algorithms by name: an explicit registry, optional ones imported only when asked for."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from catalytic.errors import UsageError

HashName = Literal["sha256", "blake3"]
DEFAULT_HASH: HashName = "sha256"


class Hasher(Protocol):
    """The part of the hashlib interface catalytic uses."""

    def update(self, data: bytes, /) -> object: ...

    def hexdigest(self) -> str: ...

    def digest(self) -> bytes: ...


class HasherFactory(Protocol):
    """A constructor of fresh hashers, optionally fed their first bytes (``hashlib.sha256(data)``)."""

    def __call__(self, data: bytes = b"", /) -> Hasher: ...


def _blake3() -> HasherFactory:
    try:
        from blake3 import blake3
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UsageError(
            f"--hash blake3 needs the 'blake3' package: {ALGORITHMS['blake3'].install}",
            code="MISSING_DEPENDENCY",
        ) from exc
    factory: HasherFactory = blake3
    return factory


@dataclass(frozen=True)
class Algorithm:
    """A hash algorithm catalytic can record: its digest's length in hex digits, how to load it, and what to
    install when it is missing (empty: the standard library has it)."""

    name: HashName
    hex_length: int
    load: Callable[[], HasherFactory]
    install: str = ""


#: The one registry of hash algorithms: the schemas' digest patterns, the ledger's value grammar and the
#: validator's digest lengths are derived from it or tested against it.
ALGORITHMS: dict[str, Algorithm] = {
    "sha256": Algorithm("sha256", 64, lambda: hashlib.sha256),
    "blake3": Algorithm("blake3", 64, _blake3, "pip install 'catalytic[blake3]'"),
}
HASH_NAMES: tuple[HashName, ...] = tuple(a.name for a in ALGORITHMS.values())
#: The lengths a file's digest can have, in hex digits.
HEX_LENGTHS = frozenset(a.hex_length for a in ALGORITHMS.values())
#: A regular expression matching a digest of any registered algorithm.
DIGEST_PATTERN = "|".join(f"[0-9a-f]{{{n}}}" for n in sorted(HEX_LENGTHS))


def hasher_factory(name: str) -> HasherFactory:
    """The constructor of fresh hashers for the algorithm ``name`` (called with no argument, or with the
    first bytes to hash)."""
    try:
        loader = ALGORITHMS[name].load
    except KeyError:
        raise UsageError(
            f"unknown hash algorithm {name!r} (choose from {', '.join(HASH_NAMES)})",
            code="BAD_HASH",
        ) from None
    return loader()
