"""The settings of a run, declared once: name, kind, default, help, flag, config key.

Everything else that lists the settings of ``catalytic run`` is derived from :data:`SETTINGS`: the
flags of the ``run`` parser (:mod:`catalytic.cli.run`), what the flags said (``overrides_from``), the
keys the config loader accepts (:data:`CONFIG_KEYS`, :func:`catalytic.policy.load_config`), the command
reference and completion (both read the parser), and the keyword arguments of :func:`catalytic.run` and
:func:`catalytic.catalytic_domains` (written out for IDEs and type checkers; a test holds them to this
list). A setting's ``name`` is its keyword argument, its :class:`~catalytic.policy.Declaration` field
and its config key (which may also be spelt with ``-``).

Two settings are not config keys, on purpose: ``root`` (the file lives at the workspace root: it cannot
name it) and ``run_id`` (a file is read by every run, and a ledger directory name can be used once).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from catalytic.isolation.backend import ISOLATION_CHOICES
from catalytic.ledger.format import DETERMINISM_VALUES
from catalytic.profiles import PROFILE_NAMES
from catalytic.snapshot.digest import HASH_NAMES
from catalytic.trace import BACKEND_NAMES, SCOPES

#: What a value is: a list of strings, a string, true/false, an integer, or one of ``choices``.
Kind = Literal["list", "str", "bool", "int", "choice"]

#: How a flag takes its value (argparse's): ``+`` one or more values after the flag, ``append`` one per
#: repeated flag, ``store_true`` / ``store_false`` a switch (``store_false``: the flag turns the setting
#: off), ``optional`` a ``--x`` / ``--no-x`` pair, ``value`` one value.
FlagStyle = Literal["value", "+", "append", "store_true", "store_false", "optional"]

ROOT_HELP = (
    "workspace root (default: the nearest directory upward with catalytic.toml or [tool.catalytic] in "
    "pyproject.toml, else the repository's top level, else the current directory)"
)


@dataclass(frozen=True)
class Setting:
    """One setting of a run."""

    name: str
    kind: Kind
    help: str
    #: The flags of ``catalytic run`` that set it (the first is the long one).
    flags: tuple[str, ...]
    style: FlagStyle = "value"
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    #: Whether ``catalytic.toml`` / ``[tool.catalytic]`` may set it (see the module docstring for the two
    #: that may not).
    config: bool = True
    #: Other spellings accepted as config keys (older names).
    aliases: tuple[str, ...] = ()
    #: Whether :func:`catalytic.catalytic_domains` takes it (the block runs in this process, on the real
    #: tree: no isolation backend, no tracer, and the domains are its first argument).
    block: bool = True
    #: The value when nothing (flag, file, profile) says otherwise.
    default: Any = None
    #: Paths in the workspace: on the command line relative to the current directory (see
    #: :func:`catalytic.cli.locate.from_cwd`), in the config file relative to the workspace root.
    path: bool = False
    #: A file named by the setting: relative to the workspace root in the config file, to the current
    #: directory on the command line and in the API (it is not a path inside the workspace).
    file: bool = False
    #: The least value of an ``int`` setting, and the rule as messages say it.
    minimum: int | None = None
    rule: str = ""

    @property
    def keys(self) -> tuple[str, ...]:
        """Its config keys, ``_`` spelling (``-`` is accepted too)."""
        return (self.name, *self.aliases) if self.config else ()

    def expected(self) -> str:
        """What a value must be, as error messages say it."""
        if self.kind == "list":
            return "a list of strings"
        if self.kind == "str":
            return "a string"
        if self.kind == "bool":
            return "true or false"
        if self.kind == "int":
            return "an integer" + (f", {self.rule}" if self.rule else "")
        return "one of " + ", ".join(self.choices)

    def accepts(self, value: object) -> bool:
        """Whether ``value`` (as TOML or a keyword argument gives it) is valid for this setting."""
        if self.kind == "list":
            return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        if self.kind == "str":
            return isinstance(value, str)
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                return False
            return self.minimum is None or value >= self.minimum
        return value in self.choices


#: Every setting of a run, in the order ``catalytic run --help`` lists the flags.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "run_id",
        "str",
        "ledger directory name (default: generated, sortable by time)",
        ("--run-id",),
        config=False,
    ),
    Setting(
        "catalytic_domains",
        "list",
        help="scratch directories the command must leave byte-for-byte as it found them",
        flags=("--catalytic-domains",),
        block=False,
        default=(),
        style="+",
        metavar="PATH",
        path=True,
    ),
    Setting(
        "durable_outputs",
        "list",
        help="files or directories the command may create; must be under an allowed root",
        flags=("--durable-outputs",),
        aliases=("durable_output_roots",),
        default=(),
        style="+",
        metavar="PATH",
        path=True,
    ),
    Setting(
        "allow_absent",
        "bool",
        "accept domains that do not exist yet (recorded as absent); otherwise preflight fails (ABSENT)",
        ("--allow-absent",),
        style="store_true",
        default=False,
    ),
    Setting(
        "allow_no_domains",
        "bool",
        "accept a run without any catalytic domain; otherwise preflight fails (NO_DOMAINS)",
        ("--allow-no-domains",),
        style="store_true",
        default=False,
    ),
    Setting(
        "allow_missing_outputs",
        "bool",
        "a declared output the command did not produce is recorded, not a failure "
        "(otherwise a successful command that leaves one missing fails with OUTPUT_NOT_PRODUCED)",
        ("--allow-missing-outputs",),
        style="store_true",
        default=False,
    ),
    Setting("intent", "str", "one line saying what the run is for", ("--intent",), default=""),
    Setting(
        "determinism",
        "choice",
        "declared determinism",
        ("--determinism",),
        choices=DETERMINISM_VALUES,
        default="deterministic",
    ),
    Setting(
        "allowed_roots",
        "list",
        help="where durable outputs may go",
        flags=("--allowed-roots",),
        style="+",
        metavar="PATH",
        path=True,
    ),
    Setting(
        "forbidden_paths",
        "list",
        help="paths no domain or output may overlap (.git is always forbidden)",
        flags=("--forbidden-paths",),
        style="+",
        metavar="PATH",
        path=True,
    ),
    Setting(
        "runs_root",
        "str",
        "where ledgers go (default: the profile's, .catalytic/runs or CONTRACTS/_runs)",
        ("--runs-root",),
        metavar="PATH",
        path=True,
    ),
    Setting(
        "profile",
        "choice",
        "defaults for what the config does not say (default: cmp01-seed in a workspace with "
        "CONTRACTS/ or CORTEX/, else default); see README",
        ("--profile",),
        choices=PROFILE_NAMES,
    ),
    Setting("root", "str", ROOT_HELP, ("--root",), metavar="DIR", config=False, default="."),
    Setting(
        "hash",
        "choice",
        "digest for files (default sha256)",
        ("--hash",),
        choices=HASH_NAMES,
        aliases=("hash_algorithm",),
        default="sha256",
    ),
    Setting(
        "exclude",
        "list",
        "leave out paths matching this gitignore-style pattern, relative to the workspace root "
        "(repeatable; e.g. __pycache__/); see docs/excludes.md",
        ("--exclude",),
        style="append",
        metavar="PATTERN",
        default=(),
    ),
    Setting(
        "exclude_from_gitignore",
        "bool",
        "also leave out what the workspace root's .gitignore lists",
        ("--exclude-from-gitignore",),
        style="optional",
        default=False,
    ),
    Setting(
        "jobs",
        "int",
        "hashing processes (default: one per core)",
        ("--jobs", "-j"),
        metavar="N",
        default=0,
        minimum=0,
        rule="0 (one per core) or more",
    ),
    Setting(
        "use_cache",
        "bool",
        "hash every file: trust nothing from the stat cache (<runs root>/_cache/)",
        ("--no-cache",),
        style="store_false",
        aliases=("cache",),
        default=True,
    ),
    Setting(
        "sign_key",
        "str",
        "sign the ledger digest with this Ed25519 private key (from catalytic keygen)",
        ("--sign-key",),
        metavar="PREFIX",
        file=True,
    ),
    Setting(
        "isolation",
        "choice",
        "none (default: run on the real tree, verify after), rollback (save the pre-state, put it "
        "back if dirty), overlay (Linux: run on an overlay, commit outputs after the proof), auto",
        ("--isolation",),
        choices=ISOLATION_CHOICES,
        block=False,
        default="none",
    ),
    Setting(
        "rollback_on_failure",
        "bool",
        "rollback: also put everything back when the command fails",
        ("--rollback-on-failure",),
        style="store_true",
        block=False,
        default=False,
    ),
    Setting(
        "discard",
        "bool",
        "overlay: drop the write set of a failed run instead of keeping it under quarantine/",
        ("--discard",),
        style="store_true",
        block=False,
        default=False,
    ),
    Setting(
        "check_determinism",
        "bool",
        "overlay, deterministic runs: run twice, each in its own overlay; fail if outputs differ",
        ("--check-determinism",),
        style="store_true",
        block=False,
        default=False,
    ),
    Setting(
        "trace",
        "bool",
        "record every write (path, op, time, process) in WRITE_LOG.json; see docs/tracing.md",
        ("--trace",),
        style="optional",
        block=False,
        default=False,
    ),
    Setting(
        "trace_scope",
        "choice",
        "trace the catalytic domains (default) or the whole workspace minus the runs root",
        ("--trace-scope",),
        choices=SCOPES,
        block=False,
        default="domains",
    ),
    Setting(
        "trace_backend",
        "choice",
        "tracing backend (default auto: fanotify if permitted, else watchdog/inotify)",
        ("--trace-backend",),
        choices=BACKEND_NAMES,
        block=False,
        default="auto",
    ),
)

BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}

#: Config key (``_`` spelling, aliases included) -> its setting.
CONFIG_KEYS: Mapping[str, Setting] = {key: s for s in SETTINGS for key in s.keys}

#: What a :func:`catalytic.catalytic_domains` block always runs with, whatever the config file says: the
#: defaults of the settings it does not take (it runs in this process, on the real tree), its domains aside.
BLOCK_FIXED: Mapping[str, Any] = {
    s.name: s.default for s in SETTINGS if not s.block and s.name != "catalytic_domains"
}


def overrides(given: Mapping[str, Any]) -> dict[str, Any]:
    """The settings among ``given`` (keyword arguments: extra names are ignored), for
    :func:`catalytic.policy.declare`; ``root`` is not one (the file that could say more lives there)."""
    return {s.name: given[s.name] for s in SETTINGS if s.name in given and s.name != "root"}
