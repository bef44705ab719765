"""``catalytic diff A B``: compare two manifests, or a manifest and a directory (mtree-style)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from catalytic.cli.output import add_snapshot_options, add_verbosity, printable, snapshot_settings
from catalytic.errors import EXIT_DIRTY, UsageError
from catalytic.snapshot.digest import DEFAULT_HASH, HASH_NAMES

if TYPE_CHECKING:
    from catalytic.diff import Change, Triple


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``catalytic diff``."""
    p = subparsers.add_parser(
        "diff",
        help="compare two manifests, or a manifest and a directory",
        description="Each of A and B is a manifest written by `catalytic snapshot --output` or a directory "
        "(snapshotted now). Exit 0 when they are identical, 1 when they differ.",
    )
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--hash", choices=HASH_NAMES, help="digest for directories (default: the manifest's)")
    p.add_argument("--json", action="store_true", help="print the differences as JSON")
    add_snapshot_options(p)
    add_verbosity(p)
    p.set_defaults(execute=execute_cli)


def _flat_strings(value: Any) -> bool:
    return isinstance(value, dict) and all(type(v) is str for v in value.values())


class _Side:
    """One side of the comparison: a manifest file (streamed, or read whole) or a directory (scanned)."""

    def __init__(self, spec: str) -> None:
        from catalytic.snapshot.manifest_stream import ManifestReader

        self.path = Path(spec)
        self.is_dir = self.path.is_dir()
        self.reader: ManifestReader | None = None
        self.whole: tuple[dict[str, str], dict[str, str]] | None = None
        self.algorithm: str | None = None
        self.scan: Any = None
        if not self.is_dir:
            self.reader = ManifestReader.open(self.path)
            if self.reader is not None:
                self.algorithm = self.reader.algorithm
            else:
                self._read_whole()

    def _read_whole(self) -> None:
        from catalytic.snapshot.manifest_file import read_manifest

        try:
            manifest, modes, self.algorithm, _doc = read_manifest(self.path)  # a bad file: its usage error
        except KeyError as exc:
            raise UsageError(f"{self.path}: not a catalytic manifest (no {exc.args[0]!r})") from None
        for what, value in (("manifest", manifest), ("modes", modes)):
            if not _flat_strings(value):
                raise UsageError(
                    f"{self.path}: not a catalytic manifest ({what} is not an object of strings)"
                )
        if self.algorithm not in HASH_NAMES:
            raise UsageError(f"{self.path}: not a catalytic manifest (hash_algorithm {self.algorithm!r})")
        self.whole = (manifest, modes)

    def entries(self) -> Iterator[Triple]:
        """The side's entries in path order (:class:`NotStreamable` once, if the file is not canonical).

        A file read whole is cut into the sorted batches a streamed one gives
        (:func:`~catalytic.ledger.stream.document_batches`) and joined with its modes the same way.
        """
        from catalytic.ledger.stream import NotStreamable
        from catalytic.snapshot.manifest_stream import join_modes, spooled_entries

        if self.scan is not None:
            yield from spooled_entries(self.scan.manifest, self.scan.modes)
        elif self.whole is not None:
            manifest, modes = self.whole
            yield from join_modes(_object_batches(manifest), _object_batches(modes))
        else:
            assert self.reader is not None
            try:
                yield from self.reader.entries()
            except NotStreamable:
                self._read_whole()
                raise

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


def _object_batches(entries: dict[str, str]) -> Iterator[tuple[list[str], list[str]]]:
    """The (paths, values) batches of one ``{path: value}`` object read whole, in path order."""
    from catalytic.ledger.stream import document_batches
    from catalytic.paths import ROOT

    for _domain, paths, values in document_batches({ROOT: entries}):
        yield paths, values


def execute_cli(args: argparse.Namespace) -> int:
    """Print the differences; exit 1 when there are any."""
    from catalytic.diff import changes
    from catalytic.ledger.stream import NotStreamable
    from catalytic.snapshot.manifest_stream import scanned

    with ExitStack() as stack:
        sides = []
        for spec in (args.a, args.b):
            side = _Side(spec)
            stack.callback(side.close)
            sides.append(side)
        a, b = sides
        algorithm = args.hash or a.algorithm or b.algorithm or DEFAULT_HASH
        for side in sides:
            if side.is_dir:
                with snapshot_settings(args) as settings:
                    scan = scanned(side.path, algorithm, jobs=settings.jobs, progress=settings.progress)
                    side.scan = stack.enter_context(scan)
        # A manifest file found not to be canonical half-way is read whole and the comparison starts
        # again (at most once per side): nothing is printed before the comparison is over.
        while True:
            streamed = [side.whole is None for side in sides]
            out = _Output(args.json, stack)
            try:
                clean = out.write(changes(a.entries(), b.entries()))
            except NotStreamable:
                if streamed == [side.whole is None for side in sides]:
                    raise  # not a manifest file's: a bug, reported as one
                continue
            out.copy_to(sys.stdout)
            return 0 if clean else EXIT_DIRTY


class _Output:
    """The differences as they will be printed, in temporary files until the comparison is over.

    Text: one line per difference, in byte order of the path. JSON: the canonical ``{"added": {...},
    "changed": {...}, "removed": {...}}`` of :meth:`DomainDiff.to_json`, one object per file.
    """

    KINDS = ("added", "changed", "removed")

    def __init__(self, json: bool, stack: ExitStack) -> None:
        import tempfile

        self.json = json
        self.files = {}
        for kind in self.KINDS if json else ("text",):
            # Closed by the caller's stack; text files, so the paths' surrogate escapes round-trip.
            spooled = tempfile.SpooledTemporaryFile(1 << 20, "w+", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
            self.files[kind] = stack.enter_context(spooled)

    def write(self, found: Iterable[Change]) -> bool:
        """Write every difference; True when there is none."""
        from catalytic.diff import SIDE_KEYS, change_record
        from catalytic.ledger.canonical import iter_canonical, json_string

        empty = dict.fromkeys(self.files, True)
        for kind, path, before, after, *sides in found:
            if kind == "changed":
                assert before is not None and after is not None
                record = change_record(before, after, *sides)
                assert record is not None
                if self.json:
                    item = json_string(path) + ":" + "".join(iter_canonical(record))
                else:
                    detail = f"{printable(before)} -> {printable(after)}"
                    for key_before, key_after in SIDE_KEYS:
                        if key_before in record:
                            what = key_before.removesuffix("_before")
                            detail += f", {what} {record[key_before]} -> {record[key_after]}"
                    item = f"changed  {printable(path)} ({detail})"
            else:
                value = after if kind == "added" else before
                assert value is not None
                if self.json:
                    item = json_string(path) + ":" + json_string(value)
                else:
                    label = "extra  " if kind == "added" else "missing"
                    item = f"{label}  {printable(path)} ({printable(value)})"
            if self.json:
                self.files[kind].write(item if empty[kind] else "," + item)
                empty[kind] = False
            else:
                self.files["text"].write(item + "\n")
                empty["text"] = False
        return all(empty.values())

    def copy_to(self, stream: TextIO) -> None:
        import shutil

        for i, (kind, file) in enumerate(self.files.items()):
            if self.json:
                stream.write(("{" if i == 0 else "},") + f'"{kind}":{{')
            file.seek(0)
            shutil.copyfileobj(file, stream)
        if self.json:
            stream.write("}}\n")
        stream.flush()
