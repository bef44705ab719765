"""Names and shapes of the run ledger: the seed's six files plus catalytic's documented extensions.

The full description, with examples, is ``docs/ledger.md``; the JSON Schemas are in ``schemas/``.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

SCHEMA_VERSION = "catalytic.ledger/1"
DEFAULT_RUNS_ROOT = "CONTRACTS/_runs"

RUN_INFO = "RUN_INFO.json"
PRE_MANIFEST = "PRE_MANIFEST.json"
POST_MANIFEST = "POST_MANIFEST.json"
PRE_MODES = "PRE_MODES.json"
POST_MODES = "POST_MODES.json"
RESTORE_DIFF = "RESTORE_DIFF.json"
OUTPUTS = "OUTPUTS.json"
STATUS = "STATUS.json"
WRITE_LOG = "WRITE_LOG.json"

#: The seed's six files: every ledger has them.
SEED_FILES = (RUN_INFO, PRE_MANIFEST, POST_MANIFEST, RESTORE_DIFF, OUTPUTS, STATUS)
#: Files every ledger written by catalytic has (STATUS last: its presence means the run finished).
REQUIRED_FILES = (
    RUN_INFO,
    PRE_MANIFEST,
    PRE_MODES,
    POST_MANIFEST,
    POST_MODES,
    RESTORE_DIFF,
    OUTPUTS,
)
#: Order in which the writer creates them; STATUS.json is always written last.
WRITE_ORDER = (*REQUIRED_FILES, STATUS)
#: Optional documents a run may add (written after the required ones, before STATUS.json).
OPTIONAL_FILES = (WRITE_LOG,)

Status = Literal["restored", "dirty"]
Determinism = Literal["deterministic", "bounded_nondeterministic", "nondeterministic"]
DETERMINISM_VALUES: tuple[Determinism, ...] = (
    "deterministic",
    "bounded_nondeterministic",
    "nondeterministic",
)

Manifest = dict[str, dict[str, str]]
Modes = dict[str, dict[str, str]]


class ChangedRecord(TypedDict, total=False):
    before: str
    after: str
    mode_before: str
    mode_after: str


class DomainDiffDoc(TypedDict):
    added: dict[str, str]
    removed: dict[str, str]
    changed: dict[str, ChangedRecord]


class OutputRecord(TypedDict, total=False):
    path: str
    type: Literal["file", "directory", "symlink"]
    sha256: str
    target: str


class StatusDoc(TypedDict, total=False):
    status: Status
    restoration_verified: bool
    run_id: str
    exit_code: int | None
    interrupted: bool
    reason: str | None
    error: dict[str, str] | None
    # Isolation extensions (only when the run used rollback or overlay; docs/isolation.md).
    undeclared_writes: list[dict[str, str]] | None
    committed: bool | None
    rollback: dict[str, Any] | None
    quarantine: str | None


RunInfoDoc = dict[str, Any]
