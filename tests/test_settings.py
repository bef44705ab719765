"""The settings of a run are declared once (:mod:`catalytic.settings`): the parser, the config keys, the API,
the declaration and the docs follow that list, and every key the file may hold takes effect."""

from __future__ import annotations

import argparse
import inspect
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import catalytic
from catalytic.cli import build_parser, main
from catalytic.cli.run import overrides_from
from catalytic.errors import UsageError
from catalytic.policy import CONFIG_KEYS, Declaration, load_config
from catalytic.settings import BLOCK_FIXED, BY_NAME, SETTINGS, Setting

ROOT = Path(__file__).resolve().parent.parent
#: Flags of `catalytic run` that are about its own output, not the run.
CLI_ONLY = {"help", "json", "json_file", "quiet", "verbose", "command"}


def run_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices["run"]
    assert isinstance(parser, argparse.ArgumentParser)
    return parser


def test_the_run_parser_has_one_flag_per_setting_and_nothing_else() -> None:
    actions = {a.dest: a for a in run_parser()._actions}
    assert set(actions) - CLI_ONLY == set(BY_NAME)
    for setting in SETTINGS:
        action = actions[setting.name]
        assert action.option_strings[: len(setting.flags)] == list(setting.flags)
        assert action.help == setting.help and action.default is None
        assert tuple(action.choices or ()) == setting.choices


def test_overrides_from_the_flags() -> None:
    parser = run_parser()
    assert overrides_from(parser.parse_args(["--", "true"])) == {
        s.name: None for s in SETTINGS if s.name != "root"
    }
    args = parser.parse_args(
        ["--jobs", "2", "--no-cache", "--discard", "--no-trace", "--exclude", "a", "--exclude", "b", "--"]
    )
    given = {k: v for k, v in overrides_from(args).items() if v is not None}
    assert given == {"jobs": 2, "use_cache": False, "discard": True, "trace": False, "exclude": ["a", "b"]}


def test_negative_jobs_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--jobs must be 0"):
        overrides_from(run_parser().parse_args(["--jobs", "-1", "--"]))


def _annotation(setting: Setting) -> str:
    if setting.name == "root":
        return "str | os.PathLike[str]"
    if setting.file:
        return "str | os.PathLike[str] | None"
    base = {"list": "Sequence[str]", "str": "str", "bool": "bool", "int": "int", "choice": "str"}[
        setting.kind
    ]
    return f"{base} | None"


@pytest.mark.parametrize(
    ("function", "first", "last", "settings"),
    [
        (catalytic.run, "command", ["progress"], SETTINGS),
        (catalytic.catalytic_domains, "domains", ["progress", "label"], [s for s in SETTINGS if s.block]),
    ],
)
def test_the_api_keywords_are_the_settings(
    function: object, first: str, last: list[str], settings: list[Setting]
) -> None:
    params = inspect.signature(function).parameters  # type: ignore[arg-type]
    assert list(params) == [first, *(s.name for s in settings), *last]
    for setting in settings:
        param = params[setting.name]
        assert param.kind is inspect.Parameter.KEYWORD_ONLY
        assert param.annotation == _annotation(setting), setting.name
        assert param.default == (setting.default if setting.name == "root" else None), setting.name


def test_what_a_block_cannot_take_is_fixed_to_its_default() -> None:
    left = {s.name for s in SETTINGS if not s.block} - {"catalytic_domains"}
    assert set(BLOCK_FIXED) == left
    assert BLOCK_FIXED["isolation"] == "none" and BLOCK_FIXED["trace"] is False


def test_the_declaration_holds_every_setting_with_its_default() -> None:
    assert set(Declaration._fields) - {"found_by"} == set(BY_NAME)
    for setting in SETTINGS:
        if setting.default is not None and setting.name != "root":  # None: the profile decides
            assert Declaration._field_defaults[setting.name] == setting.default, setting.name


def test_every_setting_is_a_config_key_but_the_root_and_the_run_id() -> None:
    assert {s.name for s in SETTINGS if not s.config} == {"root", "run_id"}
    assert {s.name for s in CONFIG_KEYS.values()} == {s.name for s in SETTINGS if s.config}
    assert CONFIG_KEYS["durable_output_roots"] is BY_NAME["durable_outputs"]
    assert CONFIG_KEYS["cache"] is BY_NAME["use_cache"]


def test_the_docs_list_every_config_key_and_every_flag() -> None:
    reference = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for setting in SETTINGS:
        for key in setting.keys:
            assert f"| `{key}`" in reference or f", `{key}`" in reference, key
        assert f"`{setting.flags[0]}" in readme, setting.flags[0]
        assert f"`{setting.flags[0]}`" in reference


# --- every new key takes effect, from either file, and the flags override it ---------------------------


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "a.txt").write_text("a\n")
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def configure(root: Path, source: str, lines: str) -> None:
    text = 'catalytic_domains = ["scratch"]\nruns_root = "runs"\n' + lines
    if source == "catalytic.toml":
        (root / "catalytic.toml").write_text(text)
    else:
        (root / "pyproject.toml").write_text("[project]\nname = 'x'\n\n[tool.catalytic]\n" + text)


