"""The console's aiohttp application: pages, static files, sessions and security headers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final

from aiohttp import web

from pipeline.config.settings import Settings
from pipeline.console import (
    oauth_routes,
    pages_connection,
    pages_dead_letters,
    pages_mapping,
    pages_status,
    pages_verify,
)
from pipeline.console.catalog import OrgCatalog
from pipeline.console.context import CONSOLE, Console, template_environment
from pipeline.console.login import register as register_login
from pipeline.console.proxies import forwarded_middleware
from pipeline.console.security import (
    Sessions,
    headers_middleware,
    origin_middleware,
    session_middleware,
)
from pipeline.console.sign_in_limit import SignInLimiter
from pipeline.runtime.status_report import default_service_url

STATIC: Final = Path(__file__).parent / "static"
# A mapping file is small; an upload bigger than this is refused before it is read.
MAX_REQUEST_BYTES: Final = 2 << 20


def service_url_of(settings: Settings) -> str | None:
    """Where the running service's /status answers (the Status page reads it); None when
    the health endpoint is off and no URL was given."""
    url = settings.console.service_url or default_service_url(settings)
    return None if url is None else url.rstrip("/")


def create_console_app(
    settings: Settings, *, clock: Callable[[], float] | None = None
) -> web.Application:
    """The whole console for ``settings``; ``clock`` (seconds) exists for tests."""
    token = settings.console.token.get_secret_value() if settings.console.token else None
    sessions = Sessions(token)
    console = Console(
        settings=settings,
        sessions=sessions,
        catalog=OrgCatalog(settings.salesforce),
        templates=template_environment(settings),
        service_url=service_url_of(settings),
    )
    if clock is not None:
        console.clock = clock
        console.sign_ins = SignInLimiter(clock=clock)
    app = web.Application(
        middlewares=[
            forwarded_middleware(settings.console.trusted_proxies),
            headers_middleware(),
            origin_middleware(sessions),
            session_middleware(sessions),
        ],
        client_max_size=MAX_REQUEST_BYTES,
    )
    app[CONSOLE] = console
    app.cleanup_ctx.append(_close_catalog)
    register_login(app)
    for pages in (
        pages_connection,
        pages_mapping,
        pages_verify,
        pages_status,
        pages_dead_letters,
    ):
        pages.register(app)
    oauth_routes.register(app)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    return app


async def _close_catalog(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[CONSOLE].catalog.aclose()
