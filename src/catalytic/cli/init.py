"""``catalytic init``: write a commented ``catalytic.toml`` for the current repository.

The file goes to the workspace root (``--root``, else the repository's top level, else the current
directory). It is never overwritten: an existing ``catalytic.toml`` or ``[tool.catalytic]`` table is a
usage error (exit 2), and the file is created exclusively, so a file that appears meanwhile is kept too.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from catalytic.cli.locate import ROOT_HELP
from catalytic.errors import UsageError
from catalytic.profiles import PROFILE_NAMES, PROFILES, Profile, detect
from catalytic.workspace import CONFIG_FILE, find_root, given, has_table


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``catalytic init``."""
    p = subparsers.add_parser(
        "init",
        help="write a commented catalytic.toml for this repository",
        description="Write catalytic.toml at the workspace root (the repository's top level) with every "
        "setting explained. Refuses to replace an existing configuration (exit 2).",
    )
    p.add_argument("--root", metavar="DIR", help=ROOT_HELP)
    p.add_argument(
        "--profile",
        choices=PROFILE_NAMES,
        help="profile to write (default: the one the workspace's layout implies)",
    )
    p.set_defaults(execute=execute_cli)


def _toml_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def config_text(profile: Profile) -> str:
    """The commented ``catalytic.toml`` for ``profile``."""
    return f"""\
# catalytic.toml: what `catalytic run` may do in this repository (CMP-01). Paths are relative to
# this directory; flags given to `catalytic run` override these settings. Every catalytic command run
# anywhere below this directory finds this file and uses this directory as the workspace root.

# Defaults for what this file does not say: "default" (an ordinary repository) or "cmp01-seed" (the
# layout with CONTRACTS/ and CORTEX/ the protocol was written for).
profile = "{profile.name}"

# Where run ledgers go. Add it to .gitignore, or commit it to keep the proofs with the code.
runs_root = "{profile.runs_root}"

# Scratch directories the command must leave byte-for-byte as it found them. "." is the whole
# repository: the runs root and .git are then left out of its snapshots (and recorded as left out).
# catalytic_domains = ["build/tmp"]

# Files or directories the command may create; each must be under an allowed root.
# durable_outputs = ["dist"]

# Where durable outputs may go ("." is anywhere in the workspace outside the forbidden paths).
# allowed_roots = {_toml_list(profile.allowed_roots)}

# Paths no catalytic domain or durable output may overlap (.git always is).
# forbidden_paths = {_toml_list(profile.forbidden_paths)}

# What a run is for, and its declared determinism (deterministic, bounded_nondeterministic,
# nondeterministic).
# intent = "build"
# determinism = "deterministic"

# none (check after the run), rollback (put the domains back when dirty), overlay (Linux: the command
# never touches the real tree), auto.
# isolation = "none"

# Hashing processes (0: one per core), and whether the stat cache may spare hashing unchanged files.
# jobs = 0
# use_cache = true
"""


def execute_cli(args: argparse.Namespace) -> int:
    """Write the file; say where it went."""
    where = given(args.root) if args.root else find_root()
    root = where.root
    if not root.is_dir():
        raise UsageError(f"workspace root {str(root)!r} is not a directory")
    target = root / CONFIG_FILE
    exists = UsageError(f"{target} already exists; catalytic init never replaces it", code="EXISTS")
    if os.path.lexists(target):
        raise exists
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and has_table(pyproject):
        raise UsageError(f"{pyproject} already configures catalytic ([tool.catalytic])", code="EXISTS")
    profile = PROFILES[args.profile] if args.profile else detect(root)
    data = config_text(profile).encode()
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except FileExistsError:
        raise UsageError(
            f"{target} already exists; catalytic init never replaces it", code="EXISTS"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot create {target}: {exc.strerror}", code="BAD_FILE") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        Path(target).unlink(missing_ok=True)
        raise UsageError(f"cannot write {target}: {exc.strerror}", code="BAD_FILE") from None
    sys.stdout.write(
        f"wrote {target} (profile {profile.name}); edit catalytic_domains, then: catalytic run -- ...\n"
    )
    return 0