def run_info(root: Path, run_id: str) -> dict[str, object]:
    info = json.loads((root / "runs" / run_id / "RUN_INFO.json").read_text())
    assert isinstance(info, dict)
    return info


SOURCES = ["catalytic.toml", "pyproject.toml"]


@pytest.mark.parametrize("source", SOURCES)
def test_jobs_and_cache_keys(ws: Path, source: str) -> None:
    configure(ws, source, "jobs = 3\nuse-cache = false\n")
    assert main(["run", "-q", "--run-id", "r1", "--", "true"]) == 0
    info = run_info(ws, "r1")
    assert info["jobs"] == 3 and info["cache"] == "disabled"
    assert main(["run", "-q", "--run-id", "r2", "-j", "2", "--", "true"]) == 0
    assert run_info(ws, "r2")["jobs"] == 2
    configure(ws, source, "cache = true\n")
    assert main(["run", "-q", "--run-id", "r3", "--", "true"]) == 0
    assert run_info(ws, "r3")["cache"] != "disabled"
    assert main(["run", "-q", "--run-id", "r4", "--no-cache", "--", "true"]) == 0
    assert run_info(ws, "r4")["cache"] == "disabled"


@pytest.mark.parametrize("source", SOURCES)
def test_sign_key_key_is_relative_to_the_root(ws: Path, source: str) -> None:
    (ws / "keys").mkdir()
    assert main(["keygen", "--output", str(ws / "keys" / "config")]) == 0
    assert main(["keygen", "--output", str(ws / "keys" / "flag")]) == 0
    configure(ws, source, 'sign_key = "keys/config"\n')
    (ws / "scratch" / "deep").mkdir()
    os.chdir(ws / "scratch" / "deep")  # the key in the file is found from the root, not from here
    assert main(["run", "-q", "--run-id", "r1", "--", "true"]) == 0
    by_config = json.loads((ws / "runs/r1/SIGNATURE.json").read_text())
    assert main(["run", "-q", "--run-id", "r2", "--sign-key", str(ws / "keys" / "flag"), "--", "true"]) == 0
    by_flag = json.loads((ws / "runs/r2/SIGNATURE.json").read_text())
    public = {name: (ws / "keys" / f"{name}.pub").read_text() for name in ("config", "flag")}
    assert by_config != by_flag and public["config"] != public["flag"]
    assert (
        main(["validate", "--run-dir", str(ws / "runs/r1"), "--trusted-key", str(ws / "keys/config.pub")])
        == 0
    )
    assert (
        main(["validate", "--run-dir", str(ws / "runs/r2"), "--trusted-key", str(ws / "keys/flag.pub")]) == 0
    )
    assert (
        main(["validate", "--run-dir", str(ws / "runs/r1"), "--trusted-key", str(ws / "keys/flag.pub")]) == 1
    )


@pytest.mark.parametrize("source", SOURCES)
def test_rollback_on_failure_key(ws: Path, source: str) -> None:
    (ws / "out").write_text("previous\n")
    configure(ws, source, 'isolation = "rollback"\ndurable_outputs = ["out"]\nrollback_on_failure = true\n')
    assert main(["run", "-q", "--run-id", "r1", "--", "sh", "-c", "echo bad > out; exit 5"]) == 5
    assert (ws / "out").read_text() == "previous\n"
    configure(ws, source, 'isolation = "rollback"\ndurable_outputs = ["out"]\nrollback_on_failure = false\n')
    assert main(["run", "-q", "--run-id", "r2", "--", "sh", "-c", "echo bad > out; exit 5"]) == 5
    assert (ws / "out").read_text() == "bad\n"
    (ws / "out").write_text("previous\n")
    cmd = ["sh", "-c", "echo bad > out; exit 5"]
    assert main(["run", "-q", "--run-id", "r3", "--rollback-on-failure", "--", *cmd]) == 5
    assert (ws / "out").read_text() == "previous\n"


