"""Where the parallel snapshot puts a document's text until the ledger is written: a spool per document.

A :class:`Spool` keeps text in memory up to 1 MiB and then in an unnamed temporary file (``O_TMPFILE`` in
the runs root, so a crash leaves nothing behind); :class:`ObjectWriter` writes one JSON object into it, and
its :class:`Span` is copied into the ledger file later, piece by piece.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class Spool:
    """Collects the text of one document, domain after domain: in memory up to 1 MiB, then in an unnamed
    temporary file (``O_TMPFILE`` in the runs root: a crash leaves nothing behind)."""

    LIMIT = 1 << 20

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.fd = -1
        self.size = 0  # bytes written so far, in memory or in the file
        self._on_disk = 0
        self._buffer: list[bytes] = []
        self._buffered = 0

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        self._buffer.append(data)
        self._buffered += len(data)
        self.size += len(data)
        if self._buffered >= self.LIMIT:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        if self.fd < 0:
            self.fd = _unnamed(self.directory)
        data = memoryview(b"".join(self._buffer))
        self._buffer.clear()
        self._buffered = 0
        while data:
            written = os.pwrite(self.fd, data, self._on_disk)
            self._on_disk += written
            data = data[written:]

    def read(self, start: int, end: int) -> Iterator[bytes]:
        """The bytes from ``start`` to ``end``, in pieces."""
        if self.fd < 0:  # still all in memory
            yield b"".join(self._buffer)[start:end]
            return
        self.flush()
        while start < end:
            chunk = os.pread(self.fd, min(end - start, self.LIMIT), start)
            if not chunk:
                raise OSError(f"spool file shorter than expected ({start} < {end})")
            yield chunk
            start += len(chunk)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._buffer.clear()


class MemorySpool(Spool):
    """A spool that never leaves memory (for snapshots whose entries are wanted in memory anyway)."""

    LIMIT = sys.maxsize

    def __init__(self) -> None:
        super().__init__(Path("."))


class Discard(Spool):
    """A spool for documents nobody reads (the pytest plugin keeps only the differences): it counts what is
    written (in characters: the offsets of its spans are never used) and keeps nothing, not even a file."""

    def write(self, text: str) -> None:
        self.size += len(text)

    def read(self, start: int, end: int) -> Iterator[bytes]:
        raise ValueError("the text of a discarded document was not kept")


def _unnamed(directory: Path) -> int:
    """A read-write descriptor of a new file without a name in ``directory``."""
    flag = getattr(os, "O_TMPFILE", 0)
    if flag:
        try:
            return os.open(directory, flag | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError:
            pass  # a file system without O_TMPFILE: a named file, unlinked at once
    import tempfile

    fd, name = tempfile.mkstemp(dir=directory, prefix=".spool.", suffix=".tmp")
    os.unlink(name)
    return fd


@dataclass(frozen=True)
class Span:
    """One domain's document text in a spool."""

    spool: Spool
    start: int
    end: int

    def chunks(self) -> Iterator[bytes]:
        return self.spool.read(self.start, self.end)


class ObjectWriter:
    """Writes one JSON object (``{...}``) of entries into a spool, comma-separated."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.start = spool.size
        self.empty = True
        spool.write("{")

    def add(self, text: str) -> None:
        if not text:
            return
        self.spool.write(text if self.empty else "," + text)
        self.empty = False

    def close(self) -> Span:
        self.spool.write("}")
        return Span(self.spool, self.start, self.spool.size)
