"""Helpers shared by the CLI command groups: output, errors, settings."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn

import orjson
import typer
from rich.console import Console

from pipeline.config.settings import Settings, load_settings
from pipeline.errors import SettingsError, SfampError
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
    message = str(exc).splitlines()[0]
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    # Settings, mapping and topic errors carry the list of what to fix: always print it.
    for problem in getattr(exc, "problems", ()):
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


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_until_stopped(main: Coroutine[Any, Any, object]) -> bool:
    """Run ``main`` until it returns or SIGTERM / SIGINT cancels it; True when a signal did.

    Cancelling (rather than dying on the signal) lets ``main`` leave its ``async with``
    blocks, so a child process such as the embedded broker is stopped with it. Known
    errors end the process with one line.
    """
    try:
        return asyncio.run(_cancelled_by_signals(main))
    except SfampError as exc:
        fail(exc)


async def _cancelled_by_signals(main: Coroutine[Any, Any, object]) -> bool:
    task = asyncio.ensure_future(main)

    def stop() -> None:
        if not task.cancelling():  # a second signal must not cut the clean-up short
            task.cancel()

    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop)
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # cancelled from outside, not by a signal
        return True
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    return False
