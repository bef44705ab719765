"""The validator: re-check a run ledger offline, reporting every broken rule with a stable code.

``CatalyticLedgerValidator(run_dir).validate()`` returns ``(passed, report)``; it never prints, never
exits and never raises on a hostile ledger (anything unexpected becomes an ``INTERNAL`` error entry).
A ledger passes only when every file is present, parses, matches its schema, agrees with the others,
proves that every catalytic domain was restored, and every output is still what the ledger recorded.

The four large documents (PRE/POST_MANIFEST, PRE/POST_MODES) are checked entry by entry by one set of rules
(:mod:`catalytic.ledger.entries`) reading sorted batches of entries: streamed a block at a time when the
documents are canonical, so memory does not grow with the number of entries; parsed whole (which says what
is wrong with them) and cut into the same batches otherwise. Both give the same report.

Error codes:

=================  ==============================================================================
NOT_FOUND          the run directory does not exist or is not a directory
BAD_FILE           a ledger file (or the run directory) is a symlink, not a regular file, or unreadable
MISSING_FILE       a required ledger file is missing (the MODES files only for ``catalytic.ledger/1``)
INCOMPLETE         ``STATUS.json`` is missing: the run never finished
BAD_JSON           a file is not strict JSON (bad UTF-8, truncated, duplicate keys, NaN)
SCHEMA             a file does not match its JSON Schema (the message has the JSON path)
NOT_CANONICAL      a ``catalytic.ledger/1`` file is not canonical JSON, or OUTPUTS is not sorted
BAD_PATH           a domain, manifest or output path is unsafe (absolute, ``..``, NUL, backslash)
RUN_ID_MISMATCH    ``RUN_INFO.run_id`` is not the name of the run directory
DOMAIN_MISMATCH    the domains of RUN_INFO, the manifests and RESTORE_DIFF disagree
MODES_MISMATCH     a MODES file does not describe the entries of its manifest
NOT_VERIFIED       a declared domain has no before/after snapshot or no diff
DIFF_MISMATCH      RESTORE_DIFF is not the diff recomputed from the manifests and modes
NOT_RESTORED       a domain's diff is not empty
STATUS_MISMATCH    STATUS claims something the rest of the ledger contradicts
DIRTY              STATUS says the run is dirty
INTERRUPTED        the run was stopped by a signal
NOT_ALLOWED        an output (or declared output) is not under an allowed root
UNDECLARED         an output is not under any declared durable output
OUTPUT_UNLISTED    a declared output is neither in OUTPUTS nor in RUN_INFO.missing_outputs
OUTPUT_MISSING     an output no longer exists in the workspace
OUTPUT_CHANGED     an output's type, sha256 or symlink target differs from the ledger
MERKLE_MISMATCH    a Merkle root in RUN_INFO is not the one recomputed from the manifest and modes
DIGEST_*           the ledger's seal (``LEDGER_DIGEST.json``) does not match its files, is malformed,
                   or is missing although required (see :mod:`catalytic.ledger.integrity`)
SIGNATURE_*        ``SIGNATURE.json`` is missing or does not verify with a trusted key
UNCHAINED          the runs root has a ``LEDGER.jsonl`` that does not name the run (never sealed there)
CHAIN_DIGEST       the chain's digest for the run differs from the ledger's
OUTPUT_ESCAPED     a path component of an output (its allowed root, a parent) is a symlink
COMMAND_FAILED     the command did not succeed: its exit code is not 0 (it failed, was not found or could
                   not be executed); off with ``allow_command_failure``
OUTPUT_NOT_PRODUCED a declared output is in RUN_INFO.missing_outputs and the run did not allow it
                   (RUN_INFO.allow_missing_outputs); off with ``allow_missing_outputs``
LEFT_OUT           ``RUN_INFO.left_out`` names a path the snapshots may not leave out (only the runs root and
                   ``.git`` inside a domain, and under overlay the declared outputs inside it), or omits one
INTERNAL           the validator itself failed (a bug: please report it)
=================  ==============================================================================
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from catalytic import paths
from catalytic.errors import Problem
from catalytic.ledger import format as fmt
from catalytic.ledger.canonical import encode
from catalytic.ledger.checks import check_merkle, check_restoration, check_status
from catalytic.ledger.entries import LARGE, EntryFacts, entry_pass, path_problem
from catalytic.ledger.integrity import check_chained, check_seal, unchained
from catalytic.ledger.reader import (
    MAX_LEDGER_BYTES,
    SCHEMAS,
    LedgerFile,
    open_dir,
    open_ledger_file,
    outputs_on_disk,
    read_ledger_file,
    schema_problems,
)
from catalytic.ledger.stream import Batch, Kind, NotStreamable, document_batches, read_batches
from catalytic.profiles import SEED

if TYPE_CHECKING:
    from catalytic.integrations.signing import PublicKey

#: Where durable outputs may go when neither the caller nor RUN_INFO says: the seed's ledgers record no
#: allowed roots (nor a runs root), they had the seed's profile.
SEED_ALLOWED_ROOTS = SEED.allowed_roots

_V1_STATUS_KEYS = ("run_id", "exit_code", "interrupted", "reason", "error")


def _kind(name: str) -> Kind:
    return "modes" if name in (fmt.PRE_MODES, fmt.POST_MODES) else "manifest"


class ErrorEntry(TypedDict):
    """One broken rule: a stable code and a message naming the file."""

    code: str
    message: str


class SupersededEntry(TypedDict):
    """An output of this run not compared with the disk: a later run (``by``) produced it again."""

    path: str
    by: str


class ValidationReport(TypedDict):
    """What ``validate()`` found; canonical-JSON serialisable."""

    run_dir: str
    run_id: str
    intent: str | None
    exit_code: int | None
    outputs: int
    status: str | None
    passed: bool
    errors: list[ErrorEntry]
    superseded: list[SupersededEntry]


def _str_list(value: Any) -> list[str] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _normalise_root(root: str) -> str:
    stripped = root.rstrip("/")
    return stripped or paths.ROOT


class CatalyticLedgerValidator:
    """Re-checks one run ledger directory offline (see the module docstring for the error codes).

    ``root`` is the workspace the outputs are checked in (default: derived from the run directory and
    ``RUN_INFO.runs_root``, else the current directory). ``allowed_roots`` overrides the ledger's.
    ``chain_beside``: in a runs root with a ``LEDGER.jsonl``, the run must be in it and still carry the
    seal it records (off when the caller checks the whole chain itself: ``chain_known`` then names the
    runs that chain knows, None when there is no chain). ``superseded`` maps output paths to the later run
    that produced them again (see :func:`latest_producers`): those are not compared with the disk.
    A run whose command did not exit 0 fails (COMMAND_FAILED) unless ``allow_command_failure``; a declared
    output the run did not produce fails (OUTPUT_NOT_PRODUCED) unless the run or ``allow_missing_outputs``
    allows it.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        root: str | os.PathLike[str] | None = None,
        check_outputs: bool = True,
        allowed_roots: Sequence[str] | None = None,
        trusted_keys: Sequence[PublicKey] = (),
        require_seal: bool = False,
        chain_beside: bool = True,
        chain_known: Collection[str] | None = None,
        superseded: Mapping[str, str] | None = None,
        allow_command_failure: bool = False,
        allow_missing_outputs: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.superseded = dict(superseded or {})
        self.allow_command_failure = allow_command_failure
        self.allow_missing_outputs = allow_missing_outputs
        self._skipped: list[SupersededEntry] = []
        self.chain_beside = chain_beside
        self.chain_known = chain_known
        self.trusted_keys = tuple(trusted_keys)
        self.require_seal = require_seal
        self.root = Path(root) if root is not None else None
        self.check_outputs = check_outputs
        self.allowed_roots = tuple(allowed_roots) if allowed_roots is not None else None
        self._docs: dict[str, Any] = {}
        self._parsed: dict[str, Any] = {}
        self._outputs_count = 0
        self._facts: EntryFacts | None = None
        #: Whether the last ``validate()`` read the large documents in one streamed pass.
        self.streamed = False

    def validate(self) -> tuple[bool, ValidationReport]:
        """Check everything; return whether the ledger passes and the full report."""
        problems: list[Problem] = []
        self._docs = {}
        self._parsed = {}
        self._outputs_count = 0
        self._facts = None
        self._skipped = []
        self.streamed = False
        try:
            self._validate(problems)
        except Exception as exc:  # a hostile ledger must never become a traceback
            problems.append(Problem("INTERNAL", f"validator failed: {type(exc).__name__}: {exc}"))
        # Parsed but schema-invalid documents still fill in what they can of the report.
        info = self._parsed.get(fmt.RUN_INFO)
        status = self._parsed.get(fmt.STATUS)
        info = info if isinstance(info, dict) else {}
        status = status if isinstance(status, dict) else {}
        run_id = info.get("run_id")
        exit_code = info.get("exit_code")
        report: ValidationReport = {
            "run_dir": str(self.run_dir),
            "run_id": run_id if isinstance(run_id, str) else Path(os.path.abspath(self.run_dir)).name,
            "intent": info["intent"] if isinstance(info.get("intent"), str) else None,
            "exit_code": exit_code if type(exit_code) is int else None,
            "outputs": self._outputs_count,
            "status": status["status"] if isinstance(status.get("status"), str) else None,
            "passed": not problems,
            "errors": [{"code": p.code, "message": p.message} for p in problems],
            "superseded": self._skipped,
        }
        return not problems, report

    # -- reading -------------------------------------------------------------------------------

    def _validate(self, problems: list[Problem]) -> None:
        abs_dir = Path(os.path.abspath(self.run_dir))
        if abs_dir.is_symlink():
            problems.append(Problem("BAD_FILE", f"run directory {str(self.run_dir)!r} is a symbolic link"))
            return
        if not abs_dir.is_dir():
            problems.append(Problem("NOT_FOUND", f"run directory {str(self.run_dir)!r} does not exist"))
            return
        try:
            dir_fd = open_dir(abs_dir)
        except OSError as exc:
            problems.append(Problem("BAD_FILE", f"run directory cannot be opened: {exc.strerror}"))
            return
        found: dict[str, list[Problem]] = {name: [] for name in SCHEMAS}
        try:
            files = {name: read_ledger_file(dir_fd, name) for name in SCHEMAS if name not in LARGE}
            info_file = files[fmt.RUN_INFO]
            info = info_file.document if isinstance(info_file.document, dict) else None
            v1 = info is not None and "schema_version" in info
            for name, loaded in files.items():
                self._accept(loaded, v1, found[name])
            self._facts = self._stream(dir_fd, v1)
            if self._facts is None:
                # Not canonical (or missing, or unreadable): parsed whole, which says exactly why, and
                # what is schema-valid goes through the same rules in the same batches.
                for name in LARGE:
                    self._accept(read_ledger_file(dir_fd, name), v1, found[name])
                sources = {name: self._whole_batches(name) for name in LARGE}
                self._facts = entry_pass(sources, v1, self._docs)
            else:
                self.streamed = True
                for name in LARGE:
                    self._docs[name] = self._facts.stand_in(name)
        finally:
            os.close(dir_fd)
        for name in SCHEMAS:
            problems.extend(found[name])
        self._check(abs_dir, v1, problems)
        sealed = check_seal(abs_dir, trusted_keys=self.trusted_keys, require_digest=self.require_seal)
        problems.extend(sealed)
        if self.chain_beside:
            problems.extend(p for p in check_chained(abs_dir) if p.code not in {q.code for q in sealed})
        elif self.chain_known is not None and abs_dir.name not in self.chain_known:
            problems.append(unchained(abs_dir.name))

    def _whole_batches(self, name: str) -> Iterator[Batch] | None:
        document = self._docs.get(name)
        return document_batches(document) if document is not None else None

    def _stream(self, dir_fd: int, v1: bool) -> EntryFacts | None:
        """The pass over the large documents streamed, or None when one of them is not canonical."""

        fds: dict[str, int] = {}
        try:
            for name in LARGE:
                fd = open_ledger_file(dir_fd, name)
                if isinstance(fd, LedgerFile):
                    return None
                fds[name] = fd
            sources = {name: read_batches(fd, _kind(name), MAX_LEDGER_BYTES) for name, fd in fds.items()}
            return entry_pass(sources, v1, self._docs)
        except NotStreamable:
            return None
        finally:
            for fd in fds.values():
                os.close(fd)

    def _accept(self, loaded: LedgerFile, v1: bool, problems: list[Problem]) -> None:
        name = loaded.name
        if loaded.problem is not None:
            if loaded.problem.code != "MISSING_FILE":
                problems.append(loaded.problem)
            elif name == fmt.STATUS:
                problems.append(Problem("INCOMPLETE", f"{name} is missing: the run never finished"))
            elif name in fmt.OPTIONAL_FILES:
                pass  # optional documents (WRITE_LOG.json) are checked only when present
            elif name not in (fmt.PRE_MODES, fmt.POST_MODES) or v1:
                # Seed ledgers have no MODES files: they are required only from catalytic.ledger/1 on.
                problems.append(loaded.problem)
            return
        found = schema_problems(loaded.document, SCHEMAS[name], name)
        if v1 and name == fmt.STATUS and isinstance(loaded.document, dict):
            found += [
                Problem("SCHEMA", f"{name} at $: {key!r} is required by {fmt.SCHEMA_VERSION}")
                for key in _V1_STATUS_KEYS
                if key not in loaded.document
            ]
        problems.extend(found)
        if v1 and not found and loaded.raw != encode(loaded.document):
            problems.append(Problem("NOT_CANONICAL", f"{name} is not in canonical JSON form"))
        if name == fmt.OUTPUTS and isinstance(loaded.document, list):
            self._outputs_count = len(loaded.document)
        self._parsed[name] = loaded.document
        if not found:
            # Only schema-valid documents feed the cross-checks, so one broken file is one error.
            self._docs[name] = loaded.document

    # -- cross-checks ----------------------------------------------------------------------------

    def _check(self, abs_dir: Path, v1: bool, problems: list[Problem]) -> None:
        docs = self._docs
        info: dict[str, Any] | None = docs.get(fmt.RUN_INFO)
        if info is not None:
            if info["run_id"] != abs_dir.name:
                problems.append(
                    Problem(
                        "RUN_ID_MISMATCH",
                        f"{fmt.RUN_INFO}: run_id {info['run_id']!r} is not the directory {abs_dir.name!r}",
                    )
                )
            for domain in info["catalytic_domains"]:
                why = path_problem(domain, workspace=True)
                if why:
                    problems.append(Problem("BAD_PATH", f"{fmt.RUN_INFO}: catalytic domain {domain!r} {why}"))
            self._check_command(info, problems)
            self._check_left_out(info, problems)
        assert self._facts is not None
        proof = check_restoration(docs, problems, self._facts)
        check_merkle(docs, problems, self._facts)
        check_status(docs, proof, problems)
        self._check_outputs(abs_dir, v1, problems)

    def _check_command(self, info: dict[str, Any], problems: list[Problem]) -> None:
        """A run proves something only about a command that succeeded (an interrupted one fails already)."""
        code = info.get("exit_code")
        if self.allow_command_failure or code == 0 or info.get("interrupted") is True:
            return
        what = "recorded no exit code" if code is None else f"exited {code!r}"
        if code == 127:
            what += " (command not found)"
        elif code == 126:
            what += " (command could not be executed)"
        problems.append(Problem("COMMAND_FAILED", f"{fmt.RUN_INFO}: the command {what}"))

    def _check_left_out(self, info: dict[str, Any], problems: list[Problem]) -> None:
        """What the snapshots left out is exactly what the rule lets them (a ledger cannot hide a change by
        claiming its path was left out). Ledgers before ``left_out`` existed have no such key."""
        recorded = info.get("left_out")
        runs_root = info.get("runs_root")
        if not isinstance(recorded, dict) or not isinstance(runs_root, str):
            return
        from catalytic.policy import left_out_of

        overlay = info.get("isolation") == "overlay"
        outputs = (_str_list(info.get("durable_outputs")) or []) if overlay else None
        domains = info["catalytic_domains"]
        for domain in sorted(set(recorded) - set(domains)):
            problems.append(Problem("LEFT_OUT", f"{fmt.RUN_INFO}: left_out names {domain!r}, not a domain"))
        for domain in domains:
            expected = left_out_of(domain, runs_root, outputs)
            got = recorded.get(domain, [])
            if sorted(got) != sorted(expected):
                problems.append(
                    Problem(
                        "LEFT_OUT",
                        f"{fmt.RUN_INFO}: left_out of {domain!r} is {got!r}; the snapshots leave out "
                        f"{expected!r} and nothing else",
                    )
                )

    def _allowed(self) -> tuple[str, ...]:
        if self.allowed_roots is not None:
            return tuple(_normalise_root(r) for r in self.allowed_roots)
        info = self._parsed.get(fmt.RUN_INFO)
        declared = _str_list(info.get("allowed_roots")) if isinstance(info, dict) else None
        if declared is not None:
            return tuple(_normalise_root(r) for r in declared)
        return SEED_ALLOWED_ROOTS

    def workspace_root(self, abs_dir: Path) -> Path:
        """Where outputs are checked: ``root``, else derived from ``runs_root``, else the cwd."""
        if self.root is not None:
            return self.root
        info = self._parsed.get(fmt.RUN_INFO)
        runs_root = info.get("runs_root", SEED.runs_root) if isinstance(info, dict) else None
        if isinstance(runs_root, str) and path_problem(runs_root, workspace=True) is None:
            segments = paths.parts(runs_root)
            k = len(segments)
            parent = abs_dir.parent
            if len(abs_dir.parents) > k and (k == 0 or parent.parts[-k:] == segments):
                return abs_dir.parents[k]
        return Path.cwd()

    def _check_outputs(self, abs_dir: Path, v1: bool, problems: list[Problem]) -> None:
        info = self._docs.get(fmt.RUN_INFO)
        outputs: list[dict[str, Any]] | None = self._docs.get(fmt.OUTPUTS)
        allowed = self._allowed()
        declared: list[str] = []
        if info is not None:
            for key in ("durable_output_roots", "durable_outputs"):
                for out in _str_list(info.get(key)) or []:
                    if out not in declared:
                        declared.append(out)
        for out in declared:
            why = path_problem(out, workspace=True)
            if why:
                problems.append(Problem("BAD_PATH", f"{fmt.RUN_INFO}: declared output {out!r} {why}"))
            elif not any(paths.is_within(out, r) for r in allowed):
                problems.append(
                    Problem(
                        "NOT_ALLOWED", f"{fmt.RUN_INFO}: declared output {out!r} is not under {list(allowed)}"
                    )
                )
        if outputs is None:
            return
        listed = [r["path"] for r in outputs]
        if v1 and listed != sorted(listed, key=paths.sort_key):
            problems.append(Problem("NOT_CANONICAL", f"{fmt.OUTPUTS} is not sorted by path"))
        missing = _str_list(info.get("missing_outputs")) if info is not None else None
        excused = self.allow_missing_outputs or (info is not None and info.get("allow_missing_outputs"))
        if missing and not excused:
            problems.append(
                Problem(
                    "OUTPUT_NOT_PRODUCED",
                    f"{fmt.RUN_INFO}: declared output(s) not produced: {', '.join(missing)}",
                )
            )
        if missing is not None:
            for out in declared:
                if (out in listed) == (out in missing):
                    which = "both" if out in listed else "neither"
                    lists = f"{fmt.OUTPUTS} and RUN_INFO.missing_outputs"
                    message = f"declared output {out!r} is in {which} {lists}"
                    problems.append(Problem("OUTPUT_UNLISTED", message))
        seen: set[str] = set()
        safe: list[dict[str, Any]] = []
        for record in outputs:
            path = record["path"]
            if path in seen:
                problems.append(Problem("SCHEMA", f"{fmt.OUTPUTS}: {path!r} is listed twice"))
                continue
            seen.add(path)
            why = path_problem(path, workspace=True)
            if why:
                problems.append(Problem("BAD_PATH", f"{fmt.OUTPUTS}: output {path!r} {why}"))
                continue
            if not any(paths.is_within(path, r) for r in allowed):
                problems.append(
                    Problem("NOT_ALLOWED", f"{fmt.OUTPUTS}: output {path!r} is not under {list(allowed)}")
                )
            if info is not None and not any(paths.is_within(path, d) for d in declared):
                problems.append(
                    Problem("UNDECLARED", f"{fmt.OUTPUTS}: output {path!r} is not under a declared output")
                )
            safe.append(record)
        if not self.check_outputs:
            return
        from catalytic.outputs import escape

        root = self.workspace_root(abs_dir)
        escaped = []
        for out in declared:
            if path_problem(out, workspace=True) is None and (why := escape(root, out, allowed)):
                problems.append(Problem("OUTPUT_ESCAPED", why))
                escaped.append(out)
        # An escaped output is never followed: its records are not compared with what lies beyond.
        safe = [r for r in safe if not any(paths.is_within(r["path"], out) for out in escaped)]
        # An output a later run produced again is that run's to vouch for, not this one's.
        later = self.superseded
        self._skipped = [{"path": r["path"], "by": later[r["path"]]} for r in safe if r["path"] in later]
        safe = [r for r in safe if r["path"] not in self.superseded]
        if safe:
            problems.extend(outputs_on_disk(root, safe))


