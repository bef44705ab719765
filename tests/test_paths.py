"""catalytic.paths: byte order, segment-wise containment, lexical/resolve normalisation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalytic import api, paths
from catalytic.errors import DeclarationError

SEGMENT = st.text(alphabet="ab_x-é", min_size=1, max_size=4).filter(lambda s: s not in (".", ".."))
REL = st.lists(SEGMENT, min_size=1, max_size=4).map("/".join)


def test_is_within_compares_whole_segments() -> None:
    assert paths.is_within("CORTEX/_generated/x", "CORTEX/_generated")
    assert paths.is_within("CORTEX/_generated", "CORTEX/_generated")
    assert not paths.is_within("CORTEX/_generated_x", "CORTEX/_generated")
    assert not paths.is_within("CORTEX/_generated_x/y", "CORTEX/_generated")
    assert not paths.is_within("CORTEX", "CORTEX/_generated")
    assert paths.is_within("anything/at/all", ".")
    assert not paths.is_within(".", "a")


def test_overlaps_is_symmetric_containment() -> None:
    assert paths.overlaps("a", "a/b")
    assert paths.overlaps("a/b", "a")
    assert not paths.overlaps("a", "ab")
    assert paths.overlaps(".", "x")


def test_sort_key_is_byte_order() -> None:
    names = ["é", "a/b", "a-c", "a", b"\xff".decode("utf-8", "surrogateescape"), "B"]
    ordered = sorted(names, key=paths.sort_key)
    assert [paths.to_bytes(n) for n in ordered] == sorted(paths.to_bytes(n) for n in names)
    assert ordered[:4] == ["B", "a", "a-c", "a/b"]


def test_join_and_parts() -> None:
    assert paths.join(".", "x/y") == "x/y"
    assert paths.join("x", ".") == "x"
    assert paths.join("x", "y") == "x/y"
    assert paths.parts(".") == ()
    assert paths.parts("a/b") == ("a", "b")


def test_lexical_refuses_traversal_and_empty(tmp_path: Path) -> None:
    assert paths.lexical(tmp_path, "a/b", what="x") == ("a/b", None)
    assert paths.lexical(tmp_path, "./a/./b/", what="x") == ("a/b", None)
    assert paths.lexical(tmp_path, ".", what="x") == (".", None)
    assert paths.lexical(tmp_path, str(tmp_path / "a"), what="x") == ("a", None)
    for bad, code in (("a/../b", "TRAVERSAL"), ("/etc", "TRAVERSAL"), ("", "BAD_PATH"), ("a\0b", "BAD_PATH")):
        rel, problem = paths.lexical(tmp_path, bad, what="x")
        assert rel is None
        assert problem is not None
        assert problem.code == code


def test_resolve_follows_symlinks_and_refuses_escape(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink("real", tmp_path / "alias")
    os.symlink("/", tmp_path / "out")
    assert paths.resolve(tmp_path, "alias/x", what="d") == ("real/x", None)
    rel, problem = paths.resolve(tmp_path, "out/etc", what="d")
    assert rel is None
    assert problem is not None
    assert problem.code == "ESCAPE"


@settings(max_examples=200, deadline=None, derandomize=True)
@given(REL, REL)
def test_is_within_matches_segment_prefix(child: str, parent: str) -> None:
    expected = child.split("/")[: len(parent.split("/"))] == parent.split("/")
    assert paths.is_within(child, parent) == expected
    assert paths.is_within(paths.join(parent, child), parent)
    assert paths.overlaps(child, parent) == paths.overlaps(parent, child)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(REL, st.text(alphabet="_x-", min_size=1, max_size=3))
def test_sibling_with_common_prefix_is_not_within(parent: str, suffix: str) -> None:
    assert not paths.is_within(parent + suffix, parent)
    assert not paths.overlaps(parent + suffix, parent)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.binary(min_size=1, max_size=8))
def test_to_bytes_round_trips_any_name(raw: bytes) -> None:
    name = raw.decode("utf-8", "surrogateescape")
    assert paths.to_bytes(name) == raw
    assert paths.sort_key(name) == raw


def test_resolve_reports_symlink_loops(tmp_path: Path) -> None:
    os.symlink("loop", tmp_path / "loop")
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    (tmp_path / "file").write_bytes(b"")
    for user_path in ("loop", "loop/x", "a/x"):
        rel, problem = paths.resolve(tmp_path, user_path, what="catalytic domain")
        assert rel is None
        assert problem is not None
        assert problem.code == "BAD_PATH"
        assert repr(user_path) in problem.message
    assert paths.resolve(tmp_path, "missing/x", what="d") == ("missing/x", None)
    assert paths.resolve(tmp_path, "file/x", what="d") == ("file/x", None)


def test_preflight_refuses_a_domain_through_a_symlink_loop(tmp_path: Path) -> None:
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(DeclarationError) as info:
        api.run(["true"], root=tmp_path, catalytic_domains=["loop/x"], run_id="loop")
    assert [p.code for p in info.value.problems] == ["BAD_PATH"]
    assert not (tmp_path / ".catalytic").exists()


def test_walk_dirs_goes_any_depth_prunes_and_never_follows_symlinks(
    tmp_path: Path, past_recursion_limit: int
) -> None:
    from catalytic.isolation.restore import remove_tree
    from catalytic.paths import walk_dirs
    from trees import build_deep

    depth = past_recursion_limit
    build_deep(tmp_path / "deep", depth)
    (tmp_path / "skip" / "below").mkdir(parents=True)
    os.symlink(tmp_path / "skip", tmp_path / "link")
    seen = []
    for top, dirs, files in walk_dirs(str(tmp_path)):
        seen.append((top, sorted(files)))
        dirs[:] = [d for d in dirs if d != "skip"]
    tops = [top for top, _files in seen]
    assert len(tops) == depth + 2 and str(tmp_path / "skip") not in tops
    assert (str(tmp_path), ["link"]) in seen
    assert seen[-1] == (str(tmp_path / "deep" / "/".join(["a"] * depth)), ["bottom"])
    assert [top for top, _d, _f in walk_dirs(os.fsencode(tmp_path / "skip"))] == [
        os.fsencode(tmp_path / "skip"),
        os.fsencode(tmp_path / "skip" / "below"),
    ]
    remove_tree(tmp_path / "deep")
