"""The pytest plugin (entry point ``pytest11``) catches leaky tests and passes clean ones."""

from __future__ import annotations

import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest

# Loaded here, before pytester's in-process runs: they drop the modules first loaded inside them, and an
# engine half loaded twice cannot pickle its answers (pickle finds another class of the same name).
import catalytic.snapshot.stream  # noqa: F401
from catalytic.integrations.pytest_plugin import snapshot
from catalytic.snapshot.listing import FINE_GRANULARITY_NS

pytest_plugins = ["pytester"]
AGE = FINE_GRANULARITY_NS / 1e9 + 0.05

TESTS = """
from pathlib import Path

import pytest

SCRATCH = Path(__file__).parent / "scratch"


def test_clean():
    (SCRATCH / "tmp.txt").write_text("x")
    (SCRATCH / "tmp.txt").unlink()


def test_leaky():
    (SCRATCH / "leftover.txt").write_text("x")


def test_edits():
    (SCRATCH / "keep.txt").write_text("changed")


@pytest.fixture
def tidy_file():
    path = SCRATCH / "fixture.txt"
    path.write_text("x")
    yield path
    path.unlink()


def test_fixture_cleans_up(tidy_file):
    assert tidy_file.exists()
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    scratch = pytester.path / "scratch"
    scratch.mkdir()
    (scratch / "keep.txt").write_text("keep")
    pytester.makepyfile(test_work=TESTS)
    return pytester


def test_leaky_tests_fail_and_name_the_paths(project: pytest.Pytester) -> None:
    result = project.runpytest("--catalytic-domain", "scratch")
    result.assert_outcomes(passed=4, errors=2)
    text = result.stdout.str()
    assert "test_work.py::test_leaky left a catalytic domain changed" in text
    assert "scratch/leftover.txt" in text
    assert "test_work.py::test_edits left a catalytic domain changed" in text
    assert "scratch/keep.txt" in text
    assert "test_clean left" not in text
    assert "test_fixture_cleans_up left" not in text
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_without_a_domain_the_plugin_does_nothing(project: pytest.Pytester) -> None:
    project.runpytest().assert_outcomes(passed=4)


def test_ini_option(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\ncatalytic_domains =\n    scratch\n")
    result = project.runpytest()
    result.assert_outcomes(passed=4, errors=2)


def test_marker(pytester: pytest.Pytester) -> None:
    (pytester.path / "scratch").mkdir()
    pytester.makepyfile(
        test_marked="""
        from pathlib import Path
        import pytest

        @pytest.mark.catalytic_domain("scratch")
        def test_marked_leaks():
            (Path(__file__).parent / "scratch" / "x").write_text("x")

        def test_unmarked_leaks_unnoticed():
            (Path(__file__).parent / "scratch" / "y").write_text("y")
        """
    )
    result = pytester.runpytest("--strict-markers")
    result.assert_outcomes(passed=2, errors=1)
    assert "scratch/x" in result.stdout.str()
    assert "test_unmarked_leaks_unnoticed left" not in result.stdout.str()


def test_plugin_is_registered_through_its_entry_point(project: pytest.Pytester) -> None:
    # A separate interpreter: only the installed pytest11 entry point can bring the option in.
    result = project.runpytest_subprocess("--catalytic-domain", "scratch", "-k", "leaky")
    result.assert_outcomes(passed=1, errors=1)
    assert "scratch/leftover.txt" in result.stdout.str()


def _tree(root: Path, dirs: int, files: int) -> None:
    for i in range(dirs):
        sub = root / f"s{i:03d}"
        sub.mkdir(parents=True)
        for j in range(files):
            (sub / f"file-{j:05d}.txt").write_bytes(b"content %d %d" % (i, j))


def test_later_snapshots_use_the_session_cache_and_still_catch_changes(tmp_path: Path) -> None:
    """The first snapshot of a domain hashes it; later ones hash nothing unchanged, yet a same-size rewrite
    with the mtime put back, a removed file and an added one are all reported."""
    domain, cache = tmp_path / "domain", tmp_path / "cache"
    cache.mkdir()
    _tree(domain, 3, 50)
    time.sleep(AGE)  # past the racy window: the cache may trust these files
    first = snapshot(domain, cache)
    assert first.report.hashed_files == 150
    second = snapshot(domain, cache, first)
    assert second.report.hashed_files == 0 and second.diff is not None and second.diff.clean
    target = domain / "s001" / "file-00007.txt"
    st = target.stat()
    target.write_bytes(bytes(b ^ 1 for b in target.read_bytes()))  # same size, other bytes
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back; ctime moves
    (domain / "s002" / "file-00001.txt").unlink()
    (domain / "s000" / "new.txt").write_text("new")
    third = snapshot(domain, cache, second)
    assert third.diff is not None
    assert list(third.diff.changed) == ["s001/file-00007.txt"]
    assert list(third.diff.removed) == ["s002/file-00001.txt"]
    assert list(third.diff.added) == ["s000/new.txt"]


def test_snapshots_hold_constant_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """8,000 files: the snapshots stream and keep no text (~0.16 MiB at the peak; keeping the document text
    in memory took 1 MiB here, the in-memory engine's entries more). What is in flight is bounded by the
    workers' budget per message (about 4096 entries by default): lowered here so that 8,000 files are many
    budgets' worth."""
    from catalytic.snapshot import scheduler

    monkeypatch.setattr(scheduler, "BUDGET", 256)
    domain, cache = tmp_path / "domain", tmp_path / "cache"
    cache.mkdir()
    _tree(domain, 20, 400)
    first = snapshot(domain, cache)
    tracemalloc.start()
    try:
        after = snapshot(domain, cache, first)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert after.diff is not None and after.diff.clean
    assert peak < 1 << 19, f"{peak / 2**20:.2f} MiB"


def test_the_session_cache_is_removed_at_the_end(
    project: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    result = project.runpytest("--catalytic-domain", "scratch", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, errors=2)
    assert list(temp.iterdir()) == []


def test_snapshots_keep_no_document_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the differences are wanted: no spool file is ever made, however much text the domain has."""
    from catalytic.snapshot import spool

    def no_file(directory: Path) -> int:
        raise AssertionError(f"a spool file was made in {directory}")

    monkeypatch.setattr(spool.Spool, "LIMIT", 64)  # a kept document would go to a file at once
    monkeypatch.setattr(spool, "_unnamed", no_file)
    domain, cache = tmp_path / "domain", tmp_path / "cache"
    cache.mkdir()
    _tree(domain, 2, 40)
    first = snapshot(domain, cache)
    (domain / "s000" / "file-00003.txt").unlink()
    after = snapshot(domain, cache, first)
    assert after.diff is not None and list(after.diff.removed) == ["s000/file-00003.txt"]
    with pytest.raises(ValueError, match="not kept"):
        list(after.manifest.chunks())
