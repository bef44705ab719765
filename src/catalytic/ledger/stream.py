"""Read a canonical manifest or MODES file incrementally, checking its exact canonical form on the way.

The four large ledger documents (``PRE_MANIFEST.json``, ``PRE_MODES.json``, ``POST_MANIFEST.json``,
``POST_MODES.json``) are written by catalytic as compact canonical JSON,
``{"<domain>":{"<path>":"<value>",...},...}`` plus a newline (see :mod:`catalytic.ledger.canonical`).
:func:`read_batches` reads such a file in blocks and yields its entries in file order, in batches, while
verifying everything parsing it whole verifies for a file it accepts without a problem: valid UTF-8,
strict JSON, only strings, keys strictly increasing in raw byte order (so no duplicates), every byte equal
to what :func:`~catalytic.ledger.canonical.encode` writes, the trailing newline, and the schema's rule for
each value (manifest value shapes, four octal mode digits).

Anything else raises :class:`NotStreamable`: the caller then parses the file whole (which reports exactly
what is wrong with it) and, when it is a schema-valid document all the same, cuts it into the same batches
with :func:`document_batches`, so one set of rules reads both. Memory is one block plus one batch,
whatever the file size.
"""

from __future__ import annotations

import codecs
import json.decoder
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from operator import lt
from typing import Literal

from catalytic.ledger.canonical import json_string
from catalytic.paths import sort_key
from catalytic.snapshot.digest import DIGEST_PATTERN, HEX_LENGTHS
from catalytic.snapshot.entry import MODE_PATTERN, OTHER_VALUES

# The C string scanner of the json module (json.decoder re-exports it; the stubs do not say so).
scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]

Kind = Literal["manifest", "modes"]
#: One batch of entries of one domain, in file order: (domain, paths, values).
Batch = tuple[str, list[str], list[str]]

_BLOCK = 1 << 18
#: Text kept back between blocks is one unfinished token; a longer one is not worth streaming.
_MAX_CARRY = 4 << 20

