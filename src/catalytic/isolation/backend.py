"""What every isolation backend shares: the mode names, the :class:`Backend` protocol, the options, the
outcome it is given and the facts it reports (the registry and the choice of a backend are in the package).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from catalytic.errors import EXIT_USAGE, CatalyticError
from catalytic.events import Emit, ignore

if TYPE_CHECKING:
    from catalytic.diff import DomainDiff
    from catalytic.errors import SnapshotError
    from catalytic.policy import Policy
    from catalytic.snapshot.domains import Snapshot, SnapshotSettings, Spools

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
    emit: Emit = ignore  # where the backend's events go (:mod:`catalytic.events`)
    jobs: int = 0  # processes for work on many files (0: one per core), as --jobs
    cache: bool = True  # snapshots may use the stat cache (False: --no-cache)


@dataclass
class Outcome:
    """What the runtime knows once the post-run snapshots were compared."""

    pre: Sequence[Snapshot]
    post: Sequence[Snapshot]
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
        self, pre: Sequence[Any], spools: Spools, settings: SnapshotSettings
    ) -> tuple[list[Any], SnapshotError | None] | None:
        """The post-run snapshots if the backend computes them, else None (snapshot the real tree).

        ``pre`` are the pre-run snapshots, their documents in ``spools`` (the post-run ones go there too);
        ``settings`` say how the run takes snapshots now (without the store once it failed or the command
        changed it).
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

    def prepare(self, pre: Sequence[Snapshot]) -> None:
        del pre

    def wrap(self, command: Sequence[str]) -> list[str]:
        return list(command)

    def post_snapshots(
        self, pre: Sequence[Any], spools: Spools, settings: SnapshotSettings
    ) -> tuple[list[Any], SnapshotError | None] | None:
        del pre, spools, settings
        return None

    def finish(self, outcome: Outcome) -> Facts:
        del outcome
        return Facts()

    def close(self) -> None:
        pass


Factory = Callable[["Policy", Path, Options], Backend]
