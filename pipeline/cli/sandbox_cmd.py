"""``sfamp sandbox``: local stand-ins for Kafka, Salesforce and Amplitude.

Each command runs until SIGTERM or Ctrl-C and then stops everything it started,
the embedded broker's process included; a taken port is one line naming the
option that changes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import typer

from pipeline.cli.common import console, run_until_stopped
from pipeline.cli.help import SfampTyper
from pipeline.errors import KafkaUnavailableError, ListenError
from pipeline.wording import plural

# The emulators (sfamp_sandbox) are imported inside each command, so that loading the
# CLI for `sfamp run` loads none of them; tests/cli/test_cli_imports.py checks that
# these defaults match the emulators' own.
KAFKA_PORT = 19092
SALESFORCE_PORT = 8410
AMPLITUDE_PORT = 8420
MAX_LATENCY_MS = 60_000

app = SfampTyper(
    help="Run local stand-ins for Kafka, Salesforce and Amplitude (demo and tests).",
    no_args_is_help=True,
)

HOST = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 in a container).")
OTHER_PORT = "choose another port with --port"
OTHER_HOST = "choose another address with --host"
LATENCY = typer.Option(
    0,
    "--latency-ms",
    min=0,
    max=MAX_LATENCY_MS,
    help="Answer every API request this many milliseconds later, like a WAN round trip "
    "(0: at once; the control API is never delayed; change it with POST /__sandbox/latency).",
)


class Serve(Protocol):
    def __call__(
        self,
        host: str,
        port: int,
        *,
        ready: Callable[[str], None] | None = None,
        latency_ms: int = 0,
    ) -> Coroutine[Any, Any, None]: ...


def _alone_port(default: int) -> Any:
    return typer.Option(
        default, "--port", "-p", min=0, max=65535, help="Port to listen on (0: any free port)."
    )


@app.command()
def kafka(
    port: int = _alone_port(KAFKA_PORT),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
) -> None:
    """Run the embedded Kafka-compatible broker (memory only) until interrupted."""
    from pipeline.sandbox_stack import EMBEDDED_KAFKA_TUNING, export_lines
    from sfamp_sandbox.kafka import EmbeddedKafka

    async def run() -> None:
        broker = EmbeddedKafka(port, host=host)
        await _listening("embedded Kafka broker", host, broker.port, broker.start())
        try:
            console.print(
                f"embedded Kafka ready on [bold]{broker.bootstrap_servers}[/] "
                "(in-memory; Ctrl-C to stop)",
                highlight=False,
            )
            bootstrap = {"SFAMP_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers}
            _print_exports(export_lines(bootstrap | EMBEDDED_KAFKA_TUNING))
            code = await broker.wait()
        finally:
            broker.stop()
        raise KafkaUnavailableError(f"the embedded broker exited on its own (exit code {code})")

    _until_stopped(run())


@app.command()
def salesforce(
    port: int = _alone_port(SALESFORCE_PORT),
    host: str = HOST,
    latency_ms: int = LATENCY,
) -> None:
    """Run the Salesforce sandbox (OAuth, REST, Bulk API 2.0, CDC over CometD)."""
    from pipeline.sandbox_stack import export_lines, salesforce_environment
    from sfamp_sandbox import salesforce as salesforce_sandbox

    def ready(url: str) -> None:
        console.print(f"Salesforce sandbox on [bold]{url}[/] (Ctrl-C to stop)", highlight=False)
        _print_exports(export_lines(salesforce_environment(url)))

    serve = salesforce_sandbox.serve
    _until_stopped(_serve("Salesforce sandbox", serve, host, port, ready, latency_ms))


@app.command()
def amplitude(
    port: int = _alone_port(AMPLITUDE_PORT),
    host: str = HOST,
    latency_ms: int = LATENCY,
) -> None:
    """Run the Amplitude sandbox (/groupidentify, /2/httpapi, /batch, read-back)."""
    from pipeline.sandbox_stack import amplitude_environment, export_lines
    from sfamp_sandbox import amplitude as amplitude_sandbox

    def ready(url: str) -> None:
        console.print(f"Amplitude sandbox on [bold]{url}[/] (Ctrl-C to stop)", highlight=False)
        _print_exports(export_lines(amplitude_environment(url)))

    serve = amplitude_sandbox.serve
    _until_stopped(_serve("Amplitude sandbox", serve, host, port, ready, latency_ms))


def _port_option(name: str, default: int) -> Any:
    return typer.Option(
        default,
        f"--{name}-port",
        min=0,
        max=65535,
        help=f"Port of the {name.capitalize()} stand-in (0: any free port).",
    )


@app.command()
def up(
    host: str = HOST,
    kafka_port: int = _port_option("kafka", KAFKA_PORT),
    salesforce_port: int = _port_option("salesforce", SALESFORCE_PORT),
    amplitude_port: int = _port_option("amplitude", AMPLITUDE_PORT),
    seed: int = typer.Option(
        0, "--seed", min=0, help="Create this many Accounts in the Salesforce sandbox first."
    ),
    latency_ms: int = LATENCY,
) -> None:
    """Start Kafka and both sandboxes and leave them running until Ctrl-C or SIGTERM.

    Prints one block of SFAMP_* exports (credentials, Kafka, both URLs, the
    Amplitude keys, a free health port): paste it in another shell and every sfamp
    command, `sfamp run` included, uses the stack. A taken port is named with its
    option. A broker that exits on its own stops the stack with one line (exit 1).
    """
    from pipeline.sandbox_stack import SandboxStack, console_url, health_port_for_run
    from sfamp_sandbox.collector import collected_every
    from sfamp_sandbox.salesforce.seed import seed as sandbox_seed

    stack = SandboxStack(
        host=host,
        kafka_port=kafka_port,
        salesforce_port=salesforce_port,
        amplitude_port=amplitude_port,
        salesforce_options={"latency_ms": latency_ms},
        amplitude_options={"latency_ms": latency_ms},
    )

    async def run() -> None:
        async with collected_every(), stack:  # as each sandbox alone (sfamp_sandbox.collector)
            assert stack.salesforce is not None
            if seed:
                sandbox_seed(stack.salesforce.org, "Account", seed)
                console.print(f"seeded {plural(seed, 'Account')} in the Salesforce sandbox")
            console.print(
                "[bold green]sandbox stack is up[/] (Ctrl-C to stop everything)", highlight=False
            )
            _print_exports(stack.export_block(health_port_for_run()))
            console.print(
                f"# then, in that shell, sfamp console serves the web console at {console_url()}",
                highlight=False,
                soft_wrap=True,
            )
            assert stack.kafka is not None
            code = await stack.kafka.wait()  # a broker killed or crashed ends the stack
        raise KafkaUnavailableError(f"the embedded broker exited on its own (exit code {code})")

    _until_stopped(run())


async def _listening(what: str, host: str, port: int, start: Awaitable[object]) -> None:
    from sfamp_sandbox.kafka import EmbeddedKafkaError

    try:
        await start
    except OSError as exc:
        raise ListenError(what, host, port, exc, OTHER_PORT, change_host=OTHER_HOST) from exc
    except EmbeddedKafkaError as exc:
        raise KafkaUnavailableError(str(exc)) from exc


async def _serve(
    what: str,
    serve: Serve,
    host: str,
    port: int,
    ready: Callable[[str], None],
    latency_ms: int = 0,
) -> None:
    """Serve a sandbox; failing to listen (before ``ready``) is a :class:`ListenError`."""
    opened = False

    def on_ready(url: str) -> None:
        nonlocal opened
        opened = True
        ready(url)

    try:
        await serve(host, port, ready=on_ready, latency_ms=latency_ms)
    except OSError as exc:
        if opened:
            raise
        raise ListenError(what, host, port, exc, OTHER_PORT, change_host=OTHER_HOST) from exc


def _print_exports(block: str) -> None:
    """Exports as plain lines, never wrapped, so that they paste into a shell intact."""
    console.print("# paste into the shell where you run sfamp:", highlight=False)
    console.print(block, highlight=False, markup=False, soft_wrap=True)


def _until_stopped(main: Coroutine[Any, Any, None]) -> None:
    if run_until_stopped(main):
        console.print("stopped")
