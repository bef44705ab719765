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
from pathlib import Path
from typing import TYPE_CHECKING

from catalytic.isolation.backend import (
    DEFAULT_ISOLATION,
    ISOLATION_CHOICES,
    ISOLATION_NAMES,
    Backend,
    Factory,
    Facts,
    IsolationError,
    IsolationName,
    NoIsolation,
    Options,
    Outcome,
)

if TYPE_CHECKING:
    from catalytic.policy import Policy

__all__ = [
    "DEFAULT_ISOLATION",
    "ISOLATION_CHOICES",
    "ISOLATION_NAMES",
    "REGISTRY",
    "Backend",
    "Factory",
    "Facts",
    "IsolationError",
    "IsolationName",
    "NoIsolation",
    "Options",
    "Outcome",
    "create",
    "resolve",
]

#: Isolation name -> "module:class" of its backend (imported only when chosen).
REGISTRY: dict[str, str] = {
    "none": "catalytic.isolation.backend:NoIsolation",
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
        from catalytic.isolation.mount import unavailable_reason

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
        from catalytic.isolation.mount import unavailable_reason

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
