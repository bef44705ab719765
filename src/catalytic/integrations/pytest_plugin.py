"""pytest plugin: fail any test that leaves a catalytic domain changed.

Domains come from ``--catalytic-domain PATH`` (repeatable, relative to the invocation directory),
the ini option ``catalytic_domains`` (one path per line, relative to the rootdir) and the marker
``@pytest.mark.catalytic_domain("PATH", ...)`` (relative to the rootdir) for one test. Each domain is
snapshotted before the test's setup and again after its teardown (fixtures that clean up after
themselves are fine); any difference makes the test's teardown fail with the test id and every path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from catalytic.snapshot import DomainSnapshot

_KEY = pytest.StashKey[list[tuple[Path, "DomainSnapshot"]]]()
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


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    domains = _domains(item)
    if not domains:
        return
    from catalytic.snapshot import snapshot_tree

    item.stash[_KEY] = [(d, snapshot_tree(d)) for d in domains]


def _describe(item: pytest.Item, before: list[tuple[Path, DomainSnapshot]]) -> str | None:
    from catalytic.diff import diff_entries
    from catalytic.paths import join
    from catalytic.snapshot import snapshot_tree

    lines: list[str] = []
    for domain, snap in before:
        diff = diff_entries(snap.entries, snapshot_tree(domain).entries)
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
