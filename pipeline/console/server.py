"""Serving the console until cancelled (``sfamp console`` cancels it on SIGINT / SIGTERM)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from aiohttp import web

from pipeline.config.settings import Settings
from pipeline.console.app import create_console_app
from pipeline.console.security import is_loopback
from pipeline.errors import ConfigError, ListenError

WHAT: Final = "web console"
CHANGE: Final = "choose another port with --port (or SFAMP_CONSOLE__PORT)"
CHANGE_HOST: Final = "choose another address with --host (or SFAMP_CONSOLE__HOST)"


def check_exposure(host: str, settings: Settings) -> None:
    """Refuse a non-loopback address without a token: anyone reaching it could change the
    mapping and replay dead letters."""
    if settings.console.token is None and not is_loopback(host):
        raise ConfigError(
            f"the console would listen on {host}, which is not a loopback address: set "
            "SFAMP_CONSOLE__TOKEN to require a sign-in, or use --host 127.0.0.1"
        )
    if settings.console.token is None and settings.console.trusted_proxies:
        raise ConfigError(
            "SFAMP_CONSOLE__TRUSTED_PROXIES is set: behind a proxy the console is reached "
            "from other hosts, so set SFAMP_CONSOLE__TOKEN to require a sign-in"
        )


def console_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}"


async def serve_console(
    settings: Settings,
    host: str,
    port: int,
    *,
    started: Callable[[str], None] | None = None,
) -> None:
    """Serve until cancelled; ``started`` gets the URL once the port is bound."""
    check_exposure(host, settings)
    runner = web.AppRunner(create_console_app(settings), access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise ListenError(WHAT, host, port, exc, CHANGE, change_host=CHANGE_HOST) from exc
        if started is not None:
            started(console_url(host, port))
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
