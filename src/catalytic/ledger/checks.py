"""Checks of a ledger's documents against each other: entries, restoration proof, Merkle roots, STATUS.

Used by :mod:`catalytic.validate`; each check appends :class:`~catalytic.errors.Problem` entries and
never raises on hostile input.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from catalytic import paths
from catalytic.diff import DomainDiff, diff_entries
from catalytic.errors import Problem
from catalytic.ledger import format as fmt
from catalytic.snapshot import entries_from_documents
from catalytic.snapshot.digest import ALGORITHMS
from catalytic.snapshot.entry import SYMLINK_PREFIX, kind_of

if TYPE_CHECKING:
    from catalytic.ledger.crosscheck import StreamFacts

#: Hex digest length per manifest hash algorithm.
DIGEST_LENGTHS = {name: algorithm.hex_length for name, algorithm in ALGORITHMS.items()}
_DRIVE = re.compile(r"^[A-Za-z]:")


def path_problem(path: str, *, workspace: bool) -> str | None:
    """Why ``path`` is unsafe as a ledger path, or None. ``workspace`` adds the output-path rules."""
    if not path:
        return "is empty"
    if "\0" in path:
        return "contains a NUL byte"
    if path.startswith("/") or (workspace and _DRIVE.match(path)):
        return "is absolute"
    if workspace and "\\" in path:
        return "contains a backslash"
    segments = path.split("/")
    if ".." in segments:
        return "goes through '..'"
    if path != paths.ROOT and any(s in ("", ".") for s in segments):
        return "is not normalised (empty or '.' segment)"
    return None


MAX_PER_KIND = 100


def emit_capped(kept: list[Problem], count: int, problems: list[Problem], what: str) -> None:
    """Report the first :data:`MAX_PER_KIND` of ``count`` problems (``kept``) and count the rest."""
    # One rewritten manifest can break a rule once per entry; list the first ones and count the rest.
    problems.extend(kept[:MAX_PER_KIND])
    if count > MAX_PER_KIND:
        problems.append(Problem(kept[0].code, f"{what}: {count - MAX_PER_KIND} more not listed"))


def _capped(found: list[Problem], problems: list[Problem], what: str) -> None:
    emit_capped(found, len(found), problems, what)


def summary(added: int, removed: int, changed: int, first: str | None) -> str:
    """How a recomputed diff is described in a problem: counts and its first path."""
    counts = f"{added} added, {removed} removed, {changed} changed"
    return counts + (f" (first: {first!r})" if first is not None else "")


def _summary(d: DomainDiff) -> str:
    first = d.paths()[0] if d.paths() else None
    return summary(len(d.added), len(d.removed), len(d.changed), first)


def check_entries(docs: dict[str, Any], v1: bool, algorithm: str, problems: list[Problem]) -> None:
    """Manifest paths are safe, digests have the algorithm's length, MODES describe their manifest."""
    length = DIGEST_LENGTHS.get(algorithm, 64)
    pairs = ((fmt.PRE_MANIFEST, fmt.PRE_MODES), (fmt.POST_MANIFEST, fmt.POST_MODES))
    for man_name, modes_name in pairs:
        manifest: dict[str, dict[str, str]] | None = docs.get(man_name)
        if manifest is None:
            continue
        found: list[Problem] = []
        for domain, entries in manifest.items():
            for path, value in entries.items():
                why = path_problem(path, workspace=False)
                if why:
                    found.append(Problem("BAD_PATH", f"{man_name}: path {path!r} in domain {domain!r} {why}"))
                elif kind_of(value) == "file" and len(value) != length:
                    found.append(Problem("SCHEMA", f"{man_name}: {path!r} is not a {algorithm} digest"))
        _capped(found, problems, man_name)
        modes: dict[str, dict[str, str]] | None = docs.get(modes_name)
        if modes is None:
            continue
        found = [
            Problem("MODES_MISMATCH", f"{modes_name}: domain {d!r} is not in {man_name}")
            for d in modes
            if d not in manifest
        ]
        for domain, entries in manifest.items():
            domain_modes = modes.get(domain, {})
            for path in domain_modes:
                if path not in entries or entries[path].startswith(SYMLINK_PREFIX):
                    found.append(
                        Problem(
                            "MODES_MISMATCH",
                            f"{modes_name}: {path!r} in {domain!r} is not a {man_name} entry",
                        )
                    )
            if v1:
                found += [
                    Problem("MODES_MISMATCH", f"{modes_name}: no mode for {path!r} in domain {domain!r}")
                    for path, value in entries.items()
                    if path not in domain_modes and not value.startswith(SYMLINK_PREFIX)
                ]
        _capped(found, problems, modes_name)


