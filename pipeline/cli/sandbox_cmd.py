"""``sfamp sandbox``: local stand-ins for Kafka, Salesforce and Amplitude."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import typer

from pipeline.cli.common import console
from pipeline.sandbox import amplitude as amplitude_sandbox
from pipeline.sandbox import salesforce as salesforce_sandbox
from pipeline.sandbox.kafka import DEFAULT_PORT, EmbeddedKafka
from pipeline.sandbox.salesforce.seed import seed as sandbox_seed
from pipeline.sandbox.stack import SandboxStack

app = typer.Typer(
    help="Run local stand-ins for Kafka, Salesforce and Amplitude (demo and tests).",
    no_args_is_help=True,
)


@app.command()
def kafka(
    port: int = typer.Option(DEFAULT_PORT, "--port", "-p", help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
) -> None:
    """Run the embedded Kafka-compatible broker (memory only) until interrupted."""

    async def run() -> None:
        async with EmbeddedKafka(port, host=host) as broker:
            console.print(
                f"embedded Kafka ready on [bold]{broker.bootstrap_servers}[/] "
                "(in-memory; Ctrl-C to stop)\n"
                f"export SFAMP_KAFKA__BOOTSTRAP_SERVERS={broker.bootstrap_servers}",
                highlight=False,
            )
            await broker.wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        console.print("stopped")


HOST = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 in a container).")


@app.command()
def salesforce(
    port: int = typer.Option(
        salesforce_sandbox.DEFAULT_PORT, "--port", "-p", help="Port to listen on."
    ),
    host: str = HOST,
) -> None:
    """Run the Salesforce sandbox (OAuth, REST, Bulk API 2.0, CDC over CometD)."""

    def ready(url: str) -> None:
        console.print(
            f"Salesforce sandbox on [bold]{url}[/] (Ctrl-C to stop)\n"
            f"export SFAMP_SALESFORCE__LOGIN_URL={url}",
            highlight=False,
        )

    _until_interrupted(salesforce_sandbox.serve(host, port, ready=ready))


@app.command()
def amplitude(
    port: int = typer.Option(
        amplitude_sandbox.DEFAULT_PORT, "--port", "-p", help="Port to listen on."
    ),
    host: str = HOST,
) -> None:
    """Run the Amplitude sandbox (/groupidentify, /2/httpapi, /batch, read-back)."""

    def ready(url: str) -> None:
        console.print(
            f"Amplitude sandbox on [bold]{url}[/] (Ctrl-C to stop)\n"
            f"export SFAMP_AMPLITUDE__BASE_URL={url}\n"
            f"export SFAMP_AMPLITUDE__API_KEY={amplitude_sandbox.US_API_KEY}",
            highlight=False,
        )

    _until_interrupted(amplitude_sandbox.serve(host, port, ready=ready))


@app.command()
def up(
    host: str = HOST,
    seed: int = typer.Option(
        0, "--seed", help="Create this many Accounts in the Salesforce sandbox first."
    ),
) -> None:
    """Start Kafka and both sandboxes on their default ports and leave them running.

    Prints the SFAMP_* variables to export in another terminal.
    """

    async def run() -> None:
        stack = SandboxStack(
            host=host,
            kafka_port=DEFAULT_PORT,
            salesforce_port=salesforce_sandbox.DEFAULT_PORT,
            amplitude_port=amplitude_sandbox.DEFAULT_PORT,
        )
        async with stack:
            assert stack.salesforce is not None
            if seed:
                sandbox_seed(stack.salesforce.org, "Account", seed)
            exports = "\n".join(f"export {k}={v}" for k, v in stack.environment().items())
            console.print(
                "[bold green]sandbox stack is up[/] (Ctrl-C to stop everything)\n" + exports,
                highlight=False,
            )
            await asyncio.Event().wait()

    _until_interrupted(run())


def _until_interrupted(main: Coroutine[Any, Any, None]) -> None:
    try:
        asyncio.run(main)
    except KeyboardInterrupt:
        console.print("stopped")
