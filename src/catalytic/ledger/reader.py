"""Read a run ledger, and the files it names, without trusting anything on disk.

A ledger may have been edited by anyone, so reading it never follows a symbolic link, never blocks on
a FIFO, never reads more than :data:`MAX_LEDGER_BYTES`, and parses JSON strictly: valid UTF-8, no
duplicate keys, no NaN or infinities. Every failure is returned as a :class:`~catalytic.errors.Problem`
(codes ``MISSING_FILE``, ``BAD_FILE``, ``BAD_JSON``, ``SCHEMA``), never raised.

Workspace files named by ``OUTPUTS.json`` are opened one path segment at a time from a descriptor of the
workspace root with ``O_NOFOLLOW``, so a symlink planted anywhere on the way cannot lead the validator
out of the workspace.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from catalytic.errors import DocumentError, Problem
from catalytic.ledger import format as fmt
from catalytic.ledger.canonical import loads

#: Ledger files larger than this are refused rather than read into memory (a manifest of a million
#: entries is about 100 MiB).
MAX_LEDGER_BYTES = 1 << 30
#: At most this many schema errors are listed per file; the rest are counted in one more entry.
MAX_SCHEMA_ERRORS = 100

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class LedgerFile:
    """One ledger file as read: its parsed document, or the problem that stopped the read."""

    name: str
    document: Any = None
    problem: Problem | None = None
    raw: bytes = b""

    @property
    def ok(self) -> bool:
        return self.problem is None


def open_dir(path: os.PathLike[str] | str) -> int:
    """A read-only descriptor of the directory ``path`` (raises OSError)."""
    return os.open(path, os.O_RDONLY | _DIRECTORY | _CLOEXEC)


def parse_json(data: bytes) -> Any:
    """Parse ledger JSON strictly (:func:`~catalytic.ledger.canonical.loads` with unique keys); raises
    ValueError for anything else, including bad UTF-8, NaN and deep nesting."""
    return loads(data, unique_keys=True)


def open_ledger_file(dir_fd: int, name: str, *, max_bytes: int = MAX_LEDGER_BYTES) -> int | LedgerFile:
    """A descriptor of the regular file ``name`` in the ledger directory, or the problem that stops it.

    The caller closes the descriptor. Symbolic links are never followed and FIFOs never block.
    """
    try:
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return LedgerFile(name, problem=Problem("MISSING_FILE", f"{name} is missing"))
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            return LedgerFile(
                name,
                problem=Problem("BAD_FILE", f"{name} is a symbolic link; ledger files are never followed"),
            )
        return LedgerFile(name, problem=Problem("BAD_FILE", f"{name} cannot be opened: {exc.strerror}"))
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        return LedgerFile(name, problem=Problem("BAD_FILE", f"{name} cannot be read: {exc.strerror}"))
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return LedgerFile(name, problem=Problem("BAD_FILE", f"{name} is not a regular file"))
    if st.st_size > max_bytes:
        os.close(fd)
        return LedgerFile(
            name, problem=Problem("BAD_FILE", f"{name} is larger than {max_bytes} bytes; refusing to read it")
        )
    return fd


def read_ledger_file(dir_fd: int, name: str, *, max_bytes: int = MAX_LEDGER_BYTES) -> LedgerFile:
    """Read and parse ``name`` in the ledger directory open as ``dir_fd``."""
    fd = open_ledger_file(dir_fd, name, max_bytes=max_bytes)
    if isinstance(fd, LedgerFile):
        return fd
    try:
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, _CHUNK):
            size += len(chunk)
            if size > max_bytes:
                return LedgerFile(name, problem=Problem("BAD_FILE", f"{name} grew past {max_bytes} bytes"))
            chunks.append(chunk)
    except OSError as exc:
        return LedgerFile(name, problem=Problem("BAD_FILE", f"{name} cannot be read: {exc.strerror}"))
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    try:
        document = parse_json(raw)
    except ValueError as exc:
        return LedgerFile(name, problem=Problem("BAD_JSON", f"{name} is not valid JSON: {exc}"), raw=raw)
    return LedgerFile(name, document=document, raw=raw)


#: The shipped JSON Schema of each ledger document.
SCHEMAS = {
    fmt.RUN_INFO: "run_info.schema.json",
    fmt.PRE_MANIFEST: "manifest.schema.json",
    fmt.POST_MANIFEST: "manifest.schema.json",
    fmt.PRE_MODES: "modes.schema.json",
    fmt.POST_MODES: "modes.schema.json",
    fmt.RESTORE_DIFF: "restore_diff.schema.json",
    fmt.OUTPUTS: "outputs.schema.json",
    fmt.STATUS: "status.schema.json",
    fmt.WRITE_LOG: "write_log.schema.json",
}


def read_document(dir_fd: int, name: str, *, schema: str | None = None, check: bool = True) -> Any:
    """The document ``name`` of the ledger directory open as ``dir_fd``, for a reader that shows or
    exports it: None when it is absent; parsed strictly and, with ``check``, held to its schema (``schema``,
    default :data:`SCHEMAS`), so the caller can rely on its shape.

    Raises :class:`~catalytic.errors.DocumentError` naming the first problem (``catalytic validate``
    lists them all).
    """
    loaded = read_ledger_file(dir_fd, name)
    if loaded.problem is not None:
        if loaded.problem.code == "MISSING_FILE":
            return None
        raise DocumentError(loaded.problem.message, code=loaded.problem.code)
    if check:
        found = schema_problems(loaded.document, schema or SCHEMAS[name], name)
        if found:
            more = f" (and {len(found) - 1} more problems)" if len(found) > 1 else ""
            raise DocumentError(found[0].message + more, code="SCHEMA")
    return loaded.document


@functools.cache
def _validator(schema_name: str) -> Any:
    # jsonschema costs tens of milliseconds to import: only the validator pays for it, never `run`.
    import jsonschema  # type: ignore[import-untyped]

    text = resources.files("catalytic.ledger").joinpath("schemas").joinpath(schema_name).read_text("utf-8")
    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _json_path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f"[{part!r}]"
    return path


def schema_problems(document: Any, schema_name: str, file_name: str) -> list[Problem]:
    """Every way ``document`` breaks the shipped schema ``schema_name``, each with its JSON path."""
    problems: list[Problem] = []
    try:
        errors = _validator(schema_name).iter_errors(document)
        count = 0
        for error in errors:
            count += 1
            if count <= MAX_SCHEMA_ERRORS:
                where = _json_path(error.absolute_path)
                problems.append(Problem("SCHEMA", f"{file_name} at {where}: {_short(error.message)}"))
        if count > MAX_SCHEMA_ERRORS:
            problems.append(
                Problem("SCHEMA", f"{file_name}: {count - MAX_SCHEMA_ERRORS} more schema errors not listed")
            )
    except RecursionError:
        problems.append(Problem("SCHEMA", f"{file_name}: nested too deeply to check"))
    return problems


def _short(message: str, limit: int = 300) -> str:
    # jsonschema quotes the whole offending value; a replaced manifest would flood the report.
    return message if len(message) <= limit else message[: limit - 3] + "..."


OutputKind = Literal["file", "directory", "symlink", "other"]


@dataclass(frozen=True)
class OutputState:
    """What a workspace path is now: its kind and its sha256 (file) or target (symlink)."""

    kind: OutputKind | None
    detail: str = ""
    error: str = ""


def _sha256_fd(fd: int) -> str:
    digest = hashlib.sha256()
    while chunk := os.read(fd, _CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def inspect_output(root_fd: int, rel: str) -> OutputState:
    """The current state of the workspace path ``rel`` (already checked to be safe and relative).

    ``kind`` is None when the path does not exist; ``error`` explains a path that exists but cannot
    be inspected, including one whose parent is a symlink (which is never followed).
    """
    segments = rel.encode("utf-8", "surrogateescape").split(b"/")
    fds: list[int] = []
    try:
        current = root_fd
        for segment in segments[:-1]:
            try:
                current = os.open(segment, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=current)
            except FileNotFoundError:
                return OutputState(None)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    return OutputState("other", error="a parent directory is a symlink or not a directory")
                return OutputState("other", error=f"cannot open a parent directory: {exc.strerror}")
            fds.append(current)
        last = segments[-1]
        try:
            st = os.stat(last, dir_fd=current, follow_symlinks=False)
        except FileNotFoundError:
            return OutputState(None)
        except OSError as exc:
            return OutputState("other", error=f"cannot stat: {exc.strerror}")
        if stat.S_ISDIR(st.st_mode):
            return OutputState("directory")
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(last, dir_fd=current)
            return OutputState("symlink", os.fsdecode(target))
        if not stat.S_ISREG(st.st_mode):
            return OutputState("other")
        try:
            fd = os.open(last, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC, dir_fd=current)
        except OSError as exc:
            return OutputState("other", error=f"cannot open: {exc.strerror}")
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return OutputState("other")
            return OutputState("file", _sha256_fd(fd))
        finally:
            os.close(fd)
    except OSError as exc:
        return OutputState("other", error=f"cannot read: {exc.strerror}")
    finally:
        for fd in reversed(fds):
            os.close(fd)


def outputs_on_disk(root: Path, records: list[dict[str, Any]]) -> list[Problem]:
    """Compare OUTPUTS records (with safe paths) with the workspace ``root``: OUTPUT_MISSING / _CHANGED."""
    try:
        root_fd = open_dir(root)
    except OSError as exc:
        return [Problem("OUTPUT_MISSING", f"workspace root {str(root)!r} cannot be opened: {exc.strerror}")]
    problems: list[Problem] = []
    try:
        for record in records:
            path, kind = record["path"], record["type"]
            state = inspect_output(root_fd, path)
            where = f"OUTPUTS.json: output {path!r}"
            if state.kind is None:
                problems.append(Problem("OUTPUT_MISSING", f"{where} does not exist under {str(root)!r}"))
            elif state.error:
                problems.append(Problem("OUTPUT_CHANGED", f"{where}: {state.error}"))
            elif state.kind != kind:
                problems.append(Problem("OUTPUT_CHANGED", f"{where} was a {kind}, is now a {state.kind}"))
            elif kind == "file" and state.detail != record["sha256"]:
                problems.append(Problem("OUTPUT_CHANGED", f"{where}: sha256 is now {state.detail}"))
            elif kind == "symlink" and state.detail != record["target"]:
                problems.append(Problem("OUTPUT_CHANGED", f"{where}: target is now {state.detail!r}"))
    finally:
        os.close(root_fd)
    return problems