# -- restoration and STATUS: pure functions over the schema-valid documents ---------------------------


def latest_producers(run_dirs: Sequence[Path]) -> dict[Path, dict[str, str]]:
    """For each run, the outputs it records that a later run produced again: ``{path: later run id}``.

    Runs are ordered by ``RUN_INFO.timestamp``, then run id. For each output path, the latest run whose
    record of it does not say ``"produced": false`` is the one whose record is compared with the disk (the
    latest run that recorded the path, when none produced it); every other run's record of that path is
    superseded by it. Unreadable documents are skipped here: the validator reports them.
    """
    from catalytic.ledger.reader import open_dir, read_ledger_file

    order: list[tuple[str, str, Path, list[tuple[str, bool]]]] = []
    for run_dir in run_dirs:
        try:
            dir_fd = open_dir(Path(os.path.abspath(run_dir)))
        except OSError:
            continue
        try:
            info = read_ledger_file(dir_fd, fmt.RUN_INFO).document
            outputs = read_ledger_file(dir_fd, fmt.OUTPUTS).document
        finally:
            os.close(dir_fd)
        stamp = info.get("timestamp") if isinstance(info, dict) else None
        records = [
            (r["path"], r.get("produced") is not False)
            for r in (outputs if isinstance(outputs, list) else [])
            if isinstance(r, dict) and isinstance(r.get("path"), str)
        ]
        order.append((stamp if isinstance(stamp, str) else "", Path(run_dir).name, Path(run_dir), records))
    order.sort(key=lambda item: (item[0], item[1]))
    latest: dict[str, str] = {}  # path -> run id whose record counts
    produced_by: dict[str, bool] = {}
    for _stamp, run_id, _dir, records in order:
        for path, produced in records:
            if produced or not produced_by.get(path, False):
                latest[path] = run_id
                produced_by[path] = produced or produced_by.get(path, False)
    result: dict[Path, dict[str, str]] = {}
    for _stamp, run_id, run_dir, records in order:
        result[run_dir] = {path: latest[path] for path, _ in records if latest[path] != run_id}
    return result
