"""The pytest plugin (entry point ``pytest11``) catches leaky tests and passes clean ones."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

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
