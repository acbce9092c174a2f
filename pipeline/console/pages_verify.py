"""Final verification (after Next), Save, and the Saved page.

The checks are :func:`pipeline.config.verify.verify_mapping`, those of ``sfamp
config verify``; Save publishes with :func:`pipeline.kafka.config_topic.publish_mapping`
as ``sfamp config import`` does, after the same checks once more: the page's
hidden mapping comes back from the browser and is not trusted to be the one verified.

Save is conditional on the revision the form was loaded from (its hidden
``base_revision``): if ``sfamp.config`` has moved on since (``sfamp config import``,
another tab), it refuses rather than publish an older mapping over the newer one.
A mapping equal to the current one publishes nothing. Save answers with a redirect
to the Saved page (Post/Redirect/Get), so reloading that page repeats nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson
from aiohttp import web

from pipeline.config.checks import VerifyReport
from pipeline.config.mapping import MappingConfig
from pipeline.config.validation import dump_mapping, parse_mapping
from pipeline.config.verify import verify_mapping
from pipeline.console.context import (
    Console,
    console_of,
    form_fields,
    redirect_get,
    render,
    session_of,
)
from pipeline.console.forms import form_from_document, form_from_fields
from pipeline.console.pages_mapping import base_revision_of, checked, form_page
from pipeline.errors import MappingError, Problem, SfampError
from pipeline.kafka.config_topic import publish_mapping, same_mapping, stored_revision
from pipeline.kafka.inspect import quick_settings
from pipeline.kafka.topics import TopicNames
from pipeline.runtime.status_report import service_status

SAVED_PATH: Final = "/mapping/saved"


@dataclass(frozen=True, slots=True)
class SaveOutcome:
    """What Save did: ``published`` a new revision, found the mapping ``unchanged``, or
    found that another revision was published since the form was loaded (``moved``)."""

    kind: Literal["published", "unchanged", "moved"]
    revision: int
    mapping_json: str = ""
    # The objects whose existing groups get what a new revision adds only from a backfill.
    backfill: tuple[str, ...] = ()
    # The first revision ever published: its records reach Amplitude from a whole backfill.
    first: bool = False


async def _verification(
    request: web.Request,
    mapping: MappingConfig,
    report: VerifyReport,
    base_revision: int,
    *,
    status: int | None = None,
    **context: Any,
) -> web.Response:
    context.setdefault("error", None)
    context.setdefault("moved_to", None)
    context.setdefault("service_file", None)
    return render(
        request,
        "verification.html",
        status=status or (200 if report.ok else 422),
        report=report,
        mapping_json=dump_mapping(mapping),
        base_revision=base_revision,
        **context,
    )


async def verify(request: web.Request) -> web.Response:
    """Next: the form must validate; then every online check runs and shows as a table.

    Nothing changes here: a reload asks the browser to send the form again and only
    runs the checks again.
    """
    console = console_of(request)
    fields = await form_fields(request)
    base = base_revision_of(fields)
    form = form_from_fields(fields)
    document, problems = checked(console, form)
    if problems:
        return await form_page(request, form, base_revision=base, status=422)
    mapping = MappingConfig.model_validate(document)
    report, service = await asyncio.gather(
        verify_mapping(console.settings, mapping), service_status(console.service_url)
    )
    # A service running its mapping file runs the newer of it and the published revision:
    # Save then takes over from the file (until the file changes again).
    running = str(service.get("mapping_revision") or "")
    service_file = running.removeprefix("file:") if running.startswith("file:") else None
    return await _verification(request, mapping, report, base, service_file=service_file)


def _mapping_from(console: Console, text: str) -> MappingConfig:
    mapping = parse_mapping(text, source="the mapping")
    _, problems = checked(console, form_from_document(mapping.model_dump(mode="json")))
    if problems:
        raise MappingError(f"the mapping has {len(problems)} problem(s)", problems)
    return mapping


async def publish_over(console: Console, mapping: MappingConfig, base: int) -> SaveOutcome:
    """Publish ``mapping`` if revision ``base`` is still the current one and differs from it.

    The console saves one at a time (``console.saving``); a publication by another
    process between this read and the write is not excluded (Kafka offers no compare
    and set here), only made a matter of milliseconds instead of however long a tab
    stayed open.
    """
    stored = await stored_revision(quick_settings(console.settings.kafka))
    current, revision = stored.published, stored.revision
    if revision != base:
        return SaveOutcome("moved", revision)
    if current is not None and same_mapping(current.mapping, mapping):
        return SaveOutcome("unchanged", revision, dump_mapping(mapping))
    published = await publish_mapping(console.settings.kafka, mapping, now_ms=console.now_ms())
    previous = stored.mapping  # as far as the format reads one this version refuses
    backfill = mapping.objects_to_backfill(previous) if previous is not None else []
    return SaveOutcome(
        "published", published.revision, dump_mapping(mapping), tuple(backfill), revision == 0
    )


async def save(request: web.Request) -> web.StreamResponse:
    """Save: verify again, then publish a new revision over the one the form came from."""
    console = console_of(request)
    fields = await form_fields(request)
    text, base = fields.get("mapping", ""), base_revision_of(fields)
    try:
        mapping = _mapping_from(console, text)
    except MappingError as exc:
        problems = list(exc.problems) or [Problem("$", str(exc))]
        form = form_from_document(_document(text))
        return await form_page(request, form, base_revision=base, status=422, extra=problems)
    report = await verify_mapping(console.settings, mapping)
    if not report.ok:
        return await _verification(
            request, mapping, report, base, error="A check failed: not saved."
        )
    try:
        async with console.saving:
            outcome = await publish_over(console, mapping, base)
    except SfampError as exc:
        message = f"Not saved: {str(exc).splitlines()[0]}"
        return await _verification(request, mapping, report, base, error=message)
    if outcome.kind == "moved":
        error = (
            f"revision {outcome.revision} was published since you loaded this form; "
            "reload to see it"
            if outcome.revision
            else "the published mapping was withdrawn since you loaded this form; reload to see it"
        )
        return await _verification(
            request, mapping, report, base, status=409, error=error, moved_to=outcome.revision
        )
    key = console.results.keep(session_of(request), outcome)
    raise web.HTTPSeeOther(f"{SAVED_PATH}?result={key}")


async def saved_page(request: web.Request) -> web.Response:
    """What Save did; the result is kept by its key, so a reload shows it again."""
    console = console_of(request)
    outcome = console.results.get(session_of(request), request.query.get("result"))
    if not isinstance(outcome, SaveOutcome):
        raise web.HTTPSeeOther("/mapping")  # an old or foreign key: the current mapping
    return render(
        request,
        "saved.html",
        outcome=outcome,
        topic=TopicNames(console.settings.kafka.topic_prefix).config,
    )


def _document(text: str) -> object:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}


def register(app: web.Application) -> None:
    app.router.add_post("/mapping/verify", verify)
    app.router.add_post("/mapping/save", save)
    app.router.add_get(SAVED_PATH, saved_page)
    for path in ("/mapping/verify", "/mapping/save"):
        app.router.add_get(path, redirect_get("/mapping"))
