"""``sfamp console``: the web console over the same library code as these commands."""

from __future__ import annotations

import typer

from pipeline.cli.common import console, fail, run_until_stopped, settings_or_exit
from pipeline.errors import ConfigError

HOST = typer.Option(
    None,
    "--host",
    help="Address to listen on (default SFAMP_CONSOLE__HOST, 127.0.0.1). Any address but a "
    "loopback one requires SFAMP_CONSOLE__TOKEN.",
    show_default=False,
)
PORT = typer.Option(
    None,
    "--port",
    min=1,
    max=65535,
    help="Port to listen on (default SFAMP_CONSOLE__PORT, 8430).",
    show_default=False,
)


def console_(host: str | None = HOST, port: int | None = PORT) -> None:
    """Serve the web console: connection, mapping setup, status and dead letters.

    Set up the mapping in a browser (cadence, group mappings, validation on every
    change, final verification, Save publishes to sfamp.config), copy, export and
    import it, watch the running service's status and replay dead letters. It uses
    the same SFAMP_* settings as every other command; secrets are never shown.

    With SFAMP_CONSOLE__TOKEN set, the console asks for the token once per browser
    session; every change also needs the page's CSRF token. Stop it with Ctrl-C.
    """
    # The web stack (Jinja2, the pages) loads only for this command, not for every sfamp call.
    from pipeline.console.server import check_exposure, serve_console

    settings = settings_or_exit()
    host = host or settings.console.host
    port = port or settings.console.port
    try:
        check_exposure(host, settings)
    except ConfigError as exc:
        fail(exc, code=2)

    def started(url: str) -> None:
        console.print(f"sfamp console on [bold]{url}[/] (Ctrl-C to stop)", highlight=False)

    run_until_stopped(serve_console(settings, host, port, started=started))