@pytest.mark.parametrize("source", SOURCES)
def test_check_determinism_key_is_checked_as_the_flag(
    ws: Path, source: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(ws, source, "check_determinism = true\n")
    assert main(["run", "-q", "--run-id", "r1", "--", "true"]) == 2
    assert "--check-determinism needs --isolation overlay" in capsys.readouterr().err
    assert not (ws / "runs" / "r1").exists()


def _overlay_reason() -> str | None:
    from isolation_helpers import overlay_skip_reason

    return overlay_skip_reason()


@pytest.mark.linux
@pytest.mark.parametrize("source", SOURCES)
def test_overlay_keys_discard_and_check_determinism(ws: Path, source: str) -> None:
    why = _overlay_reason()
    if why is not None:
        pytest.skip(f"overlay mounts unavailable here: {why}")
    configure(ws, source, 'isolation = "overlay"\ndurable_outputs = ["out"]\ncheck_determinism = true\n')
    assert main(["run", "-q", "--run-id", "r1", "--", "sh", "-c", "echo same > out"]) == 0
    details = run_info(ws, "r1")["isolation_details"]
    assert isinstance(details, dict) and details["determinism"]["equal"] is True
    configure(ws, source, 'isolation = "overlay"\ndurable_outputs = ["out"]\ncheck_determinism = false\n')
    assert main(["run", "-q", "--run-id", "r0", "--", "sh", "-c", "echo same > out"]) == 0
    details = run_info(ws, "r0")["isolation_details"]
    assert isinstance(details, dict) and "determinism" not in details
    same = ["sh", "-c", "echo same > out"]
    assert main(["run", "-q", "--run-id", "r5", "--check-determinism", "--", *same]) == 0
    details = run_info(ws, "r5")["isolation_details"]
    assert isinstance(details, dict) and details["determinism"]["equal"] is True
    configure(ws, source, 'isolation = "overlay"\ndiscard = true\n')
    assert main(["run", "-q", "--run-id", "r2", "--", "sh", "-c", "echo x > evil"]) == 4
    assert not (ws / "runs" / "r2" / "quarantine").exists()
    configure(ws, source, 'isolation = "overlay"\ndiscard = false\n')
    assert main(["run", "-q", "--run-id", "r3", "--", "sh", "-c", "echo x > evil"]) == 4
    assert (ws / "runs" / "r3" / "quarantine").is_dir()
    assert main(["run", "-q", "--run-id", "r4", "--discard", "--", "sh", "-c", "echo x > evil"]) == 4
    assert not (ws / "runs" / "r4" / "quarantine").exists()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("jobs = -1", "jobs must be an integer, 0 (one per core) or more, not -1"),
        ('jobs = "4"', "jobs must be an integer, 0 (one per core) or more, not '4'"),
        ("no-cache = true", "unknown key 'no-cache'"),
        ('cache = "no"', "cache must be true or false, not 'no'"),
        ("sign_key = 3", "sign_key must be a string, not 3"),
        ('discard = "yes"', "discard must be true or false, not 'yes'"),
        ("rollback-on-failure = 1", "rollback-on-failure must be true or false, not 1"),
        ("check_determinism = []", "check_determinism must be true or false, not []"),
        ('run_id = "r1"', "unknown key 'run_id'"),
        ('root = "."', "unknown key 'root'"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key_and_the_file(
    ws: Path, capsys: pytest.CaptureFixture[str], line: str, message: str
) -> None:
    (ws / "catalytic.toml").write_text(line + "\n")
    assert main(["run", "--run-id", "r1", "--", "true"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "BAD_CONFIG" in err[0] and f"catalytic.toml: {message}" in err[0]


def test_config_keys_load_with_both_spellings(tmp_path: Path) -> None:
    (tmp_path / "catalytic.toml").write_text(
        'jobs = 2\nuse_cache = false\nsign-key = "k"\nrollback-on-failure = true\ndiscard = true\n'
    )
    assert load_config(tmp_path) == {
        "jobs": 2,
        "use_cache": False,
        "sign_key": str(tmp_path / "k"),
        "rollback_on_failure": True,
        "discard": True,
    }


def test_the_api_takes_check_determinism_and_checks_it(ws: Path) -> None:
    with pytest.raises(UsageError, match="--check-determinism needs --isolation overlay"):
        catalytic.run(["true"], catalytic_domains=["scratch"], check_determinism=True)
    with pytest.raises(UsageError, match="jobs must be an integer, 0"):
        catalytic.run(["true"], catalytic_domains=["scratch"], jobs=-2)
    assert not (ws / ".catalytic").exists()


def test_a_block_ignores_the_run_only_keys_of_the_file(ws: Path) -> None:
    configure(ws, "catalytic.toml", 'isolation = "rollback"\ncheck_determinism = true\njobs = 2\n')
    with catalytic.catalytic_domains(["scratch"], run_id="b1") as check:
        pass
    assert check.restored
    info = run_info(ws, "b1")
    assert info["isolation"] == "none" and info["jobs"] == 2


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_offers_every_flag_and_choice_of_a_setting(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from catalytic.cli.completion import commands

    run = next(c for c in commands(build_parser())[1] if c.name == "run")
    offered = {flag: option for option in run.options for flag in option.flags}
    for setting in SETTINGS:
        for flag in setting.flags:
            assert offered[flag].choices == setting.choices, flag
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for setting in SETTINGS:
        # fish names long options without their dashes
        assert setting.flags[0].lstrip("-") in script, setting.flags[0]
        for choice in setting.choices:
            assert choice in script


def test_every_key_in_the_file_init_writes_is_a_config_key(tmp_path: Path) -> None:
    from catalytic.cli.init import config_text
    from catalytic.profiles import DEFAULT

    commented = [line[2:] for line in config_text(DEFAULT).splitlines() if " = " in line and line[:2] == "# "]
    assert len(commented) >= 8
    (tmp_path / "catalytic.toml").write_text("\n".join(commented) + "\n")
    assert set(load_config(tmp_path)) >= {"catalytic_domains", "isolation", "jobs", "use_cache"}
