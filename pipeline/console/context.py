"""What every console page shares: the settings, the sessions, the org catalog, rendering.

Templates are Jinja2 with autoescaping on; every rendered value passes through
the secret redactor (:func:`pipeline.console.security.redactor`), and every page
gets the session's CSRF token for its forms and for the meta tag htmx reads.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import jinja2
from aiohttp import web
from jinja2.runtime import Context
from markupsafe import Markup, escape
from multidict import MultiDictProxy

from pipeline.config.settings import Settings
from pipeline.console.catalog import OrgCatalog
from pipeline.console.moments import moment
from pipeline.console.security import CSRF, SESSION, Sessions, redactor
from pipeline.console.sign_in_limit import SignInLimiter
from pipeline.wording import plural

NAVIGATION: Final = (
    ("/", "Connection"),
    ("/mapping", "Mapping setup"),
    ("/status", "Status"),
    ("/dead-letters", "Dead letters"),
)
# Where a long address may wrap: after @ / ? & = and before a dot (never inside "//").
SOFT_BREAK: Final = re.compile(r"(?<=[@/?&=])(?=[^/])|(?<=[^./])(?=\.)")
# What a POST did, kept for the page it redirects to (Post/Redirect/Get): a few at most.
KEPT_RESULTS: Final = 32


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold: none of them may reach a browser."""
    candidates = (
        settings.salesforce.client_secret,
        settings.salesforce.password,
        settings.salesforce.security_token,
        settings.salesforce.refresh_token,
        settings.kafka.sasl_password,
        settings.amplitude.api_key,
        settings.amplitude.secret_key,
        settings.console.token,
    )
    return [secret.get_secret_value() for secret in candidates if secret is not None]


def breakable(finalize: Callable[[object], object]) -> Callable[[object], Markup]:
    """A filter: the value escaped, with ``<wbr>`` where a long address may wrap (emails,
    URLs, host:port lists), so a narrow column breaks it there and not inside a word.

    The value is redacted first: a secret cut by ``<wbr>`` would escape ``finalize``.
    """

    def apply(value: object) -> Markup:
        text = str(finalize(value))
        return Markup("<wbr>").join(escape(part) for part in SOFT_BREAK.split(text))

    return apply


@jinja2.pass_context
def _moment(context: Context, value: object) -> Markup:
    """A filter: an ISO time as ``<time>``, its clock time in UTC and how long ago (or how
    soon) as text, the exact time in ``datetime`` and ``title``; other values as they are."""
    if value is None or value == "":
        return Markup("-")
    found = moment(str(value), context["now"])
    if found is None:
        return escape(value)
    return Markup('<time datetime="{0}" title="{0}">{1}</time>').format(found.iso, found.text)


def template_environment(settings: Settings) -> jinja2.Environment:
    finalize = redactor(secret_values(settings))
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=finalize,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["breakable"] = breakable(finalize)
    environment.filters["moment"] = _moment
    environment.globals["plural"] = plural
    return environment


class RecentResults:
    """What recent POSTs did, by a one-time key, for the page each redirects to: a reload
    of that page shows it again and repeats nothing. Only the session that made a result
    sees it; the oldest go first."""

    def __init__(self, size: int = KEPT_RESULTS) -> None:
        self._size = size
        self._kept: OrderedDict[str, tuple[str, Any]] = OrderedDict()

    def keep(self, session: str, result: Any) -> str:
        key = secrets.token_urlsafe(9)
        self._kept[key] = (session, result)
        while len(self._kept) > self._size:
            self._kept.popitem(last=False)
        return key

    def get(self, session: str, key: str | None) -> Any:
        owner, result = self._kept.get(key or "", ("", None))
        return result if owner == session else None


@dataclass
class Console:
    """One console process's shared parts (an aiohttp application key holds it)."""

    settings: Settings
    sessions: Sessions
    catalog: OrgCatalog
    templates: jinja2.Environment
    service_url: str | None  # None: the health endpoint is off (see service_url_of)
    clock: Callable[[], float] = time.time
    extra: dict[str, Any] = field(default_factory=dict)
    # One Save at a time in this process: two tabs saving at once would both see the
    # same current revision and both publish over it.
    saving: asyncio.Lock = field(default_factory=asyncio.Lock)
    results: RecentResults = field(default_factory=RecentResults)
    sign_ins: SignInLimiter = field(default_factory=SignInLimiter)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)


CONSOLE: Final = web.AppKey("console", Console)


def console_of(request: web.Request) -> Console:
    return request.app[CONSOLE]


def is_htmx(request: web.Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def render_text(request: web.Request, template: str, **context: Any) -> str:
    console = console_of(request)
    return console.templates.get_template(template).render(
        csrf=request.get(CSRF, ""),
        navigation=NAVIGATION,
        path=request.path,
        signed_in_by_token=console.sessions.needs_sign_in,
        now=console.clock(),
        **context,
    )


def render(
    request: web.Request, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    """A page or fragment from ``templates/``, with the CSRF token and navigation in context."""
    return web.Response(
        text=render_text(request, template, **context),
        status=status,
        content_type="text/html",
    )


async def form_fields(request: web.Request) -> dict[str, str]:
    """The posted text fields (files are left out); the last value of a repeated name wins."""
    posted: MultiDictProxy[Any] = await request.post()
    return text_fields(posted)


def session_of(request: web.Request) -> str:
    return str(request.get(SESSION, ""))


def text_fields(values: Mapping[str, Any]) -> dict[str, str]:
    return {name: value for name, value in values.items() if isinstance(value, str)}


def redirect_get(target: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A GET handler for a path only POSTs use: it sends the browser to ``target``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther(target)

    return handler
