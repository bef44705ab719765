"""catalytic: run any command and prove what it did to the filesystem (CMP-01 run ledgers).

Public API (everything else is private)::

    import catalytic
    result = catalytic.run(["make", "build"], catalytic_domains=["build/_tmp"],
                           durable_outputs=["CORTEX/_generated/out.json"])
    ok, report = catalytic.CatalyticLedgerValidator(result.ledger_dir).validate()

Names are imported on first use so that ``import catalytic`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "1.0.0"

__all__ = [
    "CatalyticError",
    "CatalyticLedgerValidator",
    "ConfigError",
    "DeclarationError",
    "DomainDiff",
    "Policy",
    "RunResult",
    "SnapshotError",
    "__version__",
    "catalytic_domains",
    "run",
    "snapshot",
]

_LAZY = {
    "CatalyticError": "catalytic.errors",
    "ConfigError": "catalytic.errors",
    "DeclarationError": "catalytic.errors",
    "SnapshotError": "catalytic.errors",
    "CatalyticLedgerValidator": "catalytic.validate",
    "DomainDiff": "catalytic.diff",
    "Policy": "catalytic.policy",
    "RunResult": "catalytic.runtime",
    "run": "catalytic.api",
    "catalytic_domains": "catalytic.api",
    "snapshot": "catalytic.api",
}

if TYPE_CHECKING:
    from catalytic.api import catalytic_domains, run, snapshot
    from catalytic.diff import DomainDiff
    from catalytic.errors import CatalyticError, ConfigError, DeclarationError, SnapshotError
    from catalytic.policy import Policy
    from catalytic.runtime import RunResult
    from catalytic.validate import CatalyticLedgerValidator


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'catalytic' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
