"""Isolation backends: how much the runtime protects the real tree while the command runs.

- ``none``: the seed's behaviour; the command writes the real tree and the runtime verifies afterwards.
- ``rollback``: the pre-state of the domains and outputs goes to a content-addressed store; a dirty
  run is put back byte for byte and the restoration is proven by a fresh snapshot.
- ``overlay`` (Linux): the command sees the workspace through overlayfs in its own mount namespace;
  its writes land in an upper layer, and declared outputs are committed only after the proof.
- ``auto``: overlay where it works, rollback elsewhere (the choice is recorded).

Each backend implements :class:`Backend`; :data:`REGISTRY` maps a name to its factory, imported lazily.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from catalytic.errors import EXIT_USAGE, CatalyticError

if TYPE_CHECKING:
    from catalytic.diff import DomainDiff
    from catalytic.errors import SnapshotError
    from catalytic.policy import Policy
    from catalytic.snapshot import DomainSnapshot
    from catalytic.snapshot.domains import Spools

IsolationName = Literal["none", "rollback", "overlay"]
ISOLATION_NAMES: tuple[IsolationName, ...] = ("none", "rollback", "overlay")
ISOLATION_CHOICES = (*ISOLATION_NAMES, "auto")
DEFAULT_ISOLATION = "none"


class IsolationError(CatalyticError):
    """The requested isolation cannot be used here (says why and what to use instead)."""

    code = "ISOLATION_UNAVAILABLE"
    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Options:
    """Run options that only matter to some backends."""

    rollback_on_failure: bool = False
    discard: bool = False
    check_determinism: bool = False
    say: Callable[[str], None] = lambda _m: None
    jobs: int = 0  # processes for work on many files (0: one per core), as --jobs
    cache: bool = True  # snapshots may use the stat cache (False: --no-cache)


@dataclass
class Outcome:
    """What the runtime knows once the post-run snapshots were compared."""

    pre: Sequence[DomainSnapshot]
    post: Sequence[DomainSnapshot]
    diffs: dict[str, DomainDiff]
    clean: bool
    exit_code: int | None
    interrupted: bool
    error: CatalyticError | None


@dataclass
class Facts:
    """What the isolation layer did, for the ledger (RUN_INFO/STATUS extensions)."""

    failed: bool = False
    reason: str | None = None
    undeclared_writes: list[dict[str, str]] | None = None
    committed: bool | None = None
    commits: list[dict[str, Any]] = field(default_factory=list)
    rollback: dict[str, Any] | None = None
    quarantine: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """One isolation mode. The runtime calls the methods in this order, ``close`` always."""

    name: IsolationName
    # The runtime turns ``cache`` off when the stat cache changed while the command ran.
    options: Options

    def prepare(self, pre: Sequence[Any]) -> None:
        """After the pre-run snapshots, before the command starts."""

    def wrap(self, command: Sequence[str]) -> list[str]:
        """The argv that actually gets spawned for ``command``."""

    def post_snapshots(
        self, pre: Sequence[Any], spools: Spools | None
    ) -> tuple[list[Any], SnapshotError | None] | None:
        """The post-run snapshots if the backend computes them, else None (snapshot the real tree).

        ``pre`` are streamed snapshots when ``spools`` is given (the post-run ones go there too), else
        in memory (the run fell back to memory).
        """

    def finish(self, outcome: Outcome) -> Facts:
        """Commit, roll back or quarantine, once the verdict is known."""

    def close(self) -> None:
        """Release temporary state (mounts, upper layers)."""


class NoIsolation:
    """``none``: run on the real tree, verify afterwards (the seed's behaviour)."""

    name: IsolationName = "none"

    def __init__(self, policy: Policy, ledger_dir: Path, options: Options) -> None:
        del policy, ledger_dir
        self.options = options

    def prepare(self, pre: Sequence[DomainSnapshot]) -> None:
        del pre

    def wrap(self, command: Sequence[str]) -> list[str]:
        return list(command)

    def post_snapshots(
        self, pre: Sequence[Any], spools: Spools | None
    ) -> tuple[list[Any], SnapshotError | None] | None:
        del pre, spools
        return None

    def finish(self, outcome: Outcome) -> Facts:
        del outcome
        return Facts()

    def close(self) -> None:
        pass


Factory = Callable[["Policy", Path, Options], Backend]

#: Isolation name -> "module:class" of its backend (imported only when chosen).
REGISTRY: dict[str, str] = {
    "none": "catalytic.isolation:NoIsolation",
    "rollback": "catalytic.isolation.rollback:RollbackIsolation",
    "overlay": "catalytic.isolation.overlay:OverlayIsolation",
}


def create(policy: Policy, ledger_dir: Path, options: Options) -> Backend:
    """The backend of ``policy.isolation`` (already resolved: never ``auto``)."""
    try:
        target = REGISTRY[policy.isolation]
    except KeyError:
        raise IsolationError(
            f"unknown isolation {policy.isolation!r} (choose from {', '.join(ISOLATION_CHOICES)})",
            code="BAD_ISOLATION",
        ) from None
    module_name, _, cls_name = target.partition(":")
    factory: Factory = getattr(importlib.import_module(module_name), cls_name)
    return factory(policy, ledger_dir, options)


def resolve(requested: str, root: Path) -> tuple[IsolationName, str | None]:
    """Turn a requested mode into an effective one; ``auto`` probes overlay here.

    Returns the effective mode and, for ``auto``, why it was chosen.
    """
    if requested == "auto":
        from catalytic.isolation.overlay import unavailable_reason

        why = unavailable_reason(root) or bypass_reason(root)
        if why is None:
            return "overlay", "overlay mounts work here"
        return "rollback", f"overlay unavailable: {why}"
    if requested not in ISOLATION_NAMES:
        raise IsolationError(
            f"unknown isolation {requested!r} (choose from {', '.join(ISOLATION_CHOICES)})",
            code="BAD_ISOLATION",
        )
    if requested == "overlay":
        from catalytic.isolation.overlay import unavailable_reason

        why = unavailable_reason(root)
        if why is not None:
            raise IsolationError(
                f"--isolation overlay cannot be used here: {why}; use --isolation rollback "
                "(portable: saves and restores the domains) or --isolation auto"
            )
        why = bypass_reason(root)
        if why is not None:
            raise IsolationError(
                f"--isolation overlay cannot isolate this run: {why}; redirect it outside the workspace, "
                "let the command open the file itself (sh -c '... > FILE'), or use --isolation rollback",
                code="INHERITED_DESCRIPTOR",
            )
    return requested, None


def bypass_reason(root: Path) -> str | None:
    """Why an overlay over ``root`` could not isolate a command spawned now (an inherited descriptor
    reaches the real tree), or None (see :mod:`catalytic.isolation.descriptors`)."""
    from catalytic.isolation.descriptors import bypass_reason as reason

    return reason(root)
