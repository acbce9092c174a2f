"""Helpers shared by the CLI command groups: output, errors, settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import orjson
import typer
from pydantic_core import PydanticCustomError
from rich.console import Console

from pipeline.config.settings import Settings, load_settings
from pipeline.errors import MappingError, SettingsError, SfampError
from pipeline.logs import configure_logging
from pipeline.runtime.mapping_file import MappingVersion
from pipeline.runtime.tasks import StopRequest, until_stopped

console = Console()

# --mapping, shared by the commands that run a mapping (run, backfill).
MAPPING = typer.Option(
    None,
    "--mapping",
    "-m",
    help="Mapping file; overrides SFAMP_MAPPING_FILE. The mapping published in "
    "sfamp.config runs instead when it is newer than the file (the warning "
    "mapping_file_older_than_published says so), or when neither is given.",
)
err_console = Console(stderr=True)

ChoiceT = TypeVar("ChoiceT", bound=StrEnum)
T = TypeVar("T")


def one_of(choices: type[ChoiceT]) -> Callable[[Any], ChoiceT]:
    """The ``parser`` of an option taking one of ``choices``.

    Typer's own choice check words a wrong value as "Value error, 'x' is not one of
    …"; this one says "'x' is not one of 'a', 'b'." (Typer shows the error its
    validation raises as it is, a plain ``ValueError`` with that prefix.)
    """

    def parse(value: Any) -> ChoiceT:
        if isinstance(value, choices):
            return value
        try:
            return choices(value)
        except ValueError:
            raise PydanticCustomError(
                "choice",
                "{value} is not one of {choices}.",
                {"value": repr(value), "choices": ", ".join(repr(c.value) for c in choices)},
            ) from None

    return parse


def fail(exc: SfampError, code: int = 1, *, hint: str | None = None) -> NoReturn:
    """Print a known error as one line (plus its listed problems, and ``hint`` on what to
    do when the error cannot say it) and exit."""
    message = str(exc).splitlines()[0]
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    # Settings, mapping and topic errors carry the list of what to fix: always print it.
    for problem in getattr(exc, "problems", ()):
        err_console.print(f"  {problem}", highlight=False, soft_wrap=True)
    if hint:
        err_console.print(f"  {hint}", highlight=False, soft_wrap=True)
    sys.exit(code)


def given_mapping_file(option: Path | None, settings: Settings) -> Path | None:
    """The mapping file a command is given: ``--mapping``, else ``SFAMP_MAPPING_FILE``
    (the environment or ``.env``). Raises :class:`MappingError` naming where a missing
    one was given, even when the command would not need to read it."""
    path, given_by = option, "--mapping"
    if path is None:
        path, given_by = settings.mapping_file, "SFAMP_MAPPING_FILE"
    if path is not None and not path.exists():
        raise MappingError(f"mapping file {path} does not exist (given by {given_by})")
    return path


def warn_if_passed_over(version: MappingVersion) -> None:
    """Say, in one line, that a newer published mapping runs instead of the file given."""
    file = version.passed_over
    if file is None:
        return
    path = file.source.removeprefix("file:")
    err_console.print(
        f"[yellow]warning:[/] {version.source} is newer than {path} and runs instead; "
        f"to run the file, publish it: sfamp config import {path}",
        highlight=False,
        soft_wrap=True,
    )


def settings_or_exit(**overrides: object) -> Settings:
    """Load settings and configure logging from them; bad settings end the process."""
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        fail(exc)
    configure_logging(settings.runtime.log_format, settings.runtime.log_level)
    return settings


def reporting_settings() -> Settings:
    """Settings for a command that reports its own outcome: only warnings and errors are
    logged, and aiokafka's connection attempts not at all.

    Its answer goes to stdout; stderr gets nothing but problems, so a table piped
    or mailed by cron is not interleaved with progress lines.
    """
    settings = settings_or_exit()
    level = settings.runtime.log_level
    configure_logging(settings.runtime.log_format, "error" if level == "error" else "warning")
    quiet_kafka_client()
    return settings


def quiet_kafka_client() -> None:
    """aiokafka logs every failed connection attempt; a command that ends with its own
    line (or table) on the outcome says it once."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def print_json(data: object) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def clause_lines(clauses: Sequence[str], width: int) -> list[str]:
    """Clauses joined by ", " into lines of at most ``width``, broken only between clauses."""
    lines: list[str] = []
    line = ""
    for clause in clauses:
        joined = f"{line}, {clause}" if line else clause
        if line and len(joined) > width - 1:  # room for the comma that ends the line
            lines.append(line + ",")
            joined = clause
        line = joined
    return [*lines, line] if line else lines


def print_clauses(clauses: Sequence[str], to: Console = console) -> None:
    """A summary line of clauses ("8 Salesforce API calls, ..., 1.8 s") that wraps only
    between clauses, so a number never ends a line without its unit."""
    for line in clause_lines(clauses, to.width):
        to.print(line, highlight=False, soft_wrap=True)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_until_stopped(main: Coroutine[Any, Any, object]) -> str | None:
    """Run ``main`` until it returns or SIGTERM / SIGINT cancels it; the signal's name
    (``"SIGINT"``, ``"SIGTERM"``) when one did, else None.

    Cancelling (rather than dying on the signal) lets ``main`` leave its ``async with``
    blocks, so a child process such as the embedded broker is stopped with it. Known
    errors end the process with one line.
    """
    try:
        return asyncio.run(_cancelled_by_signals(main))
    except SfampError as exc:
        fail(exc)


async def _cancelled_by_signals(main: Coroutine[Any, Any, object]) -> str | None:
    task = asyncio.ensure_future(main)
    received: list[str] = []

    def stop(signal_name: str) -> None:
        if not task.cancelling():  # a second signal must not cut the clean-up short
            received.append(signal_name)
            task.cancel()

    with on_stop_signals(stop):
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # cancelled from outside, not by a signal
            return received[0] if received else "SIGINT"  # a cancellation from within
    return None


@contextlib.contextmanager
def on_stop_signals(call: Callable[[str], object]) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM call ``call`` with the signal's name (``stop.set``
    of a :class:`StopRequest`, for a command that stops cleanly from its first step)."""
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, call, sig.name)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def unless_stopped(work: Coroutine[Any, Any, T], stop: StopRequest) -> tuple[T] | None:
    """``(result,)`` of ``work``, or None when ``stop`` is set first (``work`` is then
    cancelled); the tuple tells a stop from a result that is None."""
    results: list[T] = []

    async def kept() -> None:
        results.append(await work)

    if await until_stopped(kept(), stop) is not None:
        return None
    return (results[0],)
