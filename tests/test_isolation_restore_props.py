"""Property: whatever a tree holds now, restore_tree makes it hold exactly the wanted entries."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalytic.isolation.restore import restore_tree
from catalytic.isolation.store import Store
from catalytic.snapshot import Entry, snapshot_tree
from catalytic.snapshot.entry import kind_of

NAMES = st.sampled_from(["a", "b", "c"])
NODE = st.one_of(
    st.tuples(st.just("file"), st.sampled_from([b"", b"x", b"yy\n"]), st.sampled_from([0o644, 0o600, 0o755])),
    st.tuples(st.just("dir"), st.just(b""), st.sampled_from([0o755, 0o700, 0o500])),
    st.tuples(st.just("symlink"), st.sampled_from([b"a", b"../b", b"nowhere"]), st.just(0)),
)
TREE = st.dictionaries(st.lists(NAMES, min_size=1, max_size=3).map(tuple), NODE, max_size=10)


def build(base: Path, spec: dict[tuple[str, ...], tuple[str, bytes, int]]) -> None:
    base.mkdir()
    made: dict[tuple[str, ...], str] = {}
    for parts in sorted(spec, key=len):
        parent = parts[:-1]
        if parent and made.get(parent) != "dir":
            continue
        kind, data, mode = spec[parts]
        path = base.joinpath(*parts)
        if kind == "file":
            path.write_bytes(data)
            os.chmod(path, mode)
        elif kind == "dir":
            path.mkdir()
        else:
            os.symlink(data.decode(), path)
        made[parts] = kind
    for parts in sorted(made, key=len, reverse=True):  # directory modes last, deepest first
        if made[parts] == "dir":
            os.chmod(base.joinpath(*parts), spec[parts][2])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def triples(entries: list[Entry]) -> list[tuple[str, str, str | None]]:
    return [(e.path, e.value, e.mode) for e in entries]


@given(want_spec=TREE, have_spec=TREE)
def test_restore_tree_reaches_the_wanted_state(want_spec: dict, have_spec: dict) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="catalytic-restore-prop-"))
    try:
        build(tmp / "want", want_spec)
        build(tmp / "have", have_spec)
        want = list(snapshot_tree(tmp / "want").entries)
        store = Store(tmp / "runs")
        for e in want:
            if kind_of(e.value) == "file":
                store.put_file(tmp / "want" / e.path, "sha256", e.value)
        have = list(snapshot_tree(tmp / "have").entries)
        report = restore_tree(tmp / "have", triples(want), triples(have), store, "sha256")
        assert report.ok, report.problems
        after = [(e.path, e.value, e.mode) for e in snapshot_tree(tmp / "have").entries]
        assert after == [(e.path, e.value, e.mode) for e in want]
    finally:
        for dirpath, dirnames, _files in os.walk(tmp):
            for d in dirnames:
                p = os.path.join(dirpath, d)
                if not os.path.islink(p):
                    os.chmod(p, 0o700)
        shutil.rmtree(tmp)
