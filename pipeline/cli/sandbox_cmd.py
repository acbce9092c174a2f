"""``sfamp sandbox``: local stand-ins for Kafka, Salesforce and Amplitude."""

from __future__ import annotations

import asyncio

import typer

from pipeline.cli.common import console
from pipeline.sandbox.kafka import DEFAULT_PORT, EmbeddedKafka

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
