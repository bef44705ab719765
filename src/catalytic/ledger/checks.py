"""Checks of a ledger's documents against each other: domains, restoration proof, Merkle roots, STATUS.

Used by :mod:`catalytic.validate`; each check appends :class:`~catalytic.errors.Problem` entries and
never raises on hostile input. What concerns single entries (their paths, their modes, the recomputed diff,
the Merkle roots) comes from the one pass of :mod:`catalytic.ledger.entries`; the checks here look at
domain names and at what that pass found.
"""

from __future__ import annotations

from typing import Any

from catalytic import paths
from catalytic.diff import DomainDiff
from catalytic.errors import Problem
from catalytic.ledger import format as fmt
from catalytic.ledger.entries import EntryFacts, summary


def _summary(d: DomainDiff) -> str:
    first = d.paths()[0] if d.paths() else None
    return summary(len(d.added), len(d.removed), len(d.changed), first)


def check_restoration(docs: dict[str, Any], problems: list[Problem], facts: EntryFacts) -> bool | None:
    """Check domains, the recomputed diff and RESTORE_DIFF; True/False: restoration proven or not.

    The four large documents in ``docs`` are only looked at for their domains; what concerns their entries
    comes from ``facts``.
    """
    info: dict[str, Any] | None = docs.get(fmt.RUN_INFO)
    pre: dict[str, Any] | None = docs.get(fmt.PRE_MANIFEST)
    post: dict[str, Any] | None = docs.get(fmt.POST_MANIFEST)
    recorded: dict[str, dict[str, Any]] | None = docs.get(fmt.RESTORE_DIFF)
    facts.emit_entries(problems)

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

    # The pass recomputes a domain's diff when it can: without the MODES files a catalytic.ledger/1 diff
    # cannot be recomputed (mode changes are in it).
    if facts.recomputed and pre is not None and post is not None:
        for domain in sorted(set(pre) & set(post), key=paths.sort_key):
            diff = facts.diffs[domain]
            text = diff.summary()
            if recorded is not None and domain in recorded and not diff.matches:
                problems.append(
                    Problem(
                        "DIFF_MISMATCH",
                        f"{fmt.RESTORE_DIFF}: domain {domain!r} is not the diff of the manifests "
                        f"(recomputed: {text})",
                    )
                )
            if not diff.clean:
                problems.append(Problem("NOT_RESTORED", f"domain {domain!r} was not restored: {text}"))
                proof = False
    elif recorded is not None:
        for domain, record in recorded.items():
            kept = DomainDiff(record["added"], record["removed"], record["changed"])
            if not kept.clean:
                problems.append(
                    Problem(
                        "NOT_RESTORED",
                        f"{fmt.RESTORE_DIFF}: domain {domain!r} was not restored: {_summary(kept)}",
                    )
                )
                proof = False
    return proof


def check_merkle(docs: dict[str, Any], problems: list[Problem], facts: EntryFacts) -> None:
    """Compare every Merkle root RUN_INFO records with the one recomputed from the manifest and modes."""
    from catalytic.snapshot.merkle import MERKLE_FORMAT_V1, MERKLE_FORMATS

    info: dict[str, Any] | None = docs.get(fmt.RUN_INFO)
    roots = info.get("merkle_roots") if info is not None else None
    if not isinstance(roots, dict):
        return
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
            if facts.root(phase, domain) != expected:
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
