"""Canonical JSON: deterministic bytes, keys in byte order, valid UTF-8, lossless names."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalytic.ledger import canonical

NAMES = st.binary(min_size=0, max_size=6).map(lambda b: b.decode("utf-8", "surrogateescape"))
KEYS = st.one_of(st.text(max_size=6), NAMES)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    NAMES,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=20,
)


def _key_orders(value: Any) -> list[list[str]]:
    """Key order of every object, in the order json.loads preserved it."""
    found: list[list[str]] = []
    if isinstance(value, dict):
        found.append(list(value))
        for item in value.values():
            found.extend(_key_orders(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(_key_orders(item))
    return found


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None, derandomize=True)
@given(VALUES)
def test_round_trip_utf8_and_sorted_keys(value: Any) -> None:
    text = canonical.dumps(value)
    data = canonical.encode(value)
    assert data == text.encode("utf-8")
    data.decode("utf-8")  # strict: the file is valid UTF-8, lone surrogates are escaped
    assert text.endswith("\n")
    assert "\n" not in text[:-1]
    back = json.loads(data.decode("utf-8"))
    assert _same(value, back)
    assert canonical.loads(data) == back
    for keys in _key_orders(back):
        raw = [k.encode("utf-8", "surrogateescape") for k in keys]
        assert raw == sorted(raw)
    assert canonical.dumps(back) == text


def test_known_bytes() -> None:
    bad = b"bad\xff".decode("utf-8", "surrogateescape")
    value = {"é": 1, "z": [True, None], "a": {"b": "c"}, bad: "x"}
    assert canonical.encode(value) == b'{"a":{"b":"c"},"bad\\udcff":"x","z":[true,null],"\xc3\xa9":1}\n'
    assert next(iter(json.loads(canonical.encode(value)))) == "a"


def test_keys_sorted_by_bytes_not_code_points() -> None:
    # U+FFFD (EF BF BD) sorts before U+10000 (F0 90 80 80) by bytes, after it by UTF-16 units.
    value = {"\U00010000": 1, "\ufffd": 2}
    assert list(json.loads(canonical.dumps(value))) == ["\ufffd", "\U00010000"]


def test_refuses_non_finite_and_unknown_types() -> None:
    with pytest.raises(ValueError):
        canonical.dumps(float("nan"))
    with pytest.raises(TypeError):
        canonical.dumps({1: "x"})
    with pytest.raises(TypeError):
        canonical.dumps({"x": object()})


def test_write_json_is_atomic_and_canonical(tmp_path: Path) -> None:
    target = tmp_path / "doc.json"
    target.write_text("old")
    canonical.write_json(target, {"b": 1, "a": 2})
    assert target.read_bytes() == b'{"a":2,"b":1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.json"]
    with pytest.raises(TypeError):
        canonical.write_json(target, {"x": object()})
    assert target.read_bytes() == b'{"a":2,"b":1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.json"]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats(min_value=-1e-300, max_value=1e-300),
    )
)
def test_numbers_booleans_and_null_are_written_as_json_writes_them(value: Any) -> None:
    assert canonical.dumps(value) == json.dumps(value, allow_nan=False) + "\n"
    assert (
        canonical.dumps([value, {"k": value}])
        == json.dumps([value, {"k": value}], allow_nan=False, separators=(",", ":")) + "\n"
    )


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_numbers_are_refused_anywhere(value: float) -> None:
    with pytest.raises(ValueError):
        canonical.dumps({"a": [value]})
