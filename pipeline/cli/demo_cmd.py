"""``sfamp demo``: the product end to end on local stand-ins, then a clean exit (or ``--keep``)."""

from __future__ import annotations

import signal
import sys
from typing import Any

import typer

from pipeline.cli.common import console, quiet_kafka_client, run_until_stopped
from pipeline.logs import configure_logging

ACCOUNTS = typer.Option(300, "--accounts", min=10, max=100_000, help="Accounts to seed.")
KEEP = typer.Option(
    False,
    "--keep",
    help="Leave the stack and its data running after the demo (until Ctrl-C or SIGTERM) "
    "and print the exports and commands to explore it from another shell.",
)


def _port(name: str) -> Any:
    return typer.Option(
        0,
        f"--{name.lower()}-port",
        min=0,
        max=65535,
        help=f"Port of the {name} stand-in (0: a free one).",
    )


def demo(
    accounts: int = ACCOUNTS,
    keep: bool = KEEP,
    kafka_port: int = _port("Kafka"),
    salesforce_port: int = _port("Salesforce"),
    amplitude_port: int = _port("Amplitude"),
) -> None:
    """Seed a sandbox org, backfill, stream live changes and show Amplitude before/after.

    Starts the embedded Kafka broker and both sandboxes (on free ports unless the
    --*-port options say otherwise) and stops them at the end, or on Ctrl-C with
    --keep. Nothing leaves this machine. Exits 0 once the demo finished; Ctrl-C or
    SIGTERM before that stops everything and exits 130 or 143.
    """
    from pipeline.demo import run_demo
    from pipeline.sandbox_stack import SandboxStack

    configure_logging("console", "error")
    quiet_kafka_client()
    stack = SandboxStack(
        kafka_port=kafka_port, salesforce_port=salesforce_port, amplitude_port=amplitude_port
    )
    finished: list[bool] = []
    demo_run = run_demo(
        console, accounts=accounts, stack=stack, keep=keep, finished=lambda: finished.append(True)
    )
    stopped_by = run_until_stopped(demo_run)
    if stopped_by:
        console.print("stopped")
        if not finished:  # interrupted: not a success, as any command stopped midway
            sys.exit(128 + signal.Signals[stopped_by].value)
