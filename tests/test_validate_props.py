"""Property tests: whatever is written into a ledger, the validator reports, never raises."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalytic.ledger.canonical import dumps
from catalytic.validate import CatalyticLedgerValidator
from ledger_factory import FILES, build_ledger

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _well_formed(ok: bool, report: Any) -> None:
    assert isinstance(ok, bool)
    assert report["passed"] is ok
    assert all(isinstance(e["code"], str) and isinstance(e["message"], str) for e in report["errors"])
    dumps(report)  # the report is always serialisable


@SETTINGS
@given(name=st.sampled_from(FILES), value=json_values)
def test_any_json_value_in_place_of_a_file_fails_without_raising(name: str, value: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = build_ledger(Path(tmp))
        original = ledger.read(name)
        if value == original:
            return
        ledger.write(name, value)
        ok, report = CatalyticLedgerValidator(ledger.run_dir).validate()
        _well_formed(ok, report)
        assert not ok
        assert report["errors"]


@SETTINGS
@given(name=st.sampled_from(FILES), data=st.binary(max_size=200))
def test_any_bytes_in_place_of_a_file_fail_without_raising(name: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = build_ledger(Path(tmp))
        if data == ledger.path(name).read_bytes():
            return
        ledger.path(name).write_bytes(data)
        ok, report = CatalyticLedgerValidator(ledger.run_dir).validate()
        _well_formed(ok, report)
        assert not ok


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@pytest.mark.slow
@SETTINGS
@given(name=st.sampled_from(FILES), choice=st.integers(min_value=0), value=json_values)
def test_any_value_substituted_inside_a_file_never_raises(name: str, choice: int, value: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = build_ledger(Path(tmp))
        document = ledger.read(name)
        spots = _paths(document)[1:]
        where = spots[choice % len(spots)]
        parent = document
        for key in where[:-1]:
            parent = parent[key]
        parent[where[-1]] = value
        ledger.write(name, document)
        ok, report = CatalyticLedgerValidator(ledger.run_dir).validate()
        _well_formed(ok, report)
        assert not any(e["code"] == "INTERNAL" for e in report["errors"]), report["errors"]
