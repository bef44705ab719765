"""Closed sets live in one registry each; what is written elsewhere (JSON Schemas, the ledger's value
grammar, the validator's digest lengths) is derived from the registry or tested against it here."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from catalytic.ledger import entries, stream
from catalytic.snapshot.digest import ALGORITHMS, DIGEST_PATTERN, HASH_NAMES, HEX_LENGTHS, hasher_factory

SCHEMAS = Path(__file__).resolve().parent.parent / "src" / "catalytic" / "ledger" / "schemas"
# The schemas whose hex patterns describe a file's digest (the others hold sha256 digests of documents,
# keys and signatures, which are not the registry's).
FILE_DIGEST_SCHEMAS = ("manifest.schema.json", "restore_diff.schema.json", "outputs.schema.json")


def _patterns(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return found + [p for value in node.values() for p in _patterns(value)]
    if isinstance(node, list):
        return [p for value in node for p in _patterns(value)]
    return []


@pytest.mark.parametrize("name", FILE_DIGEST_SCHEMAS)
def test_schema_digest_patterns_accept_exactly_the_registered_lengths(name: str) -> None:
    digest_patterns = [
        p for p in _patterns(json.loads((SCHEMAS / name).read_text())) if p.startswith("^[0-9a-f]{")
    ]
    assert digest_patterns, name
    lengths = set(HEX_LENGTHS) | {n - 1 for n in HEX_LENGTHS} | {n + 1 for n in HEX_LENGTHS}
    for pattern in digest_patterns:
        accepted = {n for n in lengths if re.search(pattern, "a" * n)}
        assert accepted == set(HEX_LENGTHS), (name, pattern)


@pytest.mark.parametrize("name", HASH_NAMES)
def test_each_algorithm_gives_digests_of_its_registered_length(name: str) -> None:
    algorithm = ALGORITHMS[name]
    assert len(hasher_factory(name)(b"x").hexdigest()) == algorithm.hex_length
    assert entries.DIGEST_LENGTHS[name] == algorithm.hex_length
    assert re.fullmatch(DIGEST_PATTERN, "0" * algorithm.hex_length)


def test_the_value_grammar_takes_digests_and_every_other_kind() -> None:
    good = ["0" * n for n in HEX_LENGTHS] + [
        "dir",
        "fifo",
        "socket",
        "symlink:x",
        "chardev:1:3",
        "other:140000",
    ]
    assert all(stream._VALUE.fullmatch(v) for v in good)
    bad = ["0" * (max(HEX_LENGTHS) + 1), "DIR", "symlink:", "chardev:1", "F" * 64]
    assert not any(stream._VALUE.fullmatch(v) for v in bad)