def check_restoration(
    docs: dict[str, Any], v1: bool, problems: list[Problem], streamed: StreamFacts | None = None
) -> bool | None:
    """Check domains, the recomputed diff and RESTORE_DIFF; True/False: restoration proven or not.

    With ``streamed`` the four large documents in ``docs`` only name their domains, and the entry-level
    results come from the streamed pass (:mod:`catalytic.ledger.crosscheck`); the report is the same.
    """
    info: dict[str, Any] | None = docs.get(fmt.RUN_INFO)
    pre: dict[str, dict[str, str]] | None = docs.get(fmt.PRE_MANIFEST)
    post: dict[str, dict[str, str]] | None = docs.get(fmt.POST_MANIFEST)
    recorded: dict[str, dict[str, Any]] | None = docs.get(fmt.RESTORE_DIFF)
    pre_modes: dict[str, dict[str, str]] | None = docs.get(fmt.PRE_MODES)
    post_modes: dict[str, dict[str, str]] | None = docs.get(fmt.POST_MODES)
    algorithm = info.get("hash_algorithm", "sha256") if info is not None else "sha256"
    if streamed is None:
        check_entries(docs, v1, algorithm, problems)
    else:
        streamed.emit_entries(problems)

    declared: list[str] | None = info["catalytic_domains"] if info is not None else None
    sources = ((fmt.PRE_MANIFEST, pre), (fmt.POST_MANIFEST, post), (fmt.RESTORE_DIFF, recorded))
    for name, doc in sources:
        for domain in doc or {}:
            if declared is not None and domain not in declared:
                problems.append(
                    Problem("DOMAIN_MISMATCH", f"{name}: domain {domain!r} is not declared in RUN_INFO")
                )
    if post is not None and recorded is not None:
        for domain in sorted(set(post) ^ set(recorded), key=paths.sort_key):
            problems.append(
                Problem(
                    "DOMAIN_MISMATCH", f"domain {domain!r} is in only one of POST_MANIFEST and RESTORE_DIFF"
                )
            )
    if pre is not None and post is not None:
        for domain in sorted(set(post) - set(pre), key=paths.sort_key):
            problems.append(
                Problem("DOMAIN_MISMATCH", f"{fmt.POST_MANIFEST}: domain {domain!r} is not in PRE")
            )

    proof: bool | None = None if any(doc is None for _, doc in sources) or declared is None else True
    for domain in declared or []:
        absent = [name for name, doc in sources if doc is not None and domain not in doc]
        if absent:
            problems.append(
                Problem(
                    "NOT_VERIFIED", f"no restoration proof for domain {domain!r}: not in {', '.join(absent)}"
                )
            )
            proof = False

    # Without the MODES files a catalytic.ledger/1 diff cannot be recomputed (mode changes are in it).
    can_recompute = (
        pre is not None and post is not None and (not v1 or (pre_modes and post_modes) is not None)
    )
    if can_recompute and pre is not None and post is not None:
        for domain in sorted(set(pre) & set(post), key=paths.sort_key):
            if streamed is not None:
                facts = streamed.diffs[domain]
                clean, text, differs = facts.clean, facts.summary(), not facts.matches
            else:
                before = entries_from_documents(pre[domain], (pre_modes or {}).get(domain))
                after = entries_from_documents(post[domain], (post_modes or {}).get(domain))
                diff = diff_entries(before, after)
                clean, text = diff.clean, _summary(diff)
                differs = recorded is not None and domain in recorded and recorded[domain] != diff.to_json()
            if recorded is not None and domain in recorded and differs:
                problems.append(
                    Problem(
                        "DIFF_MISMATCH",
                        f"{fmt.RESTORE_DIFF}: domain {domain!r} is not the diff of the manifests "
                        f"(recomputed: {text})",
                    )
                )
            if not clean:
                problems.append(Problem("NOT_RESTORED", f"domain {domain!r} was not restored: {text}"))
                proof = False
    elif recorded is not None:
        for domain, record in recorded.items():
            diff = DomainDiff(record["added"], record["removed"], record["changed"])
            if not diff.clean:
                problems.append(
                    Problem(
                        "NOT_RESTORED",
                        f"{fmt.RESTORE_DIFF}: domain {domain!r} was not restored: {_summary(diff)}",
                    )
                )
                proof = False
    return proof


