"""The Merkle root of a domain: one hash that commits to every entry of its manifest.

Current definition (``catalytic.merkle/2``), with ``H`` the run's hash algorithm (sha256 or blake3) and
every name, value and mode taken as its raw bytes (UTF-8 with surrogateescape):

* the *record* of an entry is ``name || 0x00 || value || 0x00 || mode || 0x00``, where ``name`` is the
  last segment of its path (``.`` for the domain itself), ``value`` its manifest value and ``mode`` its
  four octal MODES digits (empty for symlinks). Files, directories, symlinks and special files all have
  records, and the name is part of the record, so two files with the same content differ;
* every directory that has at least one entry below it has a *listing hash*
  ``L(D) = H(0x00 || record(c1) || record(c2) || ...)`` over its direct children in byte order of their
  names;
* the *directory hash* is ``H(0x01 || path(D1) || 0x00 || L(D1) || path(D2) || 0x00 || L(D2) ...)`` over those
  directories in post-order of the manifest: a directory comes right after the last entry below it, so
  deeper directories first (``path`` is the domain-relative path, ``.`` for the domain itself);
* the root is ``H(0x02 || record(.) || directory hash)``; a domain that does not exist has the root
  ``H()`` (the hash of no bytes).

Each directory is hashed on its own (the parallel snapshot hashes listings in its worker processes), and a
reader recomputes the root from a sorted manifest in one pass with memory for one path of directories.

Ledgers written before (``catalytic.merkle/1``) used the RFC 6962 tree over one leaf per entry; those roots
are still checked with :class:`FlatMerkleBuilder`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast

from catalytic.snapshot.digest import Hasher, hasher_factory
from catalytic.snapshot.entry import Entry

MERKLE_FORMAT = "catalytic.merkle/2"
MERKLE_FORMAT_V1 = "catalytic.merkle/1"
MERKLE_FORMATS = (MERKLE_FORMAT_V1, MERKLE_FORMAT)

_ENC = "utf-8"
_ERR = "surrogateescape"


def record(name: str, value: str, mode: str | None) -> bytes:
    """The record of one entry (see the module docstring)."""
    return f"{name}\0{value}\0{mode or ''}\0".encode(_ENC, _ERR)


def listing_record(path: str, listing: bytes) -> bytes:
    """What a finished directory adds to the hash of all directories: its path and its ``L(D)``."""
    return path.encode(_ENC, _ERR) + b"\0" + listing


def listing_hasher(new: Callable[[], Hasher]) -> Hasher:
    """A hasher of ``L(D)`` (see the module docstring) waiting for a directory's records, in order."""
    hasher = new()
    hasher.update(b"\x00")
    return hasher


class MerkleBuilder:
    """The ``catalytic.merkle/2`` root of entries added in manifest order (byte order of the path)."""

    def __init__(self, algorithm: str) -> None:
        self._factory = hasher_factory(algorithm)
        self._new = cast(Callable[[bytes], Hasher], self._factory)
        self._dirs = self._new(b"\x01")
        self._top: bytes | None = None
        self._listed = False
        # The open directories, outermost first: (path, listing hasher).
        self._stack: list[tuple[str, Hasher]] = []

    def add(self, path: str, value: str, mode: str | None) -> None:
        if path == ".":
            self._top = record(".", value, mode)
            return
        parent, _, name = path.rpartition("/")
        parent = parent or "."
        stack = self._stack
        while stack and not _contains(stack[-1][0], parent):
            self._close()
        if not stack or stack[-1][0] != parent:
            stack.append((parent, listing_hasher(self._factory)))
        stack[-1][1].update(record(name, value, mode))

    def add_entry(self, entry: Entry) -> None:
        self.add(entry.path, entry.value, entry.mode)

    def add_listing(self, path: str, listing: bytes) -> None:
        """Add a finished directory (its path and ``L(D)``), in post-order (the parallel snapshot)."""
        self.add_listings(listing_record(path, listing))

    def add_listings(self, records: bytes) -> None:
        """Add finished directories as :func:`listing_record` bytes, in post-order (a whole subtree)."""
        self._listed = True
        self._dirs.update(records)

    def set_top(self, value: str, mode: str | None) -> None:
        self._top = record(".", value, mode)

    def _close(self) -> None:
        path, hasher = self._stack.pop()
        self.add_listing(path, hasher.digest())

    def root(self) -> str:
        empty = not self._stack and not self._listed
        while self._stack:
            self._close()
        if self._top is None and empty:
            return self._new(b"").hexdigest()
        # A manifest without its ``.`` entry (never written by catalytic) still commits to its entries.
        return self._new(b"\x02" + (self._top or b"") + self._dirs.digest()).hexdigest()


def _contains(directory: str, path: str) -> bool:
    """True when ``path`` is ``directory`` or below it."""
    return directory in (".", path) or path.startswith(directory + "/")


class FlatMerkleBuilder:
    """``catalytic.merkle/1``: the RFC 6962 tree over one leaf per entry (older ledgers)."""

    def __init__(self, algorithm: str) -> None:
        # hashlib.sha256 and blake3.blake3 both take the data as their first argument.
        self._new = cast(Callable[[bytes], Hasher], hasher_factory(algorithm))
        # Perfect subtrees, largest first: (number of leaves, hash).
        self._stack: list[tuple[int, bytes]] = []

    def _hash(self, data: bytes) -> bytes:
        return self._new(data).digest()

    def add(self, path: str, value: str, mode: str | None) -> None:
        data = f"\0{path}\0{value}\0{mode or ''}".encode(_ENC, _ERR)
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


def builder(algorithm: str, fmt: str = MERKLE_FORMAT) -> MerkleBuilder | FlatMerkleBuilder:
    """A builder for the Merkle format ``fmt``."""
    return FlatMerkleBuilder(algorithm) if fmt == MERKLE_FORMAT_V1 else MerkleBuilder(algorithm)


def merkle_root(entries: Iterable[Entry], algorithm: str, fmt: str = MERKLE_FORMAT) -> str:
    """The Merkle root of a sorted stream of entries."""
    b = builder(algorithm, fmt)
    for entry in entries:
        b.add_entry(entry)
    return b.root()


def manifest_root(
    manifest: dict[str, str], modes: dict[str, str] | None, algorithm: str, fmt: str = MERKLE_FORMAT
) -> str:
    """The Merkle root of one domain's MANIFEST and MODES objects (as read back from a ledger)."""
    from catalytic.paths import sort_key

    modes = modes or {}
    b = builder(algorithm, fmt)
    for path in sorted(manifest, key=sort_key):
        b.add(path, manifest[path], modes.get(path))
    return b.root()
