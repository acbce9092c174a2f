"""``sfamp --help`` reads well: one short sentence per command, no type beside a flag."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli import app

ROOT = typer.main.get_command(app)


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


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
