"""Named profiles: the defaults a workspace gets for what its configuration does not say.

Two profiles exist. ``default`` is for an ordinary repository: ledgers in ``.catalytic/runs`` at the
workspace root (one directory, easy to ignore), durable outputs allowed anywhere in the workspace
(``.``) outside the forbidden paths, no forbidden paths but ``.git``. ``cmp01-seed`` is the profile of
the project CMP-01 was written for: ledgers in ``CONTRACTS/_runs``, outputs under ``CORTEX/_generated``
or ``MEMORY/LLM_PACKER/_packs``, ``CANON``, ``AGENTS.md`` and ``BUILD`` forbidden.

Which one applies (:func:`choose`): the one named by ``--profile`` or the config's ``profile`` key;
else ``cmp01-seed`` when the workspace root holds a ``CONTRACTS`` or ``CORTEX`` directory (the seed's
layout, so its documented commands run verbatim); else ``default``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Profile:
    """Defaults for the settings a workspace does not configure."""

    name: str
    runs_root: str
    allowed_roots: tuple[str, ...]
    forbidden_paths: tuple[str, ...]
    description: str


DEFAULT = Profile(
    name="default",
    runs_root=".catalytic/runs",
    allowed_roots=(".",),
    forbidden_paths=(),
    description="an ordinary repository: ledgers in .catalytic/runs, outputs anywhere but forbidden paths",
)
SEED = Profile(
    name="cmp01-seed",
    runs_root="CONTRACTS/_runs",
    allowed_roots=("CONTRACTS/_runs", "CORTEX/_generated", "MEMORY/LLM_PACKER/_packs"),
    forbidden_paths=("CANON", "AGENTS.md", "BUILD"),
    description="the seed project's layout: ledgers in CONTRACTS/_runs, outputs under CORTEX/_generated "
    "or MEMORY/LLM_PACKER/_packs",
)

#: Every profile by name (the values of ``--profile`` and of the config's ``profile`` key).
PROFILES: dict[str, Profile] = {p.name: p for p in (DEFAULT, SEED)}
PROFILE_NAMES = tuple(PROFILES)
#: Directories at the workspace root that mark the seed's layout.
SEED_MARKERS = ("CONTRACTS", "CORTEX")


def detect(root: Path) -> Profile:
    """The profile a workspace's layout implies: :data:`SEED` when ``root`` holds a directory named in
    :data:`SEED_MARKERS`, else :data:`DEFAULT`."""
    if any((root / marker).is_dir() for marker in SEED_MARKERS):
        return SEED
    return DEFAULT


def choose(root: Path, name: str | None) -> Profile:
    """The profile named ``name`` (already checked to be one of :data:`PROFILE_NAMES`), else the one the
    layout of ``root`` implies."""
    return PROFILES[name] if name is not None else detect(root)
