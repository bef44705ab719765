"""Canonical JSON and atomic writes: everything catalytic puts on disk goes through here.

Canonical form: keys sorted by the raw bytes of their UTF-8 (surrogateescape) encoding, no
insignificant white space except one newline at the end, UTF-8 output. Lone surrogates (names that
were not valid UTF-8 on disk, see :mod:`catalytic.paths`) are written as ``\\udcXX`` escapes so the
file itself is always valid UTF-8. Finite numbers only.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import math
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from catalytic import faults
from catalytic.errors import LedgerError
from catalytic.paths import sort_key
from catalytic.threads import each_at_once

try:  # the C function behind json.encoder.encode_basestring, without importing the json package
    from _json import encode_basestring as _encode_basestring
except ImportError:  # pragma: no cover - CPython always has _json
    from json.encoder import encode_basestring as _encode_basestring


@functools.cache
def _surrogates() -> re.Pattern[str]:
    # Compiled on first use: most runs never write a name that is not ASCII.
    return re.compile("[\udc80-\udcff]")


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _string(s: str) -> str:
    text: str = _encode_basestring(s)
    if not s.isascii():
        surrogates = _surrogates()
        if surrogates.search(text):
            text = surrogates.sub(_escape_surrogate, text)
    return text


def _scalar(value: bool | int | float | None) -> str:
    """What ``json.dumps(value, allow_nan=False)`` gives for a number, a boolean or None."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if not math.isfinite(value):
        raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")
    return float.__repr__(value)


#: The canonical JSON text of one string (the parallel snapshot writes manifests with it).
json_string = _string


def iter_canonical(value: Any) -> Iterator[str]:
    """Yield the canonical JSON text of ``value`` in pieces (so large manifests can stream)."""
    if isinstance(value, str):
        yield _string(value)
    elif value is None or isinstance(value, bool | int | float):
        yield _scalar(value)
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


#: The deepest nesting :func:`loads` accepts. catalytic's own documents nest at most five levels; a deeper
#: one can only be hostile, and would make every recursive reader of it (schema checks, re-encoding) fail.
MAX_DEPTH = 64


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (JSON has no such number)")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        # 1e400 parses to infinity, which canonical JSON cannot hold.
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        # json.loads keeps the last duplicate silently: a second value could hide the first.
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:80]!r}")
            seen.add(key)
    return result


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects and arrays more than ``limit`` levels deep (without recursing)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def loads(data: bytes | str, *, unique_keys: bool = False) -> Any:
    """Parse JSON (what :func:`dumps` writes, or any JSON); surrogate escapes come back as names.

    The one JSON parser of catalytic, for documents anyone may have edited: whatever the bytes, it
    returns a value or raises ``ValueError`` with a one-line reason, never anything else. Refused:
    invalid UTF-8, ``NaN`` and infinities, numbers out of range, nesting deeper than :data:`MAX_DEPTH`
    and, with ``unique_keys`` (ledgers: a second value could hide the first), a key twice in one object.
    """
    import json

    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not valid UTF-8 at byte {exc.start}") from None
    else:
        text = data
    try:
        value = json.loads(
            text,
            object_pairs_hook=_unique_object if unique_keys else None,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except RecursionError:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep") from None
    # Only a document with that many brackets can be that deep: most are checked by two counts.
    brackets = text.count("[") + text.count("{") if isinstance(value, dict | list) else 0
    if brackets > MAX_DEPTH and _deeper_than(value, MAX_DEPTH):
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
    return value


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


class StagedFile:
    """A file whose bytes are written but neither synced nor named yet (see :func:`stage`).

    Where the kernel supports ``O_TMPFILE`` (and ``exclusive`` was asked for) the file has no name
    at all until :meth:`publish`, so a crash (even ``SIGKILL``) leaves nothing behind; elsewhere it
    is a ``.<name>.<random>.tmp`` file beside its target, removed by :meth:`close` if not published.
    """

    def __init__(self, path: Path, fd: int, tmp: str | None, dir_fd: int | None, mode: int) -> None:
        self.path = path
        self.fd = fd
        self.tmp = tmp
        self.dir_fd = dir_fd
        self.mode = mode
        self.published = False

    def sync(self) -> None:
        """Make the bytes durable (``fsync``); :func:`sync_all` does it for many files at once."""
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise LedgerError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def publish(self) -> None:
        """Give the synced file its name: ``linkat`` of the unnamed file, or rename the temp file."""
        faults.point("synced")
        try:
            if self.tmp is not None:
                os.replace(self.tmp, self.path)
            else:
                assert self.dir_fd is not None
                try:
                    # linkat(AT_SYMLINK_FOLLOW) through /proc gives the unnamed file its name.
                    os.link(
                        f"/proc/self/fd/{self.fd}",
                        self.path.name,
                        src_dir_fd=self.dir_fd,
                        dst_dir_fd=self.dir_fd,
                    )
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOENT, errno.EOPNOTSUPP):
                        raise
                    self._publish_copy()
        except FileExistsError:
            raise LedgerError(f"cannot write {self.path}: it already exists") from None
        except OSError as exc:
            raise LedgerError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self.published = True

    def _publish_copy(self) -> None:
        # This file system cannot link an unnamed file: write the same bytes the classic way.
        parts: list[bytes] = []
        while part := os.pread(self.fd, 1 << 20, sum(map(len, parts))):
            parts.append(part)
        again = stage(self.path, b"".join(parts), mode=self.mode)
        try:
            again.sync()
            again.publish()
        finally:
            again.close()

    def close(self) -> None:
        """Release the descriptors; an unpublished temp file is removed (an unnamed one vanishes)."""
        os.close(self.fd)
        if self.dir_fd is not None:
            os.close(self.dir_fd)
        if self.tmp is not None and not self.published:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)


