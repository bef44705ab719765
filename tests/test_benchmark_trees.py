"""The benchmark's tree builders and its ledger measure (benchmarks/treegen.py, benchmarks/run.py)."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_nested_tree_is_seeded_and_looks_real(tmp_path: Path) -> None:
    treegen = load("treegen")
    plan = treegen.plan_nested(3000, seed=7)
    assert plan == treegen.plan_nested(3000, seed=7)
    assert plan != treegen.plan_nested(3000, seed=8)
    assert sum(len(d.files) for d in plan) == 3000
    children = Counter(d.path.rpartition("/")[0] for d in plan[1:])
    entries = [len(d.files) + children[d.path] for d in plan]
    assert max(entries) <= 50 and sum(e >= 10 for e in entries) >= 0.9 * len(entries)
    depths = {d.path.count("/") + 1 for d in plan[1:]}
    assert max(depths) >= 3 and max(depths) <= 6
    assert any(children[d.path] and d.files for d in plan)  # files and subdirectories side by side
    sizes = [size for d in plan for _name, size in d.files]
    assert sorted(sizes)[len(sizes) // 2] < 8192 < max(sizes)  # mostly small, some big

    treegen.make_nested(tmp_path / "a", 3000, seed=7, jobs=2)
    treegen.make_nested(tmp_path / "b", 3000, seed=7, jobs=1)
    written = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*"))
    assert written == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*"))
    files = [p for p in written if (tmp_path / "a" / p).is_file()]
    assert len(files) == 3000
    contents = {(tmp_path / "a" / p).read_bytes() for p in files if (tmp_path / "a" / p).stat().st_size >= 8}
    assert all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes() for p in files)
    assert len(contents) == sum((tmp_path / "a" / p).stat().st_size >= 8 for p in files)  # all distinct


def test_stdlib_copy_at_smoke_size_keeps_the_first_files(tmp_path: Path) -> None:
    treegen = load("treegen")
    source = treegen.copy_stdlib(tmp_path / "lib", files=40)
    copied = [p for p in (tmp_path / "lib").rglob("*") if not p.is_dir() or p.is_symlink()]
    assert len(copied) == 40
    assert all((source / p.relative_to(tmp_path / "lib")).exists() for p in copied)


def test_ledger_bytes_count_a_hard_linked_file_once(tmp_path: Path) -> None:
    run = load("run")
    ledger = tmp_path / "runs" / "r1"
    ledger.mkdir(parents=True)
    (ledger / "RUN_INFO.json").write_bytes(b"x" * 100)
    (ledger / "PRE_MANIFEST.json").write_bytes(b"y" * 1000)
    os.link(ledger / "PRE_MANIFEST.json", ledger / "POST_MANIFEST.json")
    (tmp_path / "runs" / "_cache").mkdir()
    (tmp_path / "runs" / "_cache" / "store").write_bytes(b"z" * 5000)  # not a ledger
    assert run.ledger_bytes(tmp_path / "runs") == (1100, 1)
    assert run.ledger_note(tmp_path / "runs") == "ledger 1.1 kB"
