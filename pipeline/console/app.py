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
from pipeline.console.context import CONSOLE, Console, render, template_environment
from pipeline.console.login import register as register_login
from pipeline.console.proxies import Handler, forwarded_middleware
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
            _no_such_page,
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


@web.middleware
async def _no_such_page(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An address no route serves: a page with the console's navigation and where to go,
    rather than aiohttp's bare "404: Not Found" text. A handler's own 404 (an export with
    nothing published) keeps its one line."""
    if request.match_info.http_exception is None or request.method not in ("GET", "HEAD"):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return render(request, "not_found.html", status=404)


async def _close_catalog(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[CONSOLE].catalog.aclose()
