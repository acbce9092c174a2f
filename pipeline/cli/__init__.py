"""The ``sfamp`` command line: thin commands over the library.

Known errors (anything in :mod:`pipeline.errors`) become one clear line on
stderr and a non-zero exit; tracebacks are for bugs only.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any, Final

import typer

from pipeline import __version__
from pipeline.cli.help import FlagGroup, SfampTyper
from pipeline.errors import SfampError
from pipeline.gc_tuning import tune_gc

# Every command, in the order `sfamp --help` lists them: its module in pipeline.cli and
# the name there of its function, or of its Typer for a command group.
COMMANDS: Final[dict[str, tuple[str, str]]] = {
    "run": ("run_cmd", "run"),
    "backfill": ("backfill_cmd", "backfill"),
    "reconcile": ("reconcile_cmd", "reconcile"),
    "status": ("status_cmd", "status"),
    "demo": ("demo_cmd", "demo"),
    "console": ("console_cmd", "console_"),
    "config": ("config_cmd", "app"),
    "topics": ("topics_cmd", "app"),
    "replay": ("replay_cmd", "app"),
    "dlq": ("dlq_cmd", "app"),
    "sandbox": ("sandbox_cmd", "app"),
}


class CommandsOnDemand(FlagGroup):
    """The root group: a command's module is imported when that command is looked up.

    So ``sfamp backfill`` loads the backfill and what it uses, not the service, the
    console, the sandboxes and their libraries (aiohttp, aiosfstream, Jinja2), and
    starts about half a second sooner (README, "Command line"). The command list
    (``sfamp --help``) still loads them all, for each one's summary; a misspelt name
    is matched against the names alone ("Did you mean ...?").
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _CommandTable()

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # the names: loading none


class _CommandTable(MutableMapping[str, Any]):
    """Every command by name (:data:`COMMANDS`), each built the first time it is read."""

    def __init__(self) -> None:
        self._built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            if name not in COMMANDS:
                raise KeyError(name)
            self._built[name] = _load(name)
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*COMMANDS, *self._built]))

    def __len__(self) -> int:
        return len(COMMANDS.keys() | self._built.keys())


def _load(name: str) -> Any:
    """The click command of ``name``, built as ``app.command``/``app.add_typer`` would."""
    module_name, attribute = COMMANDS[name]
    target = getattr(importlib.import_module(f"pipeline.cli.{module_name}"), attribute)
    if isinstance(target, typer.Typer):
        group = typer.main.get_group(target)
        group.name = name
        return group
    single = SfampTyper(add_completion=False, pretty_exceptions_enable=False)
    single.command(name)(target)
    return typer.main.get_command(single)


app = SfampTyper(
    name="sfamp",
    help="Keep Amplitude group properties in step with Salesforce.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    cls=CommandsOnDemand,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sfamp {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version, is_eager=True
    ),
) -> None:
    """Keep Amplitude group properties in step with Salesforce.

    sfamp backfills every mapped Salesforce record once, then follows Change Data
    Capture through Kafka and flushes coalesced group-property updates to
    Amplitude on the configured cadence.
    """


def main() -> None:
    """Console entry point."""
    tune_gc()
    try:
        app()
    except SfampError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:
        # Output that cannot be written (`> /dev/full`, a full disk): one line, as any
        # error. Anything else is a bug and keeps its traceback. (A reader that left,
        # `| head -1`, is typer's: it exits 1 quietly.)
        if exc.errno not in UNWRITABLE_OUTPUT or exc.filename is not None:
            raise
        _drop_stdout()
        _fail(SfampError(f"cannot write the output: {exc.strerror}"))


# What writing to stdout fails with when the device or disk behind it cannot take it.
UNWRITABLE_OUTPUT: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG})


def _drop_stdout() -> None:
    """Send what stdout still buffers nowhere: its flush at exit would fail again."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _fail(exc: SfampError) -> None:
    # Imported here, as the command that failed has loaded it already (the error line's
    # console and style), while `sfamp --version` and `--help` need none of it.
    from pipeline.cli.common import fail

    fail(exc)
