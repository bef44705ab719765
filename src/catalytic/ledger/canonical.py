"""Canonical JSON and atomic writes: everything catalytic puts on disk goes through here.

Canonical form: keys sorted by the raw bytes of their UTF-8 (surrogateescape) encoding, no
insignificant white space except one newline at the end, UTF-8 output. Lone surrogates (names that
were not valid UTF-8 on disk, see :mod:`catalytic.paths`) are written as ``\\udcXX`` escapes so the
file itself is always valid UTF-8. Finite numbers only.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from json.encoder import encode_basestring as _encode_basestring
from pathlib import Path
from typing import Any, BinaryIO

from catalytic import faults
from catalytic.errors import LedgerError
from catalytic.paths import sort_key

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


_SURROGATE = re.compile("[\udc80-\udcff]")


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _string(s: str) -> str:
    text: str = _encode_basestring(s)
    if not s.isascii() and _SURROGATE.search(text):
        text = _SURROGATE.sub(_escape_surrogate, text)
    return text


def json_string(s: str) -> str:
    """The canonical JSON text of one string (the parallel snapshot writes manifests with it)."""
    return _string(s)


def iter_canonical(value: Any) -> Iterator[str]:
    """Yield the canonical JSON text of ``value`` in pieces (so large manifests can stream)."""
    if isinstance(value, str):
        yield _string(value)
    elif value is None or isinstance(value, bool | int | float):
        yield _ENCODER.encode(value)
    elif isinstance(value, dict) and all(type(v) is str for v in value.values()):
        # Manifests and modes: one flat object of strings, by far the largest documents.
        for key in value:
            if type(key) is not str:
                raise TypeError(f"JSON object keys must be strings, not {type(key).__name__}")
        keys = sorted(value, key=sort_key)
        yield "{"
        for start in range(0, len(keys), 4096):
            part = ",".join([_string(k) + ":" + _string(value[k]) for k in keys[start : start + 4096]])
            yield ("," if start else "") + part
        yield "}"
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, not {type(key).__name__}")
        yield "{"
        for i, key in enumerate(sorted(value, key=sort_key)):
            yield ("," if i else "") + _string(key) + ":"
            yield from iter_canonical(value[key])
        yield "}"
    elif isinstance(value, list | tuple):
        yield "["
        for i, item in enumerate(value):
            if i:
                yield ","
            yield from iter_canonical(item)
        yield "]"
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as canonical JSON")


def dumps(value: Any) -> str:
    """Canonical JSON text of ``value``, newline-terminated."""
    return "".join(iter_canonical(value)) + "\n"


def encode(value: Any) -> bytes:
    """Canonical JSON bytes of ``value``."""
    return dumps(value).encode("utf-8")


def loads(data: bytes | str) -> Any:
    """Parse JSON written by :func:`dumps` (or any JSON); surrogate escapes come back as names."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return json.loads(text)


def _write_chunks(out: BinaryIO, chunks: Iterable[str] | Iterable[bytes] | bytes) -> None:
    if isinstance(chunks, bytes):
        out.write(chunks)
        return
    buffer: list[str] = []
    size = 0
    for chunk in chunks:
        if isinstance(chunk, bytes):  # already encoded (a spooled document)
            out.write("".join(buffer).encode("utf-8"))
            buffer.clear()
            size = 0
            out.write(chunk)
            continue
        buffer.append(chunk)
        size += len(chunk)
        if size >= 1 << 16:
            out.write("".join(buffer).encode("utf-8"))
            buffer.clear()
            size = 0
    out.write("".join(buffer).encode("utf-8"))


def _write_unnamed(path: Path, chunks: Iterable[str] | Iterable[bytes] | bytes, mode: int) -> bytes | None:
    """Write an unnamed file (``O_TMPFILE``) and link it in as ``path``.

    Until the link the file has no name, so a crash (even ``SIGKILL``) leaves nothing behind.
    Returns None when done, or the bytes written when this file system cannot link such a file
    (the caller then writes them the classic way).
    """
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return _as_bytes(chunks)
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise LedgerError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        try:
            fd = os.open(".", flag | os.O_RDWR | os.O_CLOEXEC, mode, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                return _as_bytes(chunks)
            raise
        with os.fdopen(fd, "w+b") as out:
            _write_chunks(out, chunks)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
            faults.point("synced")
            try:
                # linkat(AT_SYMLINK_FOLLOW) through /proc gives the unnamed file its name.
                os.link(f"/proc/self/fd/{out.fileno()}", path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOENT, errno.EOPNOTSUPP):
                    raise
                out.seek(0)
                return out.read()
    except FileExistsError:
        raise LedgerError(f"cannot write {path}: it already exists") from None
    except OSError as exc:
        raise LedgerError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(dir_fd)
    return None


def _as_bytes(chunks: Iterable[str] | Iterable[bytes] | bytes) -> bytes:
    if isinstance(chunks, bytes):
        return chunks
    return b"".join(c if isinstance(c, bytes) else c.encode("utf-8") for c in chunks)


def write_atomic(
    path: Path, chunks: Iterable[str] | Iterable[bytes] | bytes, *, mode: int = 0o644, exclusive: bool = False
) -> None:
    """Write ``path`` atomically: temp file in the same directory, fsync, ``os.replace``.

    A crash leaves either the old file (or nothing) or the complete new one, never a torn file.
    With ``exclusive`` the file must not exist yet; where the kernel supports ``O_TMPFILE`` it is
    then written without any temporary name, so not even a ``SIGKILL`` leaves a stray file.
    """
    if exclusive:
        leftover = _write_unnamed(path, chunks, mode)
        if leftover is None:
            return
        chunks = leftover
    directory = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise LedgerError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            _write_chunks(out, chunks)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
            faults.point("synced")
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise LedgerError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise


def write_json(path: Path, value: Any, *, exclusive: bool = False) -> None:
    """Write ``value`` as canonical JSON to ``path`` atomically (see :func:`write_atomic`)."""
    write_atomic(path, _with_newline(iter_canonical(value)), exclusive=exclusive)


def _with_newline(chunks: Iterator[str]) -> Iterator[str]:
    yield from chunks
    yield "\n"


def fsync_dir(path: Path) -> None:
    """Make a directory's entries durable (after creating or renaming files in it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
