"""``sfamp demo``: the product end to end on local stand-ins, then a clean exit."""

from __future__ import annotations

import asyncio

import typer

from pipeline.cli.common import console, fail
from pipeline.cli.topics_cmd import quiet_kafka_client
from pipeline.errors import SfampError
from pipeline.logs import configure_logging
from pipeline.sandbox.demo import run_demo

ACCOUNTS = typer.Option(300, "--accounts", min=10, max=100_000, help="Accounts to seed.")


def demo(accounts: int = ACCOUNTS) -> None:
    """Seed a sandbox org, backfill, stream live changes and show Amplitude before/after.

    Starts the embedded Kafka broker and both sandboxes on free ports, and stops
    them at the end. Nothing leaves this machine.
    """
    configure_logging("console", "error")
    quiet_kafka_client()
    try:
        asyncio.run(run_demo(console, accounts=accounts))
    except SfampError as exc:
        fail(exc)
