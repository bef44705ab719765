"""Property: the snapshot diff of random trees under random mutations equals a plain reference model.

The model is a dict ``path -> (kind, content or target, mode)`` kept beside the real file-system
operations; the expected RESTORE_DIFF is computed from two copies of it, with no catalytic code.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalytic.diff import diff_entries, merge_join
from catalytic.snapshot import snapshot_tree
from catalytic.snapshot.entry import Entry

Node = tuple[str, Any, int | None]  # ("file", bytes, mode) | ("dir", None, mode) | ("symlink", target, None)
Model = dict[str, Node]

NAMES = ["a", "b", "a-b", "a.b", "é", b"x\xff".decode("utf-8", "surrogateescape"), "Z"]
TARGETS = ["a", "../b", "/nowhere", "é", "a/b/c", "."]
CONTENTS = st.binary(max_size=16)
FILE_MODES = st.sampled_from([0o644, 0o755])
DIR_MODES = st.sampled_from([0o755, 0o700])
MAX_DEPTH = 3
OPS = ("write", "chmod", "delete", "mkdir", "rmdir", "symlink", "file_to_dir")


def _join(parent: str, name: str) -> str:
    return name if parent == "." else f"{parent}/{name}"


def _depth(rel: str) -> int:
    return 0 if rel == "." else rel.count("/") + 1


def _key(rel: str) -> bytes:
    return rel.encode("utf-8", "surrogateescape")


def _of_kind(model: Model, *kinds: str) -> list[str]:
    return sorted((p for p, n in model.items() if n[0] in kinds), key=_key)


def _apply(draw: st.DrawFn, root: Path, model: Model) -> None:
    """Draw one operation, perform it on disk and mirror it in ``model`` (no-op when not applicable)."""
    op = draw(st.sampled_from(OPS))
    dirs = [d for d in _of_kind(model, "dir") if _depth(d) < MAX_DEPTH]
    if op in ("write", "mkdir", "symlink"):
        rel = _join(draw(st.sampled_from(dirs)), draw(st.sampled_from(NAMES)))
        path = root / rel
        node = model.get(rel)
        if op == "write" and (node is None or node[0] == "file"):
            content = draw(CONTENTS)
            path.write_bytes(content)
            if node is None:
                mode = draw(FILE_MODES)
                os.chmod(path, mode)
            else:
                mode = node[2]
            model[rel] = ("file", content, mode)
        elif op == "mkdir" and node is None:
            mode = draw(DIR_MODES)
            os.mkdir(path)
            os.chmod(path, mode)
            model[rel] = ("dir", None, mode)
        elif op == "symlink" and (node is None or node[0] == "symlink"):
            target = draw(st.sampled_from(TARGETS))
            if node is not None:
                os.unlink(path)
            os.symlink(target, path)
            model[rel] = ("symlink", target, None)
        return
    if op == "chmod":
        candidates = _of_kind(model, "file", "dir")
        rel = draw(st.sampled_from(candidates))
        kind, content, _ = model[rel]
        mode = draw(FILE_MODES if kind == "file" else DIR_MODES)
        os.chmod(root / rel, mode)
        model[rel] = (kind, content, mode)
        return
    if op in ("delete", "file_to_dir"):
        kinds = ("file", "symlink") if op == "delete" else ("file",)
        candidates = _of_kind(model, *kinds)
        if not candidates:
            return
        rel = draw(st.sampled_from(candidates))
        os.unlink(root / rel)
        del model[rel]
        if op == "file_to_dir":
            mode = draw(DIR_MODES)
            os.mkdir(root / rel)
            os.chmod(root / rel, mode)
            model[rel] = ("dir", None, mode)
        return
    # rmdir: a whole subtree
    candidates = [d for d in _of_kind(model, "dir") if d != "."]
    if not candidates:
        return
    rel = draw(st.sampled_from(candidates))
    shutil.rmtree(root / rel)
    for p in [p for p in model if p == rel or p.startswith(rel + "/")]:
        del model[p]


def _value(node: Node) -> str:
    kind, payload, _ = node
    if kind == "file":
        return hashlib.sha256(payload).hexdigest()
    if kind == "dir":
        return "dir"
    return f"symlink:{payload}"


def _mode(node: Node) -> str:
    return "" if node[2] is None else f"{node[2]:04o}"


def _expected_diff(pre: Model, post: Model) -> dict[str, Any]:
    added = {p: _value(n) for p, n in post.items() if p not in pre}
    removed = {p: _value(n) for p, n in pre.items() if p not in post}
    changed: dict[str, dict[str, str]] = {}
    for p in pre.keys() & post.keys():
        a, b = pre[p], post[p]
        if _value(a) == _value(b) and _mode(a) == _mode(b):
            continue
        record = {"before": _value(a), "after": _value(b)}
        if _mode(a) != _mode(b):
            record["mode_before"] = _mode(a)
            record["mode_after"] = _mode(b)
        changed[p] = record
    return {"added": added, "removed": removed, "changed": changed}


def _manifest(model: Model) -> dict[str, tuple[str, str | None]]:
    return {p: (_value(n), None if n[2] is None else f"{n[2]:04o}") for p, n in model.items()}


@pytest.mark.slow
@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.data())
def test_diff_matches_reference_model(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        root.mkdir()
        os.chmod(root, 0o755)
        model: Model = {".": ("dir", None, 0o755)}
        for _ in range(data.draw(st.integers(0, 14), label="setup ops")):
            _apply(data.draw, root, model)
        pre_model = dict(model)
        pre = snapshot_tree(root)
        assert {e.path: (e.value, e.mode) for e in pre.entries} == _manifest(pre_model)
        assert [_key(e.path) for e in pre.entries] == sorted(_key(p) for p in pre_model)
        for _ in range(data.draw(st.integers(0, 8), label="mutations")):
            _apply(data.draw, root, model)
        post = snapshot_tree(root)
        assert {e.path: (e.value, e.mode) for e in post.entries} == _manifest(model)
        diff = diff_entries(pre.entries, post.entries)
        assert diff.to_json() == _expected_diff(pre_model, model)
        assert diff.clean == (_manifest(pre_model) == _manifest(model))
        assert [_key(p) for p in diff.paths()] == sorted(
            _key(p) for p in {**diff.added, **diff.removed, **diff.changed}
        )


ENTRY_PATHS = st.lists(
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join), unique=True, max_size=10
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(ENTRY_PATHS, ENTRY_PATHS)
def test_merge_join_pairs_every_path_once_in_byte_order(a: list[str], b: list[str]) -> None:
    pre = [Entry(p, "dir", "0755") for p in sorted(a, key=_key)]
    post = [Entry(p, "dir", "0755") for p in sorted(b, key=_key)]
    pairs = list(merge_join(pre, post))
    seen = [(x or y).path for x, y in pairs if (x or y) is not None]
    assert seen == sorted(set(a) | set(b), key=_key)
    for x, y in pairs:
        assert (x is not None and x.path in a) or x is None
        assert (y is not None and y.path in b) or y is None
        if x is not None and y is not None:
            assert x.path == y.path
    diff = diff_entries(pre, post)
    assert set(diff.added) == set(b) - set(a)
    assert set(diff.removed) == set(a) - set(b)
    assert diff.changed == {}
