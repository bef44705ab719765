"""Phase 0: the CMP-01 declaration, from flags and config file, checked before anything runs.

A :class:`Declaration` is what the user said (raw strings); :func:`preflight` turns it into a checked
:class:`Policy` with every path relative to the workspace root, or raises :class:`DeclarationError`
listing every problem, each with a stable code. Nothing is run or written before it passes.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from catalytic import paths, profiles, workspace
from catalytic import settings as settings_table
from catalytic.errors import CatalyticError, ConfigError, DeclarationError, Problem, UsageError
from catalytic.isolation import DEFAULT_ISOLATION
from catalytic.ledger import format as fmt
from catalytic.ledger.format import DETERMINISM_VALUES
from catalytic.snapshot.digest import DEFAULT_HASH, HASH_NAMES

#: Forbidden in every profile. Inside a catalytic domain (``.``) it is left out of the snapshots instead.
ALWAYS_FORBIDDEN = (".git",)
CONFIG_FILE = workspace.CONFIG_FILE

RUN_ID_RULE = "one path component of letters, digits, '.', '_' or '-', starting with a letter or digit"
_RUN_ID_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_RUN_ID_CHARS = _RUN_ID_FIRST | frozenset("._-")


def valid_run_id(run_id: str) -> bool:
    """Whether ``run_id`` follows :data:`RUN_ID_RULE` (at most 128 characters)."""
    return 0 < len(run_id) <= 128 and run_id[0] in _RUN_ID_FIRST and all(c in _RUN_ID_CHARS for c in run_id)


#: Config key (``_`` spelling, older names included) -> its setting (:mod:`catalytic.settings`).
CONFIG_KEYS = settings_table.CONFIG_KEYS


class Declaration(NamedTuple):
    """What the user declared, before any check. Empty tuples mean "not given".

    The defaults are those of the ``default`` profile; :func:`declare` fills in the chosen profile's.
    """

    root: Path
    catalytic_domains: tuple[str, ...] = ()
    durable_outputs: tuple[str, ...] = ()
    intent: str = ""
    determinism: str = "deterministic"
    allowed_roots: tuple[str, ...] = profiles.DEFAULT.allowed_roots
    forbidden_paths: tuple[str, ...] = profiles.DEFAULT.forbidden_paths
    runs_root: str = profiles.DEFAULT.runs_root
    hash: str = DEFAULT_HASH
    run_id: str | None = None
    isolation: str = DEFAULT_ISOLATION
    trace: bool = False
    trace_scope: str = "domains"
    trace_backend: str = "auto"
    exclude: tuple[str, ...] = ()
    exclude_from_gitignore: bool = False
    #: Explicit opt-ins for what is otherwise an error (see :func:`preflight` and the runtime).
    allow_absent: bool = False
    allow_no_domains: bool = False
    allow_missing_outputs: bool = False
    profile: str = profiles.DEFAULT.name
    #: How the run goes rather than what it may touch (not part of the :class:`Policy`).
    jobs: int = 0
    use_cache: bool = True
    sign_key: str | os.PathLike[str] | None = None
    rollback_on_failure: bool = False
    discard: bool = False
    check_determinism: bool = False
    #: How the workspace root was found (:class:`catalytic.workspace.Found`).
    found_by: str = "given"


@dataclass(frozen=True)
class Policy:
    """A checked declaration: every path canonical and relative to ``root``."""

    root: Path
    run_id: str
    catalytic_domains: tuple[str, ...]
    durable_outputs: tuple[str, ...]
    intent: str
    determinism: str
    allowed_roots: tuple[str, ...]
    forbidden_paths: tuple[str, ...]
    runs_root: str
    hash: str
    extras: Mapping[str, Any] = field(default_factory=dict)
    #: Effective isolation (never ``auto``), what was asked for, and why ``auto`` chose it.
    isolation: str = DEFAULT_ISOLATION
    isolation_requested: str = DEFAULT_ISOLATION
    isolation_reason: str | None = None
    trace: bool = False
    trace_scope: str = "domains"
    trace_backend: str = "auto"
    #: Gitignore-style patterns left out of every snapshot (:mod:`catalytic.excludes`): the root's
    #: ``.gitignore`` lines first when asked for, then the declared ones.
    excludes: tuple[str, ...] = ()
    exclude_from_gitignore: bool = False
    #: A declared output the command did not produce fails the run unless this is set.
    allow_missing_outputs: bool = False
    profile: str = profiles.DEFAULT.name
    found_by: str = "given"

    @property
    def ledger_dir(self) -> Path:
        return self.root / self.runs_root / self.run_id


def _config_table(root: Path) -> tuple[dict[str, Any], str | None]:
    toml_path = root / CONFIG_FILE
    pyproject = root / "pyproject.toml"
    tables: list[tuple[dict[str, Any], str]] = []
    for path in (toml_path, pyproject):
        if not path.is_file():
            continue
        import tomllib  # only when there is a file to read: the import alone costs a run ~3 ms

        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except RecursionError:
            raise ConfigError(f"{path.name}: cannot be read: nested too deeply") from None
        except (OSError, ValueError) as exc:  # TOMLDecodeError, and UnicodeDecodeError for bad UTF-8
            raise ConfigError(f"{path.name}: cannot be read: {exc}") from exc
        tool = data.get("tool", {})
        if not isinstance(tool, dict):
            raise ConfigError(f"{path.name}: [tool] must be a table")
        table = tool.get("catalytic", data if path is toml_path else None)
        if table is not None:
            if not isinstance(table, dict):
                raise ConfigError(f"{path.name}: [tool.catalytic] must be a table")
            tables.append((table, path.name))
    if len(tables) > 1:
        raise ConfigError(
            f"both {CONFIG_FILE} and [tool.catalytic] in pyproject.toml configure catalytic; "
            "keep one of them",
            code="CONFIG_CONFLICT",
        )
    return tables[0] if tables else ({}, None)


def load_config(root: Path) -> dict[str, Any]:
    """Settings from ``catalytic.toml`` or ``[tool.catalytic]`` in ``pyproject.toml`` at ``root``.

    Keys may use ``-`` or ``_``; unknown keys and wrong types are errors (BAD_CONFIG). A file a setting
    names (``sign_key``) is relative to ``root``.
    """
    table, source = _config_table(root)
    found: dict[str, Any] = {}
    for raw_key, value in table.items():
        setting = CONFIG_KEYS.get(raw_key.replace("-", "_"))
        if setting is None:
            known = ", ".join(sorted(CONFIG_KEYS))
            raise ConfigError(f"{source}: unknown key {raw_key!r} (known keys: {known})")
        if not setting.accepts(value):
            raise ConfigError(f"{source}: {raw_key} must be {setting.expected()}, not {value!r}")
        if setting.kind == "list":
            value = tuple(value)
        elif setting.file:
            value = os.path.join(root, value)
        found[setting.name] = value
    return found


def declare(root: Path, overrides: Mapping[str, Any], *, found_by: str = "given") -> Declaration:
    """Combine the config file at ``root`` with ``overrides`` (flags win; None means not given); what
    neither says comes from the profile (:mod:`catalytic.profiles`). ``found_by``: how ``root`` was found
    (recorded in the ledger)."""
    if not root.is_dir():
        raise DeclarationError([Problem("BAD_ROOT", f"workspace root {str(root)!r} is not a directory")])
    settings = load_config(root)
    for key, value in overrides.items():
        setting = settings_table.BY_NAME[key]
        if value is not None and setting.kind == "int" and not setting.accepts(value):
            raise UsageError(f"{key} must be {setting.expected()}, not {value!r}")
    settings.update({k: v for k, v in overrides.items() if v is not None})
    name = settings.get("profile")
    if name is not None and name not in profiles.PROFILES:
        raise ConfigError(f"profile {name!r} is not one of {', '.join(profiles.PROFILE_NAMES)}")
    profile = profiles.choose(root, name)
    defaults = {
        "profile": profile.name,
        "runs_root": profile.runs_root,
        "allowed_roots": profile.allowed_roots,
        "forbidden_paths": profile.forbidden_paths,
        "found_by": found_by,
    }
    fields: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in settings.items()}
    return Declaration(root=Path(os.path.abspath(root)))._replace(**{**defaults, **fields})


def left_out(policy: Policy, domain: str) -> list[str]:
    """What the snapshots of ``domain`` leave out, with everything below (workspace-relative paths): the
    runs root and ``.git`` when they lie inside it, and under overlay the declared outputs inside it
    instead of ``.git`` (:func:`left_out_of`). Recorded in RUN_INFO (``left_out``)."""
    overlay = policy.isolation == "overlay"
    return left_out_of(domain, policy.runs_root, policy.durable_outputs if overlay else None)


def left_out_of(domain: str, runs_root: str, overlay_outputs: Sequence[str] | None = None) -> list[str]:
    """The rule of :func:`left_out`: ``overlay_outputs`` is None unless the run is an overlay run, whose
    declared outputs are left out and whose ``.git`` stays in (read-only there: a write to it is an
    undeclared write). Rollback never puts anything back where this leaves out."""
    inside = [*(overlay_outputs or ()), runs_root, *(ALWAYS_FORBIDDEN if overlay_outputs is None else ())]
    return list(dict.fromkeys(p for p in inside if paths.is_within(p, domain) and p != domain))


def left_out_within(policy: Policy, domain: str) -> list[str]:
    """:func:`left_out` relative to ``domain`` (as the paths of its snapshots are)."""
    return relative_to(domain, left_out(policy, domain))


def relative_to(domain: str, found: Sequence[str]) -> list[str]:
    """Workspace-relative paths inside ``domain``, made relative to it."""
    depth = len(paths.parts(domain))
    return ["/".join(paths.parts(p)[depth:]) for p in found]


def generate_run_id() -> str:
    """A run id that sorts by time: ``YYYYMMDDTHHMMSSffffffZ-xxxxxx``."""
    from catalytic._sysinfo import utc_compact

    return f"{utc_compact()}Z-{os.urandom(3).hex()}"


def _normalise(
    root: Path, values: Sequence[str], what: str, problems: list[Problem], *, resolve: bool
) -> tuple[str, ...]:
    result: list[str] = []
    for value in values:
        func = paths.resolve if resolve else paths.lexical
        rel, problem = func(root, value, what=what)
        if problem is not None:
            problems.append(problem)
        elif rel is not None:
            result.append(rel)
    return tuple(result)


def runs_root_problem(root: Path, runs_root: str) -> str | None:
    """Why the runs root ``runs_root`` (relative to ``root``) cannot hold ledgers, or None.

    A runs root that does not exist yet is fine (the first run creates it) unless what would be its
    parent is not a directory; one that exists must be a directory whose chain and chain lock, if
    present, are regular files (see :data:`catalytic.ledger.format.CHAIN_FILE`).
    """
    path = root / runs_root
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        what = "is" if probe == path else f"cannot be created: {str(probe)!r} is"
        return f"runs root {runs_root!r} {what} not a directory"
    if probe != path:
        return None
    for name in (fmt.CHAIN_FILE, fmt.CHAIN_LOCK):
        try:
            mode = os.lstat(path / name).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            return f"runs root {runs_root!r}: {name} cannot be read: {exc.strerror}"
        if not stat.S_ISREG(mode):
            return f"runs root {runs_root!r}: {name} is not a regular file (catalytic keeps its own there)"
    return None


def _runs_root(root: Path, value: str, forbidden: Sequence[str], problems: list[Problem]) -> str | None:
    """The runs root's rule, for every command: inside the workspace (symlinks resolved), not the workspace
    root itself, clear of the forbidden paths. Its canonical relative path, or None (see ``problems``)."""
    found = _normalise(root, (value,), "runs root", problems, resolve=True)
    if not found:
        return None
    runs_root = found[0]
    if runs_root == paths.ROOT:
        problems.append(Problem("BAD_PATH", "the runs root cannot be the workspace root itself"))
    for bad in forbidden:
        if paths.overlaps(runs_root, bad):
            problems.append(Problem("FORBIDDEN", f"runs root {runs_root!r} overlaps forbidden path {bad!r}"))
    broken = runs_root_problem(root, runs_root)
    if broken is not None:
        problems.append(Problem("BAD_RUNS_ROOT", broken))
    return runs_root


def checked_runs_root(decl: Declaration) -> Path:
    """The runs root of a declaration, checked by the rule :func:`preflight` applies (for the commands that
    change a runs root without running anything: ``gc``, ``restore``); raises :class:`DeclarationError`."""
    problems: list[Problem] = []
    forbidden = _normalise(
        decl.root, (*decl.forbidden_paths, *ALWAYS_FORBIDDEN), "forbidden path", problems, resolve=False
    )
    runs_root = _runs_root(decl.root, decl.runs_root, forbidden, problems)
    if problems or runs_root is None:
        raise DeclarationError(problems)
    return decl.root / runs_root


def _check_domains_exist(
    root: Path, decl: Declaration, domains: Sequence[str], problems: list[Problem]
) -> None:
    """No domain, or a domain that does not exist, proves nothing: an error unless the user opted in
    (a misspelt domain would otherwise "pass" while the command writes the real directory)."""
    if not decl.catalytic_domains and not decl.allow_no_domains:
        problems.append(
            Problem(
                "NO_DOMAINS",
                "no catalytic domain declared: the run would prove nothing "
                "(declare one with --catalytic-domains, or pass --allow-no-domains)",
            )
        )
    if decl.allow_absent:
        return
    for domain in domains:
        if not os.path.lexists(root / domain):
            problems.append(
                Problem(
                    "ABSENT",
                    f"catalytic domain {domain!r} does not exist "
                    "(create it, fix the name, or pass --allow-absent if it may not exist yet)",
                )
            )


def preflight(decl: Declaration) -> Policy:
    """Check a declaration against CMP-01; return the policy or raise with every problem."""
    problems: list[Problem] = []
    root = decl.root
    run_id = decl.run_id if decl.run_id is not None else generate_run_id()
    isolation, isolation_reason = _check_values(decl, run_id, problems)

    allowed = _normalise(root, decl.allowed_roots, "allowed root", problems, resolve=False)
    forbidden = _normalise(
        root, (*decl.forbidden_paths, *ALWAYS_FORBIDDEN), "forbidden path", problems, resolve=False
    )
    forbidden = tuple(dict.fromkeys(forbidden))
    domains = _normalise(root, decl.catalytic_domains, "catalytic domain", problems, resolve=True)
    outputs = _normalise(root, decl.durable_outputs, "durable output", problems, resolve=True)
    _check_domains_exist(root, decl, domains, problems)
    found_root = _runs_root(root, decl.runs_root, forbidden, problems)
    runs_root = found_root if found_root is not None else decl.runs_root
    # Under overlay a domain may contain forbidden paths, the runs root and declared outputs: nothing
    # the command writes reaches the real tree, forbidden paths are read-only (a write to them is an
    # undeclared write) and the runs root and outputs are left out of the domain's snapshot. In every
    # mode a domain may contain the runs root and .git: they are left out of its snapshots (left_out).
    wide = isolation == "overlay"
    _check_domains(domains, outputs, forbidden, found_root, wide, problems)
    _check_outputs(outputs, allowed, forbidden, found_root, run_id, problems)
    if found_root is not None:
        ledger = root / runs_root / run_id
        if not problems and os.path.lexists(ledger):
            problems.append(Problem("EXISTS", f"a ledger for run id {run_id!r} already exists at {ledger}"))
    excludes = _excludes(decl, domains, problems)
    if problems:
        raise DeclarationError(problems)
    return Policy(
        root=root,
        run_id=run_id,
        catalytic_domains=domains,
        durable_outputs=outputs,
        intent=decl.intent,
        determinism=decl.determinism,
        allowed_roots=allowed,
        forbidden_paths=forbidden,
        runs_root=runs_root,
        hash=decl.hash,
        isolation=isolation,
        isolation_requested=decl.isolation,
        isolation_reason=isolation_reason,
        trace=decl.trace,
        trace_scope=decl.trace_scope,
        trace_backend=decl.trace_backend,
        excludes=excludes,
        exclude_from_gitignore=decl.exclude_from_gitignore,
        allow_missing_outputs=decl.allow_missing_outputs,
        profile=decl.profile,
        found_by=decl.found_by,
    )


def _check_values(decl: Declaration, run_id: str, problems: list[Problem]) -> tuple[str, str | None]:
    """The rules of the declaration's single values: run id, determinism, isolation (resolved: ``auto``
    picks a backend; returned with the reason), tracing, hash."""
    if not valid_run_id(run_id):
        problems.append(Problem("BAD_RUN_ID", f"run id {run_id!r} is not {RUN_ID_RULE}"))
    elif fmt.reserved(run_id):
        problems.append(
            Problem(
                "BAD_RUN_ID",
                f"run id {run_id!r} is reserved: catalytic keeps its own {run_id} in the runs root",
            )
        )
    if decl.determinism not in DETERMINISM_VALUES:
        problems.append(
            Problem(
                "BAD_DETERMINISM",
                f"determinism {decl.determinism!r} is not one of {', '.join(DETERMINISM_VALUES)}",
            )
        )
    isolation, isolation_reason = decl.isolation, None
    if decl.isolation != DEFAULT_ISOLATION:
        from catalytic.isolation import resolve

        try:
            isolation, isolation_reason = resolve(decl.isolation, decl.root)
        except CatalyticError as exc:
            problems.append(Problem(exc.code, exc.message))
    if decl.trace_scope not in CONFIG_KEYS["trace_scope"].choices:
        problems.append(Problem("BAD_TRACE", f"trace scope {decl.trace_scope!r} is not domains or workspace"))
    if decl.trace_backend not in CONFIG_KEYS["trace_backend"].choices:
        problems.append(Problem("BAD_TRACE", f"trace backend {decl.trace_backend!r} is unknown"))
    if decl.hash not in HASH_NAMES:
        problems.append(Problem("BAD_HASH", f"hash {decl.hash!r} is not one of {HASH_NAMES}"))
    return isolation, isolation_reason


def _check_domains(
    domains: Sequence[str],
    outputs: Sequence[str],
    forbidden: Sequence[str],
    runs_root: str | None,
    wide: bool,
    problems: list[Problem],
) -> None:
    """What a catalytic domain may not overlap: another domain, a durable output, the runs root, a
    forbidden path (``wide``, under overlay: it may contain outputs and forbidden paths)."""
    hint = " (allowed inside a domain with --isolation overlay)"
    for i, domain in enumerate(domains):
        for other in domains[i + 1 :]:
            if paths.overlaps(domain, other):
                problems.append(Problem("OVERLAP", f"catalytic domains {domain!r} and {other!r} overlap"))
        for out in outputs:
            if wide and paths.is_within(out, domain) and out != domain:
                continue
            if paths.overlaps(domain, out):
                problems.append(
                    Problem("OVERLAP", f"catalytic domain {domain!r} overlaps durable output {out!r}")
                )
        if runs_root is not None and paths.is_within(domain, runs_root):
            problems.append(
                Problem("OVERLAP", f"catalytic domain {domain!r} overlaps the runs root {runs_root!r}")
            )
        for bad in forbidden:
            if (wide or bad in ALWAYS_FORBIDDEN) and paths.is_within(bad, domain) and bad != domain:
                continue
            if paths.overlaps(domain, bad):
                problems.append(
                    Problem(
                        "FORBIDDEN",
                        f"catalytic domain {domain!r} overlaps forbidden path {bad!r}"
                        + (hint if paths.is_within(bad, domain) and bad != domain else ""),
                    )
                )


def _check_outputs(
    outputs: Sequence[str],
    allowed: Sequence[str],
    forbidden: Sequence[str],
    runs_root: str | None,
    run_id: str,
    problems: list[Problem],
) -> None:
    """Where a durable output may be: under an allowed root, off the forbidden paths and this run's ledger,
    apart from every other output."""
    for out in outputs:
        if not any(paths.is_within(out, a) for a in allowed):
            problems.append(
                Problem(
                    "NOT_ALLOWED",
                    f"durable output {out!r} is not under an allowed root "
                    f"({', '.join(allowed) or 'none declared'})",
                )
            )
        for bad in forbidden:
            if paths.overlaps(out, bad):
                problems.append(
                    Problem("FORBIDDEN", f"durable output {out!r} overlaps forbidden path {bad!r}")
                )
        if runs_root is not None and paths.is_within(out, paths.join(runs_root, run_id)):
            problems.append(Problem("OVERLAP", f"durable output {out!r} is inside this run's ledger"))
    for i, out in enumerate(outputs):
        for other in outputs[i + 1 :]:
            if paths.overlaps(out, other):
                problems.append(Problem("OVERLAP", f"durable outputs {out!r} and {other!r} overlap"))


def _excludes(decl: Declaration, domains: Sequence[str], problems: list[Problem]) -> tuple[str, ...]:
    """The run's exclude patterns (the root's ``.gitignore`` lines first when asked for, then the declared
    ones: a later pattern wins), checked: each one usable, no domain left out whole."""
    if not decl.exclude and not decl.exclude_from_gitignore:
        return ()
    from catalytic import excludes

    sources: list[tuple[str, str]] = []
    if decl.exclude_from_gitignore:
        try:
            sources.extend((line, excludes.GITIGNORE) for line in excludes.gitignore_patterns(decl.root))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem("BAD_EXCLUDE", f"{excludes.GITIGNORE} cannot be read: {exc}"))
    sources.extend((pattern, "exclude") for pattern in decl.exclude)
    found: list[str] = []
    for pattern, source in sources:
        why = excludes.pattern_problem(pattern)
        if why is not None:
            problems.append(Problem("BAD_EXCLUDE", f"{source} pattern {pattern!r} {why}"))
        else:
            found.append(pattern)
    for domain in domains:
        hit = excludes.excluded_parent(found, domain)
        if hit is not None:
            problems.append(
                Problem("BAD_EXCLUDE", f"catalytic domain {domain!r} is excluded whole (by its path {hit!r})")
            )
    return tuple(found)