def stage(
    path: Path, chunks: Iterable[str] | Iterable[bytes] | bytes, *, mode: int = 0o644, exclusive: bool = False
) -> StagedFile:
    """Write ``chunks`` into a new file that will become ``path`` (not synced, not named yet)."""
    staged = _create(path, mode, exclusive)
    try:
        with open(staged.fd, "wb", closefd=False) as out:
            _write_chunks(out, chunks)
        os.fchmod(staged.fd, mode)
    except BaseException as exc:
        staged.close()
        if isinstance(exc, OSError):
            raise LedgerError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
    return staged


def _create(path: Path, mode: int, exclusive: bool) -> StagedFile:
    flag = getattr(os, "O_TMPFILE", 0) if exclusive else 0
    if flag and os.path.isdir("/proc/self/fd"):
        try:
            dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise LedgerError(f"cannot write {path}: {exc.strerror or exc}") from exc
        try:
            fd = os.open(".", flag | os.O_RDWR | os.O_CLOEXEC, mode, dir_fd=dir_fd)
        except OSError as exc:
            os.close(dir_fd)
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise LedgerError(f"cannot write {path}: {exc.strerror or exc}") from exc
        else:
            return StagedFile(path, fd, None, dir_fd, mode)
    fd, tmp = _temp_file(path)
    return StagedFile(path, fd, tmp, None, mode)


def sync_all(files: Sequence[StagedFile]) -> None:
    """``fsync`` every file, concurrently.

    Each ``fsync`` of a new file waits for a journal commit; issued one after the other they cost one
    commit each, issued together a journalling file system (ext4, xfs) groups them into one or two.
    """
    each_at_once(StagedFile.sync, files)


def write_atomic(
    path: Path, chunks: Iterable[str] | Iterable[bytes] | bytes, *, mode: int = 0o644, exclusive: bool = False
) -> None:
    """Write ``path`` atomically: temp file in the same directory, fsync, ``os.replace``.

    A crash leaves either the old file (or nothing) or the complete new one, never a torn file.
    With ``exclusive`` the file must not exist yet; where the kernel supports ``O_TMPFILE`` it is
    then written without any temporary name, so not even a ``SIGKILL`` leaves a stray file.
    """
    staged = stage(path, chunks, mode=mode, exclusive=exclusive)
    try:
        staged.sync()
        staged.publish()
    finally:
        staged.close()


def write_output(path: Path, chunks: Iterable[str] | Iterable[bytes] | bytes) -> None:
    """Write a file the user named: atomically (:func:`write_atomic`) when it is or will be a regular file;
    straight into it when it is a device or a pipe (``-o /dev/null``, a FIFO), which a rename would replace
    by a regular file (as root, even ``/dev/null`` itself)."""
    try:
        special = not stat.S_ISREG(os.stat(path).st_mode) and not stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        special = False
    if not special:
        write_atomic(path, chunks)
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise LedgerError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        pieces = [chunks] if isinstance(chunks, bytes) else chunks
        for piece in pieces:
            data = memoryview(piece.encode("utf-8") if isinstance(piece, str) else piece)
            while data:
                data = data[os.write(fd, data) :]
    except OSError as exc:
        raise LedgerError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def _temp_file(path: Path) -> tuple[int, str]:
    """Create ``.<name>.<random>.tmp`` beside ``path`` exclusively (what ``tempfile.mkstemp`` does,
    without the cost of importing tempfile)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    for _attempt in range(100):
        tmp = os.path.join(path.parent, f".{path.name}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise LedgerError(f"cannot write {path}: {exc.strerror or exc}") from exc
    raise LedgerError(f"cannot write {path}: no free temporary name")  # pragma: no cover


def write_json(path: Path, value: Any, *, exclusive: bool = False) -> None:
    """Write ``value`` as canonical JSON to ``path`` atomically (see :func:`write_atomic`)."""
    write_atomic(path, json_chunks(value), exclusive=exclusive)


def json_chunks(value: Any) -> Iterator[str]:
    """The canonical JSON text of ``value`` with its final newline, in pieces."""
    yield from iter_canonical(value)
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