_CONTROL = re.compile("[\x00-\x1f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_VALUE = re.compile(f"{DIGEST_PATTERN}|{OTHER_VALUES}")
_MODE = re.compile(MODE_PATTERN)
_HEX = re.compile("[0-9a-f]*")
_OCTAL = re.compile("[0-7]*")


class NotStreamable(Exception):
    """The file is not exactly in the canonical form the stream reader accepts."""


def _tokens(text: str, final: bool) -> tuple[list[str], list[str], str]:
    """Split ``text`` (which starts outside a string) into complete strings and the text before each.

    Returns (punctuation before each string, the decoded strings, the unconsumed rest).
    """
    if "\\" not in text:
        # No escape anywhere: every quote delimits a string, so a split finds them all at C speed.
        parts = text.split('"')
        k = (len(parts) - 1) // 2
        strings = parts[1 : 2 * k : 2]
        puncts = parts[0 : 2 * k : 2]
        rest = '"'.join(parts[2 * k :])
        if _CONTROL.search(text, 0, len(text) - len(rest)):
            raise NotStreamable("control character")
        return puncts, strings, rest
    puncts = []
    strings = []
    pos = 0
    while (q := text.find('"', pos)) >= 0:
        try:
            value, end = scanstring(text, q + 1, True)
        except ValueError:
            if final:
                raise NotStreamable("bad string") from None
            break  # unfinished: the next block completes it (or it is bad, and is found then)
        raw = text[q:end]
        if "\\" in raw and json_string(value) != raw:
            raise NotStreamable("non-canonical escape")
        if "\\" not in raw and _CONTROL.search(raw):
            raise NotStreamable("control character")
        puncts.append(text[pos:q])
        strings.append(value)
        pos = end
    return puncts, strings, text[pos:]


def _manifest_values(values: list[str]) -> bool:
    """Every value has a shape the manifest schema allows."""
    # Most values are digests: check them as one string, the rest one by one.
    digests = [v for v in values if len(v) in HEX_LENGTHS]
    if not _HEX.fullmatch("".join(digests)):
        return all(map(_VALUE.fullmatch, values))
    if len(digests) == len(values):
        return True
    return all(map(_VALUE.fullmatch, [v for v in values if len(v) not in HEX_LENGTHS]))


def _mode_values(values: list[str]) -> bool:
    """Every value is a MODES value (the common case: four octal digits alone)."""
    if set(map(len, values)) <= {4} and _OCTAL.fullmatch("".join(values)):
        return True
    return all(map(_MODE.fullmatch, values))


def _increasing(keys: list[str], previous: str | None) -> bool:
    """Keys strictly increasing in raw byte order (and after ``previous``)."""
    if not keys:
        return True
    if previous is not None and not sort_key(previous) < sort_key(keys[0]):
        return False
    if _SURROGATE.search("".join(keys)):
        # A lone surrogate stands for one raw byte: compare the bytes, not the code points.
        encoded = [sort_key(k) for k in keys]
        return all(map(lt, encoded, encoded[1:]))
    # Code point order is UTF-8 byte order for everything else.
    return all(map(lt, keys, keys[1:]))


class _Parser:
    """The state machine over (punctuation, string) tokens; yields finished batches."""

    def __init__(self, kind: Kind) -> None:
        self.value_re = _VALUE if kind == "manifest" else _MODE
        self.values_ok = _manifest_values if kind == "manifest" else _mode_values
        # Role of the last string: None (none yet), "D" domain, "K" key, "V" value.
        self.last: str | None = None
        self.domain: str | None = None
        self.pending_key: str | None = None
        self.last_key: str | None = None

    def feed(self, puncts: list[str], strings: list[str]) -> Iterator[Batch]:
        i, n = 0, len(strings)
        keys: list[str] = []
        values: list[str] = []
        while i < n:
            punct = puncts[i]
            if self.pending_key is not None:
                # The key of the previous block's last entry: this block starts with its value.
                if punct != ":" or not self.value_re.fullmatch(strings[i]):
                    raise NotStreamable("bad entry")
                keys.append(self.pending_key)
                values.append(strings[i])
                self.pending_key = None
                self.last = "V"
                i += 1
            elif (self.last == "V" and punct == ",") or (self.last == "D" and punct == ":{"):
                # A run of entries: its punctuation is checked in bulk.
                j = self._run_end(puncts, i, n)
                run_keys = strings[i:j:2]
                run_values = strings[i + 1 : j : 2]
                if not self.values_ok(run_values):
                    raise NotStreamable("bad value")
                if len(run_values) < len(run_keys):
                    self.pending_key = run_keys.pop()
                    self.last = "K"
                else:
                    self.last = "V"
                keys += run_keys
                values += run_values
                i = j
            elif (
                (self.last is None and punct == "{")
                or (self.last == "D" and punct == ":{},")
                or (self.last == "V" and punct == "},")
            ):
                if self.domain is not None and not sort_key(self.domain) < sort_key(strings[i]):
                    raise NotStreamable("domains not in order")
                yield from self._flush(keys, values)
                keys, values = [], []
                self.domain = strings[i]
                self.last_key = None
                self.last = "D"
                yield (self.domain, [], [])
                i += 1
            else:
                raise NotStreamable("unexpected punctuation")
        yield from self._flush(keys, values)

    @staticmethod
    def _run_end(puncts: list[str], i: int, n: int) -> int:
        """One past the last string of the run of key/value pairs whose first key is at ``i``."""
        seps = puncts[i + 1 : n : 2]
        commas = puncts[i + 2 : n : 2]
        if seps.count(":") == len(seps) and commas.count(",") == len(commas):
            return n
        for j in range(i + 1, n):
            if (j - i) % 2:
                if puncts[j] != ":":
                    raise NotStreamable("a key without its value")
            elif puncts[j] != ",":
                return j  # the run ends after a value; the caller checks what follows
        return n

    def _flush(self, keys: list[str], values: list[str]) -> Iterator[Batch]:
        if self.domain is None or not keys:
            return
        if not _increasing(keys, self.last_key):
            raise NotStreamable("keys not in order")
        self.last_key = keys[-1]
        yield (self.domain, keys, values)

    def finish(self, rest: str) -> None:
        expected = {None: "{}\n", "D": ":{}}\n", "V": "}}\n"}.get(self.last)
        if self.pending_key is not None or rest != expected:
            raise NotStreamable("bad end of file")


def read_batches(fd: int, kind: Kind, max_bytes: int) -> Iterator[Batch]:
    """Yield the entries of the canonical manifest/MODES file open as ``fd``, in batches.

    Every domain starts with a batch of no entries (so empty domains are seen). Raises
    :class:`NotStreamable` as soon as the file is not exactly canonical and schema-valid.
    """

    def blocks() -> Iterator[bytes]:
        size = 0
        while block := os.read(fd, _BLOCK):
            size += len(block)
            if size > max_bytes:
                raise NotStreamable("too large")
            yield block

    yield from parse_blocks(blocks(), kind)


def parse_blocks(blocks: Iterable[bytes], kind: Kind) -> Iterator[Batch]:
    """:func:`read_batches` for a document given as blocks of bytes (its end is the end of ``blocks``).

    The text is parsed a block at a time: memory follows the size of the blocks, not of the document.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    parser = _Parser(kind)
    rest = ""
    for block in _with_end(blocks):
        final = block is None
        try:
            text = rest + decoder.decode(block or b"", final)
        except UnicodeDecodeError:
            raise NotStreamable("not UTF-8") from None
        puncts, strings, rest = _tokens(text, final)
        yield from parser.feed(puncts, strings)
        if final:
            parser.finish(rest)
            return
        if len(rest) > _MAX_CARRY:
            raise NotStreamable("token too long")


def document_batches(document: Mapping[str, Mapping[str, str]], size: int = 4096) -> Iterator[Batch]:
    """The batches :func:`read_batches` gives for a document already parsed whole (in any order, by hand, by
    another tool, a seed ledger's): domains and paths in byte order, each domain opened by an empty batch,
    at most ``size`` entries a batch. Values are given as they are (the schema checked them)."""
    for domain in sorted(document, key=sort_key):
        entries = document[domain]
        keys = sorted(entries, key=sort_key)
        yield (domain, [], [])
        for start in range(0, len(keys), size):
            chunk = keys[start : start + size]
            yield (domain, chunk, [entries[k] for k in chunk])


def _with_end(blocks: Iterable[bytes]) -> Iterator[bytes | None]:
    yield from blocks
    yield None
