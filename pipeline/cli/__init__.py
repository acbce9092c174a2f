"""The ``sfamp`` command line: thin commands over the library.

Known errors (anything in :mod:`pipeline.errors`) become one clear line on
stderr and a non-zero exit; tracebacks are for bugs only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import Final

import typer

from pipeline import __version__
from pipeline.cli import (
    backfill_cmd,
    config_cmd,
    console_cmd,
    demo_cmd,
    dlq_cmd,
    reconcile_cmd,
    replay_cmd,
    run_cmd,
    sandbox_cmd,
    status_cmd,
    topics_cmd,
)
from pipeline.cli.common import fail
from pipeline.cli.help import SfampTyper
from pipeline.errors import SfampError
from pipeline.gc_tuning import tune_gc

app = SfampTyper(
    name="sfamp",
    help="Keep Amplitude group properties in step with Salesforce.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(config_cmd.app, name="config")
app.command("run")(run_cmd.run)
app.command("backfill")(backfill_cmd.backfill)
app.command("reconcile")(reconcile_cmd.reconcile)
app.command("status")(status_cmd.status)
app.command("demo")(demo_cmd.demo)
app.add_typer(topics_cmd.app, name="topics")
app.add_typer(replay_cmd.app, name="replay")
app.add_typer(dlq_cmd.app, name="dlq")
app.add_typer(sandbox_cmd.app, name="sandbox")
app.command("console")(console_cmd.console_)


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
        fail(exc)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:
        # Output that cannot be written (`> /dev/full`, a full disk): one line, as any
        # error. Anything else is a bug and keeps its traceback. (A reader that left,
        # `| head -1`, is typer's: it exits 1 quietly.)
        if exc.errno not in UNWRITABLE_OUTPUT or exc.filename is not None:
            raise
        _drop_stdout()
        fail(SfampError(f"cannot write the output: {exc.strerror}"))


# What writing to stdout fails with when the device or disk behind it cannot take it.
UNWRITABLE_OUTPUT: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG})


def _drop_stdout() -> None:
    """Send what stdout still buffers nowhere: its flush at exit would fail again."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
