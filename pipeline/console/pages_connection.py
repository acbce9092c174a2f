"""Connection (home): Salesforce, Amplitude, Kafka and the established connection.

Each part is asked at once and shown on its own: one that cannot be reached
says why without hiding the others. The Salesforce part is the one ``sfamp
status`` shows; the Amplitude key check is the one of ``sfamp config verify``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from aiohttp import web

from pipeline.config.checks import Check
from pipeline.config.settings import Settings
from pipeline.config.verify import check_amplitude
from pipeline.console.context import console_of, render
from pipeline.console.moments import moment_of_ms
from pipeline.errors import SfampError
from pipeline.kafka.config_topic import PublishedMapping, StoredRevision, stored_revision
from pipeline.kafka.inspect import quick_settings
from pipeline.runtime.cadence import describe
from pipeline.runtime.status_report import salesforce_status

# The longest the page waits for Amplitude to answer the key check; longer, it is shown
# as not checked (Amplitude's own timeout, 30 s by default, is for sending).
PAGE_WAIT_SECONDS: Final = 5.0


async def _salesforce(settings: Settings) -> dict[str, Any]:
    missing = [problem.path for problem in settings.salesforce.credential_problems()]
    if missing:
        return {"missing": missing}
    return await salesforce_status(settings)


async def _amplitude(settings: Settings) -> Check | None:
    """The key check of ``sfamp config verify``, waiting at most
    :data:`PAGE_WAIT_SECONDS` for an answer: the page waits for it."""
    if settings.amplitude.api_key is None:
        return None
    seconds = min(settings.amplitude.timeout_seconds, PAGE_WAIT_SECONDS)
    return await check_amplitude(settings.amplitude.model_copy(update={"timeout_seconds": seconds}))


async def _published(settings: Settings) -> StoredRevision | str:
    """What sfamp.config holds, or why Kafka could not say."""
    try:
        return await stored_revision(quick_settings(settings.kafka))
    except SfampError as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _published_view(published: PublishedMapping) -> dict[str, Any]:
    return {
        "revision": published.revision,
        "published_at": moment_of_ms(published.published_at_ms),
        "cadence": describe(published.mapping.sync_cadence),
        "relations": [
            {
                "object": m.sfdc_object,
                "group_type": m.group_type,
                "group_name_field": m.group_name_field,
                "properties": len(m.group_properties),
                "on_delete": m.on_delete,
            }
            for m in published.mapping.mappings
        ],
    }


async def connection_page(request: web.Request) -> web.Response:
    settings = console_of(request).settings
    salesforce, amplitude, published = await asyncio.gather(
        _salesforce(settings), _amplitude(settings), _published(settings)
    )
    stored = None if isinstance(published, str) else published
    unusable = None
    if stored is not None and stored.problem is not None:
        reason = str(stored.problem).splitlines()[0]
        unusable = f"{reason}; saving a mapping here replaces it"
    return render(
        request,
        "connection.html",
        settings=settings,
        salesforce=salesforce,
        amplitude=amplitude,
        kafka_error=published if isinstance(published, str) else None,
        published=_published_view(stored.published) if stored and stored.published else None,
        unusable=unusable,
    )


def register(app: web.Application) -> None:
    app.router.add_get("/", connection_page)
