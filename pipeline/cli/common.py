"""Helpers shared by the CLI command groups: output, errors, settings."""

from __future__ import annotations

import sys
from typing import NoReturn

import orjson
import typer
from rich.console import Console

from pipeline.config.settings import Settings, load_settings
from pipeline.errors import MappingError, SettingsError, SfampError
from pipeline.logs import configure_logging

console = Console()

# --mapping, shared by the commands that run a mapping (run, backfill).
MAPPING = typer.Option(
    None,
    "--mapping",
    "-m",
    help="Mapping file; overrides SFAMP_MAPPING_FILE. Without either, the mapping "
    "published in sfamp.config is used.",
)
err_console = Console(stderr=True)


def fail(exc: SfampError, code: int = 1) -> NoReturn:
    """Print a known error as one line (plus its listed problems) and exit."""
    message = str(exc).splitlines()[0] if not isinstance(exc, SettingsError) else str(exc)
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    if isinstance(exc, MappingError):
        for problem in exc.problems:
            err_console.print(f"  {problem}", highlight=False, soft_wrap=True)
    sys.exit(code)


def settings_or_exit(**overrides: object) -> Settings:
    """Load settings and configure logging from them; bad settings end the process."""
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        fail(exc)
    configure_logging(settings.runtime.log_format, settings.runtime.log_level)
    return settings


def print_json(data: object) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
