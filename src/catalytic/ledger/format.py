"""Names and shapes of the run ledger: the seed's six files plus catalytic's documented extensions.

The full description, with examples, is ``docs/ledger.md``; the JSON Schemas are in ``schemas/``.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

SCHEMA_VERSION = "catalytic.ledger/1"

#: The runs root's hash chain of sealed runs (see :mod:`catalytic.ledger.chain`) and its lock file.
CHAIN_FILE = "LEDGER.jsonl"
CHAIN_LOCK = ".LEDGER.lock"
#: Everything else catalytic keeps directly in a runs root, beside the run ledgers, starts with one of
#: these: its directories ``_cache`` (stat caches), ``_store`` (rollback store), ``_commits`` (overlay
#: commit journals) and ``_locks`` (domain locks), each named by the module that uses it, and its lock
#: and temporary files (``.LEDGER.lock``, ``.<name>.<random>.tmp``).
RESERVED_PREFIXES = ("_", ".")
#: The other entries of a runs root that are catalytic's own, never a run's ledger.
RESERVED_NAMES = (CHAIN_FILE,)
_RESERVED_FOLDED = frozenset(name.casefold() for name in RESERVED_NAMES)


def reserved(name: str) -> bool:
    """Whether ``name`` is one of catalytic's own entries of a runs root, so never a run id or a run.

    Compared without regard to case: on a case-insensitive file system ``ledger.jsonl`` is the chain.
    """
    return name.startswith(RESERVED_PREFIXES) or name.casefold() in _RESERVED_FOLDED


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


class OutputRecord(TypedDict, total=False):
    path: str
    type: Literal["file", "directory", "symlink"]
    sha256: str
    target: str
    #: Only ever ``False``: the entry was there, unchanged, before the run (absent: this run produced it).
    produced: bool


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
