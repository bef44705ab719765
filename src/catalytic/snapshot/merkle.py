"""The Merkle root of a domain: one hash that commits to every entry of its manifest.

Definition (``catalytic.merkle/1``), with ``H`` the run's hash algorithm (sha256 or blake3):

* every manifest entry, in manifest order (byte order of the path), is one leaf; its data is
  ``path || 0x00 || value || 0x00 || mode`` (UTF-8 with surrogateescape, so the raw bytes of the name;
  ``mode`` is the four octal digits of the MODES document, empty for symlinks). Files, directories,
  symlinks and special files are all leaves, and the path is part of the leaf, so two files with the same
  content are two different leaves;
* the tree over the leaves is the one of RFC 6962 (Certificate Transparency) section 2.1:
  ``leaf = H(0x00 || data)``, ``node = H(0x01 || left || right)``, split at the largest power of two
  smaller than the number of leaves; the root of an empty domain is ``H()`` (the hash of no bytes).

The root is the lowercase hex digest. It is computed while the snapshot streams, with O(log n) memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast

from catalytic.snapshot.digest import Hasher, hasher_factory
from catalytic.snapshot.entry import Entry

MERKLE_FORMAT = "catalytic.merkle/1"


class MerkleBuilder:
    """Adds leaves one by one; :meth:`root` gives the RFC 6962 tree hash of those seen so far."""

    def __init__(self, algorithm: str) -> None:
        # hashlib.sha256 and blake3.blake3 both take the data as their first argument.
        self._new = cast(Callable[[bytes], Hasher], hasher_factory(algorithm))
        # Perfect subtrees, largest first: (number of leaves, hash).
        self._stack: list[tuple[int, bytes]] = []

    def _hash(self, data: bytes) -> bytes:
        return self._new(data).digest()

    def add(self, path: str, value: str, mode: str | None) -> None:
        data = f"\0{path}\0{value}\0{mode or ''}".encode("utf-8", "surrogateescape")
        node = (1, self._new(data).digest())
        stack = self._stack
        while stack and stack[-1][0] == node[0]:
            size, left = stack.pop()
            node = (size * 2, self._hash(b"\x01" + left + node[1]))
        stack.append(node)

    def add_entry(self, entry: Entry) -> None:
        self.add(entry.path, entry.value, entry.mode)

    def root(self) -> str:
        if not self._stack:
            return self._hash(b"").hex()
        right = self._stack[-1][1]
        for _size, left in reversed(self._stack[:-1]):
            right = self._hash(b"\x01" + left + right)
        return right.hex()


def merkle_root(entries: Iterable[Entry], algorithm: str) -> str:
    """The Merkle root of a sorted stream of entries."""
    builder = MerkleBuilder(algorithm)
    for entry in entries:
        builder.add_entry(entry)
    return builder.root()


def manifest_root(manifest: dict[str, str], modes: dict[str, str] | None, algorithm: str) -> str:
    """The Merkle root of one domain's MANIFEST and MODES objects (as read back from a ledger)."""
    from catalytic.paths import sort_key

    modes = modes or {}
    builder = MerkleBuilder(algorithm)
    for path in sorted(manifest, key=sort_key):
        builder.add(path, manifest[path], modes.get(path))
    return builder.root()