def check_merkle(docs: dict[str, Any], problems: list[Problem], streamed: StreamFacts | None = None) -> None:
    """Recompute every Merkle root RUN_INFO records from the manifests and modes (or take streamed ones)."""
    from catalytic.snapshot.merkle import MERKLE_FORMAT_V1, MERKLE_FORMATS, manifest_root

    info: dict[str, Any] | None = docs.get(fmt.RUN_INFO)
    roots = info.get("merkle_roots") if info is not None else None
    if not isinstance(roots, dict):
        return
    algorithm = info.get("hash_algorithm", "sha256") if info is not None else "sha256"
    tree = info.get("merkle_format", MERKLE_FORMAT_V1) if info is not None else MERKLE_FORMAT_V1
    if tree not in MERKLE_FORMATS:
        problems.append(Problem("MERKLE_MISMATCH", f"RUN_INFO: unknown merkle_format {tree!r}"))
        return
    for domain, recorded in sorted(roots.items()):
        for phase, manifest_name, modes_name in (
            ("pre", fmt.PRE_MANIFEST, fmt.PRE_MODES),
            ("post", fmt.POST_MANIFEST, fmt.POST_MODES),
        ):
            expected = recorded.get(phase) if isinstance(recorded, dict) else None
            if docs.get(manifest_name) is None:
                continue  # missing or unreadable: already reported, nothing to recompute from
            manifest = docs[manifest_name].get(domain)
            if expected is None:
                if phase == "pre" or manifest is not None:
                    problems.append(
                        Problem("MERKLE_MISMATCH", f"RUN_INFO: no {phase} Merkle root for domain {domain!r}")
                    )
                continue
            if manifest is None:
                problems.append(
                    Problem("MERKLE_MISMATCH", f"{manifest_name}: no domain {domain!r} for its Merkle root")
                )
                continue
            if streamed is not None:
                root = streamed.root(phase, domain)
            else:
                root = manifest_root(manifest, (docs.get(modes_name) or {}).get(domain), algorithm, tree)
            if root != expected:
                problems.append(
                    Problem(
                        "MERKLE_MISMATCH",
                        f"RUN_INFO: the {phase} Merkle root of domain {domain!r} is not the root of "
                        f"{manifest_name} and {modes_name}",
                    )
                )


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def check_status(docs: dict[str, Any], proof: bool | None, problems: list[Problem]) -> None:
    """STATUS agrees with RUN_INFO and with the proof; interrupted and dirty runs fail."""
    info: dict[str, Any] | None = docs.get(fmt.RUN_INFO)
    status: dict[str, Any] | None = docs.get(fmt.STATUS)
    if (info is not None and info.get("interrupted") is True) or (
        status is not None and status.get("interrupted") is True
    ):
        signal = info.get("signal") if info is not None else None
        problems.append(Problem("INTERRUPTED", f"the run was interrupted (signal {signal!r})"))
    elif info is not None and info.get("signal") is not None:
        problems.append(
            Problem(
                "STATUS_MISMATCH",
                f"{fmt.RUN_INFO}: signal is {info['signal']!r} but the run was not interrupted",
            )
        )
    if status is None:
        return
    if info is not None:
        for key in ("run_id", "exit_code", "interrupted"):
            if key in status and key in info and not _same(status[key], info[key]):
                problems.append(
                    Problem(
                        "STATUS_MISMATCH",
                        f"{fmt.STATUS}: {key} is {status[key]!r} but {fmt.RUN_INFO} says {info[key]!r}",
                    )
                )
    verified, state = status["restoration_verified"], status["status"]
    if proof is False and (verified or state == "restored"):
        problems.append(
            Problem(
                "STATUS_MISMATCH",
                f"{fmt.STATUS} claims status {state!r}, restoration_verified {verified!r}, "
                "but the manifests do not prove every domain restored",
            )
        )
    elif state == "restored" and not verified:
        problems.append(
            Problem("STATUS_MISMATCH", f"{fmt.STATUS}: 'restored' with restoration_verified false")
        )
    if state == "dirty" and verified:
        problems.append(Problem("STATUS_MISMATCH", f"{fmt.STATUS}: 'dirty' with restoration_verified true"))
    if state == "restored" and status.get("error") is not None:
        problems.append(Problem("STATUS_MISMATCH", f"{fmt.STATUS}: 'restored' but it records an error"))
    if state == "dirty":
        reason = status.get("reason")
        problems.append(
            Problem("DIRTY", f"{fmt.STATUS}: the run is dirty" + (f": {reason}" if reason else ""))
        )
