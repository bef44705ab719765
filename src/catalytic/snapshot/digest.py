"""Hash algorithms by name: an explicit registry, optional ones imported only when asked for."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Literal, Protocol

from catalytic.errors import UsageError

HashName = Literal["sha256", "blake3"]
HASH_NAMES: tuple[HashName, ...] = ("sha256", "blake3")
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
            "--hash blake3 needs the 'blake3' package: pip install 'catalytic[blake3]'",
            code="MISSING_DEPENDENCY",
        ) from exc
    factory: HasherFactory = blake3
    return factory


_FACTORIES: dict[str, Callable[[], HasherFactory]] = {
    "sha256": lambda: hashlib.sha256,
    "blake3": _blake3,
}


def hasher_factory(name: str) -> HasherFactory:
    """The constructor of fresh hashers for the algorithm ``name`` (called with no argument, or with the
    first bytes to hash)."""
    try:
        loader = _FACTORIES[name]
    except KeyError:
        raise UsageError(
            f"unknown hash algorithm {name!r} (choose from {', '.join(HASH_NAMES)})",
            code="BAD_HASH",
        ) from None
    return loader()
