"""pytest plugin: fail any test that leaves a catalytic domain changed.

Domains come from ``--catalytic-domain PATH`` (repeatable, relative to the invocation directory),
the ini option ``catalytic_domains`` (one path per line, relative to the rootdir) and the marker
``@pytest.mark.catalytic_domain("PATH", ...)`` (relative to the rootdir) for one test. Each domain is
snapshotted before the test's setup and again after its teardown (fixtures that clean up after
themselves are fine); any difference makes the test's teardown fail with the test id and every path.

The snapshots are the runtime's (parallel, streamed, constant memory) with a stat cache kept for the
session in a temporary directory: the first snapshot of a domain hashes its files, later ones ``lstat``
them and hash only what changed (same rules as ``catalytic run``; see docs/performance.md). The cache is
private to this pytest process (an xdist worker has its own) and removed when the session ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from catalytic.diff import DomainDiff
    from catalytic.snapshot.stream import DomainScan

_KEY = pytest.StashKey[list[tuple[Path, "DomainScan"]]]()
_CACHE = pytest.StashKey[Path]()
_SHOWN = 20


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("catalytic", "catalytic domains (CMP-01)")
    group.addoption(
        "--catalytic-domain",
        action="append",
        default=[],
        metavar="PATH",
        dest="catalytic_domains",
        help="fail any test that leaves PATH changed (repeatable)",
    )
    parser.addini(
        "catalytic_domains", "directories every test must leave byte-identical", type="linelist", default=[]
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "catalytic_domain(*paths): this test must leave these directories byte-identical"
    )


def _domains(item: pytest.Item) -> list[Path]:
    config = item.config
    found: list[Path] = []
    for raw in config.getoption("catalytic_domains") or []:
        found.append(Path(config.invocation_params.dir, raw))
    for raw in config.getini("catalytic_domains"):
        found.append(Path(config.rootpath, raw))
    for marker in item.iter_markers("catalytic_domain"):
        found.extend(Path(config.rootpath, str(raw)) for raw in marker.args)
    unique: dict[str, Path] = {}
    for path in found:
        unique.setdefault(os.path.abspath(path), Path(os.path.abspath(path)))
    return list(unique.values())


def pytest_unconfigure(config: pytest.Config) -> None:
    cache = config.stash.get(_CACHE, None)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)


def _cache(config: pytest.Config) -> Path:
    """This session's stat cache directory (made on first use)."""
    cache = config.stash.get(_CACHE, None)
    if cache is None:
        cache = config.stash[_CACHE] = Path(tempfile.mkdtemp(prefix="catalytic-pytest-"))
    return cache


def snapshot(domain: Path, cache: Path, before: DomainScan | None = None) -> DomainScan:
    """Snapshot ``domain`` with the stat cache in ``cache``; with ``before`` (the last snapshot of the same
    domain and cache), the result carries the differences from it."""
    from catalytic.snapshot.spool import Discard
    from catalytic.snapshot.stream import scan_domain

    # Only the differences are wanted: the manifest and MODES text is not kept anywhere.
    manifest, modes = Discard(cache), Discard(cache)
    return scan_domain(
        domain, "domain", "sha256", store_dir=cache, manifest=manifest, modes=modes, before=before
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    domains = _domains(item)
    if not domains:
        return
    from catalytic.errors import CatalyticError

    cache = _cache(item.config)
    taken: list[tuple[Path, DomainScan]] = []
    for domain in domains:
        try:
            taken.append((domain, snapshot(domain, cache)))
        except CatalyticError as exc:
            pytest.fail(f"catalytic: cannot snapshot {domain} before {item.nodeid}: {exc}", pytrace=False)
    item.stash[_KEY] = taken


def _describe(item: pytest.Item, before: list[tuple[Path, DomainScan]]) -> str | None:
    from catalytic.errors import CatalyticError
    from catalytic.paths import join

    cache = _cache(item.config)
    lines: list[str] = []
    for domain, snap in before:
        try:
            diff: DomainDiff | None = snapshot(domain, cache, snap).diff
        except CatalyticError as exc:
            lines.append(f"  cannot snapshot {domain} after the test: {exc}")
            continue
        if diff is None:  # never: a snapshot taken with ``before`` compares
            raise RuntimeError("the post-test snapshot did not compare")
        if diff.clean:
            continue
        shown = 0
        for kind, names in (("added", diff.added), ("removed", diff.removed), ("changed", diff.changed)):
            for name in names:
                if shown < _SHOWN:
                    lines.append(f"  {kind:<8}{join(str(domain), name)}")
                shown += 1
        if shown > _SHOWN:
            lines.append(f"  ... and {shown - _SHOWN} more in {domain}")
    if not lines:
        return None
    return f"catalytic: {item.nodeid} left a catalytic domain changed:\n" + "\n".join(lines)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    if call.when != "teardown" or _KEY not in item.stash:
        return
    before = item.stash[_KEY]
    del item.stash[_KEY]
    message = _describe(item, before)
    if message is None:
        return
    report: pytest.TestReport = outcome.get_result()
    report.outcome = "failed"
    report.longrepr = message
