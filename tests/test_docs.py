"""The docs cannot drift: the CLI reference is generated from the parser, every documented command line
parses, the ledger tables match the JSON Schemas, error codes are documented, and links resolve."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

import pytest

from catalytic.cli import build_parser
from catalytic.cli.reference import render
from catalytic.ledger import integrity

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
SCHEMAS = REPO / "src/catalytic/ledger/schemas"
#: Written by other topics (and the bundled example) in parallel; links to them may come first.
SUBCOMMAND_NAMES = {"run", "validate", "runs", "export", "keygen", "completion", "show"}
PENDING = {"isolation.md", "tracing.md", "performance.md", "cortex"}


def test_cli_reference_is_up_to_date() -> None:
    expected = render(build_parser())
    actual = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/cli.md is stale: run python -m catalytic.cli.reference docs/cli.md"


def test_cli_reference_names_every_option() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, parser in sub.choices.items():  # type: ignore[attr-defined]
        assert f"## catalytic {name}" in text
        for action in parser._actions:
            for flag in action.option_strings:
                assert f"`{flag}`" in text, (name, flag)


def _command_lines() -> list[tuple[str, str, bool]]:
    """(source, command, complete): code blocks hold complete commands; inline code in prose may
    name an option without its value, so only its option names are checked."""
    sources = [*DOCS.glob("*.md"), REPO / "README.md", REPO / ".github/workflows/catalytic.yml"]
    found: list[tuple[str, str, bool]] = []
    for path in sources:
        text = path.read_text(encoding="utf-8").replace("\\\n", " ")
        pieces = [(text, True)]
        if path.suffix == ".md":
            blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
            inline = [m for m in re.findall(r"`(catalytic [^`]*)`", text) if " -" in m]
            pieces = [("\n".join(blocks), True), ("\n".join(inline), False)]
        for piece, complete in pieces:
            found += [(path.name, c, complete) for c in _commands_in(piece)]
    hooks = (REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8")
    found += [(".pre-commit-hooks.yaml", m, True) for m in re.findall(r"entry: catalytic (.*)", hooks)]
    return found


def _commands_in(text: str) -> list[str]:
    found: list[str] = []
    for line in text.splitlines():
        if "usage:" in line:  # the generated reference, checked above
            continue
        line = re.sub(r" \[[^\]]*\]", "", line)  # optional parts in synopses
        for match in re.finditer(r"(?:^|[\s(`$])catalytic ([a-z][^`)#\n]*)", line):
            command = match.group(1).split(" > ")[0].split(" | ")[0].strip().rstrip('"')
            if command.split()[0] in SUBCOMMAND_NAMES:
                found.append(command)
    return found


def options_of(parser: argparse.ArgumentParser, name: str) -> dict[str, list[str]]:
    """Option string -> its choices (empty when free), for the subcommand ``name``."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found: dict[str, list[str]] = {}
    for action in sub.choices[name]._actions:
        for flag in action.option_strings:
            found[flag] = [str(c) for c in action.choices] if action.choices else []
    return found


def test_every_documented_command_line_parses() -> None:
    lines = _command_lines()
    assert len(lines) > 15
    parser = build_parser()
    for source, command, complete in lines:
        command = command.replace("$SIGN_ARGS", "--sign-key key")  # the workflow's optional flags
        command = re.sub(r"<[^>]*>", "X", command)  # placeholders such as <run id>
        words = [re.sub(r"\$\{?[A-Z_]+\}?", "X", w) for w in shlex.split(command)]
        # A synopsis may name a value by its metavar (`--isolation MODE`): use a valid choice instead.
        options = options_of(parser, words[0])
        if not complete:
            flags = words[: words.index("--")] if "--" in words else words  # not the command's own
            unknown = [w for w in flags if w.startswith("-") and w.split("=")[0] not in options]
            assert not unknown, f"{source}: 'catalytic {command}' names unknown options {unknown}"
            continue
        words = [
            options[words[i - 1]][0] if w.isupper() and i and options.get(words[i - 1]) else w
            for i, w in enumerate(words)
        ]
        try:
            parser.parse_args(words)
        except SystemExit as exc:  # pragma: no cover - the message names the offender
            pytest.fail(f"{source}: 'catalytic {command}' does not parse (exit {exc.code})")


def _table_keys(doc: str, heading: str) -> set[str]:
    section = doc.split(heading, 1)[1]
    keys: set[str] = set()
    started = False
    for line in section.splitlines()[1:]:
        if line.startswith("|"):
            started = True
            keys.update(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
        elif started:
            break
    return keys


def _properties(name: str) -> set[str]:
    return set(json.loads((SCHEMAS / name).read_text(encoding="utf-8"))["properties"])


@pytest.mark.parametrize(
    ("heading", "schema"),
    [
        ("## RUN_INFO", "run_info.schema.json"),
        ("## STATUS", "status.schema.json"),
        ("### LEDGER_DIGEST.json", "ledger_digest.schema.json"),
        ("### SIGNATURE.json", "signature.schema.json"),
        ("### LEDGER.jsonl", "chain_line.schema.json"),
    ],
)
def test_ledger_tables_match_the_schemas(heading: str, schema: str) -> None:
    doc = (DOCS / "ledger.md").read_text(encoding="utf-8")
    assert _table_keys(doc, heading) == _properties(schema)


def test_every_schema_is_documented() -> None:
    doc = (DOCS / "ledger.md").read_text(encoding="utf-8")
    for schema in SCHEMAS.glob("*.schema.json"):
        title = json.loads(schema.read_text(encoding="utf-8"))["title"].split()[0]
        assert f"`{title}`" in doc or f"### {title}" in doc, schema.name


def test_every_integrity_code_is_in_the_trust_model() -> None:
    codes = set(re.findall(r"``([A-Z_]+)``", integrity.__doc__ or ""))
    assert len(codes) >= 10
    text = (DOCS / "trust-model.md").read_text(encoding="utf-8")
    for code in codes:
        assert f"`{code}`" in text, code


def test_relative_links_resolve() -> None:
    for path in [*DOCS.glob("*.md"), REPO / "README.md"]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            resolved = (path.parent / target).resolve()
            if resolved.name in PENDING:
                continue
            assert resolved.exists(), f"{path.name} links to missing {target}"
