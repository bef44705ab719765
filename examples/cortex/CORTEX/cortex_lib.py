"""The cortex build: index the markdown notes under ``docs/`` into ``cortex.json`` and ``cortex.db``.

Shared by ``cortex.build.py`` (the clean build) and ``cortex_leaky.build.py`` (a build that breaks its
contract on purpose). Standard library only. Paths are relative to the current working directory, which
is the example's root when the build is run as ``python CORTEX/cortex.build.py``.

The build uses ``CORTEX/_generated/_tmp/`` as real scratch space: one intermediate JSON file per
document, read back to assemble the index. The directory is a catalytic domain, so the build removes
exactly the files it created there and nothing else: files that were already there are never opened
for writing (names are taken with exclusive creation), and if the directory did not exist the build
creates it and removes it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

DOCS_DIR = Path("docs")
GENERATED_DIR = Path("CORTEX/_generated")
SCRATCH_DIR = GENERATED_DIR / "_tmp"
JSON_OUTPUT = GENERATED_DIR / "cortex.json"
DB_OUTPUT = GENERATED_DIR / "cortex.db"

#: Version of the shape of ``cortex.json``; bump it when the shape changes.
SCHEMA = "cortex.index/1"

# ATX headings only ("## Title", optional closing hashes). Setext headings are rare in these notes.
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")

_DB_SCHEMA = """
CREATE TABLE documents (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    words INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE TABLE headings (
    document_id INTEGER NOT NULL REFERENCES documents(id),
    level INTEGER NOT NULL,
    text TEXT NOT NULL,
    line INTEGER NOT NULL
);
"""


class Heading(TypedDict):
    """One heading of a document; ``line`` is 1-based."""

    level: int
    text: str
    line: int


class Document(TypedDict):
    """One document's entry in ``cortex.json``."""

    path: str
    title: str
    headings: list[Heading]
    words: int
    sha256: str


class Index(TypedDict):
    """The whole of ``cortex.json``."""

    schema: str
    documents: list[Document]
    totals: dict[str, int]


@dataclass(frozen=True)
class Summary:
    """What one build produced, for the one-line report."""

    documents: int
    headings: int
    words: int

    def line(self) -> str:
        """The build's one-line summary."""
        return (
            f"cortex: indexed {self.documents} documents, {self.headings} headings, {self.words} words "
            f"-> {JSON_OUTPUT.as_posix()}, {DB_OUTPUT.as_posix()}"
        )


def parse_headings(text: str) -> list[Heading]:
    """The ATX headings of a markdown text, skipping fenced code blocks (a ``# comment`` in a shell
    snippet is not a heading)."""
    headings: list[Heading] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        fence_match = _FENCE.match(line)
        if fence_match:
            marker = fence_match.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
            continue
        if fence is not None:
            continue
        match = _HEADING.match(line)
        if match:
            headings.append({"level": len(match.group(1)), "text": match.group(2).strip(), "line": number})
    return headings


def describe(path: Path, data: bytes) -> Document:
    """The index entry for one document, from its bytes (hashed as stored on disk)."""
    text = data.decode("utf-8")
    headings = parse_headings(text)
    top = [h for h in headings if h["level"] == 1]
    title = (top or headings)[0]["text"] if headings else path.stem
    return {
        "path": path.as_posix(),
        "title": title,
        "headings": headings,
        "words": len(text.split()),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def find_documents(docs_dir: Path = DOCS_DIR) -> list[Path]:
    """Every markdown file under ``docs_dir``, in a fixed order (by POSIX path) so builds reproduce."""
    return sorted((p for p in docs_dir.rglob("*.md") if p.is_file()), key=lambda p: p.as_posix())


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant white space, UTF-8, one trailing newline: same value, same bytes."""
    return (json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


class Scratch:
    """Files this build created in the scratch directory, so it can remove exactly those."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.created: list[Path] = []

    def write_json(self, value: Any) -> Path:
        """Write ``value`` to the next free ``index_temp_NNN.json`` and return its path.

        Exclusive creation means a file that was in the directory before the build is never
        overwritten: its name is skipped.
        """
        number = len(self.created) + 1
        while True:
            path = self.directory / f"index_temp_{number:03d}.json"
            try:
                with path.open("xb") as fh:
                    fh.write(canonical_json(value))
            except FileExistsError:
                number += 1
                continue
            self.created.append(path)
            return path


@contextmanager
def scratch_space(directory: Path = SCRATCH_DIR, *, leak: bool = False) -> Iterator[Scratch]:
    """Scratch space in ``directory``, left as it was found when the block ends (even on error).

    ``leak=True`` forgets to remove the first file created: it exists only to show what a run that
    breaks its contract looks like.
    """
    created_dir = not directory.exists()
    if created_dir:
        directory.mkdir(parents=False)
    scratch = Scratch(directory)
    try:
        yield scratch
    finally:
        forgotten = scratch.created[:1] if leak else []
        for path in scratch.created:
            if path not in forgotten:
                path.unlink()
        if created_dir and not forgotten:
            directory.rmdir()


def _atomic_target(final: Path) -> Path:
    # Temporary names sit next to the final file (same file system, so os.replace is atomic), never
    # in the scratch directory, whose contents are checked after the run. A name of our own (not
    # mkstemp's) keeps the usual umask-based permissions; one left by a crashed build is stale.
    temp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)
    return temp


def write_json_atomic(final: Path, value: Any) -> None:
    """Write ``value`` as canonical JSON to ``final`` atomically (temp file, fsync, rename)."""
    temp = _atomic_target(final)
    try:
        with temp.open("xb") as fh:
            fh.write(canonical_json(value))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_db_atomic(final: Path, index: Index) -> None:
    """Write ``index`` as a SQLite database to ``final`` atomically.

    A fresh file filled with the same statements in the same order gives the same bytes on every
    build with the same SQLite library.
    """
    temp = _atomic_target(final)
    try:
        # closing() closes the connection; the connection's own context manager commits the inserts.
        with closing(sqlite3.connect(temp)) as db, db:
            db.executescript(_DB_SCHEMA)
            for doc_id, doc in enumerate(index["documents"], start=1):
                db.execute(
                    "INSERT INTO documents (id, path, title, words, sha256) VALUES (?, ?, ?, ?, ?)",
                    (doc_id, doc["path"], doc["title"], doc["words"], doc["sha256"]),
                )
                db.executemany(
                    "INSERT INTO headings (document_id, level, text, line) VALUES (?, ?, ?, ?)",
                    [(doc_id, h["level"], h["text"], h["line"]) for h in doc["headings"]],
                )
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def build(*, leak: bool = False) -> Summary:
    """Index ``docs/`` into ``cortex.json`` and ``cortex.db``, using the scratch directory on the way.

    ``leak=True`` leaves one intermediate file behind in the scratch directory (see
    :func:`scratch_space`).
    """
    GENERATED_DIR.mkdir(parents=True, exist_ok=True)
    documents: list[Document] = []
    with scratch_space(leak=leak) as scratch:
        # One intermediate record per document, then assemble from disk: the shape of a build whose
        # working set is too large to keep in memory.
        records = [scratch.write_json(describe(path, path.read_bytes())) for path in find_documents()]
        for record in records:
            documents.append(json.loads(record.read_bytes()))
    index: Index = {
        "schema": SCHEMA,
        "documents": documents,
        "totals": {
            "documents": len(documents),
            "headings": sum(len(d["headings"]) for d in documents),
            "words": sum(d["words"] for d in documents),
        },
    }
    write_json_atomic(JSON_OUTPUT, index)
    write_db_atomic(DB_OUTPUT, index)
    totals = index["totals"]
    return Summary(documents=totals["documents"], headings=totals["headings"], words=totals["words"])
