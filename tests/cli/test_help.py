"""``sfamp --help`` reads well: one short sentence per command, no type beside a flag."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli import app

ROOT = typer.main.get_command(app)


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group under ``command``, asked as click asks a group (the root
    loads each command's module only when the command is looked up)."""
    yield path, command
    if isinstance(command, typer.core.TyperGroup):
        context = typer.Context(command)
        for name in sorted(command.list_commands(context)):
            yield from _commands(command.get_command(context, name), (*path, name))


COMMANDS = dict(_commands(ROOT))


@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda path: " ".join(path) or "sfamp")
def test_each_summary_is_one_short_sentence(path: tuple[str, ...]) -> None:
    """The first paragraph is what the command list shows: a line break there splits it."""
    summary = inspect.cleandoc(COMMANDS[path].help or "").split("\n\n")[0]
    assert "\n" not in summary, summary
    assert summary[:1].isupper(), summary
    assert summary.endswith("."), summary
    assert len(summary) <= 90, summary


@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda path: " ".join(path) or "sfamp")
def test_the_help_text_fits_an_80_column_terminal_as_written(path: tuple[str, ...]) -> None:
    """Its line breaks are kept: a line longer than the 78 columns inside the frame wraps
    on its own and leaves a word alone on the next line."""
    body = inspect.cleandoc(COMMANDS[path].help or "").split("\n\n")[1:]
    long = [line for paragraph in body for line in paragraph.splitlines() if len(line) > 78]
    assert not long, long


@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda path: " ".join(path) or "sfamp")
def test_no_flag_shows_a_type(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output, result.output
    assert "--help" in result.output


def test_options_that_take_a_value_keep_their_type() -> None:
    result = CliRunner().invoke(app, ["reconcile", "--help"], env={"COLUMNS": "120"})
    line = next(line for line in result.output.splitlines() if "--mapping" in line)
    assert "<path>" in line
    dry_run = next(line for line in result.output.splitlines() if "--dry-run" in line)
    assert "<" not in dry_run


def _choice_options() -> list[tuple[tuple[str, ...], str]]:
    found = []
    for path, command in COMMANDS.items():
        for param in getattr(command, "params", ()):
            descriptor = getattr(param, "type_descriptor", None)
            if getattr(descriptor, "choices", None) and param.opts[0].startswith("--"):
                found.append((path, param.opts[0]))
    return found


CHOICE_OPTIONS = _choice_options()


def test_the_choice_options_are_found() -> None:
    assert {option for _, option in CHOICE_OPTIONS} >= {"--role", "--api", "--dlq"}


@pytest.mark.parametrize(
    ("path", "option"), CHOICE_OPTIONS, ids=[" ".join((*p, o)) for p, o in CHOICE_OPTIONS]
)
def test_a_value_not_among_the_choices_is_named_plainly(path: tuple[str, ...], option: str) -> None:
    """Typer's own check says "Value error, 'x' is not one of …"; sfamp's says it plainly."""
    result = CliRunner().invoke(app, [*path, option, "nonsense"], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}': 'nonsense' is not one of '" in result.output
    assert "Value error" not in result.output, result.output


PORT_OPTIONS = [
    (path, param.opts[0])
    for path, command in COMMANDS.items()
    for param in getattr(command, "params", ())
    if param.opts[0].endswith("port")
]


def test_the_port_options_are_found() -> None:
    assert len(PORT_OPTIONS) >= 8, PORT_OPTIONS


@pytest.mark.parametrize(
    ("path", "option"), PORT_OPTIONS, ids=[" ".join((*p, o)) for p, o in PORT_OPTIONS]
)
@pytest.mark.parametrize("value", ["70000", "-1"])
def test_a_port_out_of_range_is_a_usage_error(
    path: tuple[str, ...], option: str, value: str
) -> None:
    """Not a socket's OverflowError traceback once the command has started."""
    result = CliRunner().invoke(app, [*path, f"{option}={value}"], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "notaurl"])
def test_a_service_url_that_cannot_be_reached_is_a_usage_error(url: str) -> None:
    result = CliRunner().invoke(app, ["status", "--service-url", url], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--service-url'" in result.output


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_output_that_cannot_be_written_is_one_line_not_a_traceback() -> None:
    with open("/dev/full", "wb") as full:
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", "config", "export", "--help"],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: cannot write the output: No space left on device"
    ], done.stderr


def test_a_reader_that_leaves_early_ends_the_command_quietly() -> None:
    command = [sys.executable, "-m", "pipeline", "--help"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None
        process.stdout.close()  # as `| head -1` does once it has its line
        _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert err == b""


@pytest.mark.parametrize(("typo", "meant"), [("backfil", "backfill"), ("topcs", "topics")])
def test_a_misspelt_command_is_answered_with_the_one_meant(typo: str, meant: str) -> None:
    """The root group loads a command's module only when it is looked up: its names are
    still all there to match a typo against."""
    result = CliRunner().invoke(app, [typo], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert f"No such command '{typo}'. Did you mean '{meant}'?" in result.output
