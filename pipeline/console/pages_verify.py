"""Final verification (after Next) and Save.

The checks are :func:`pipeline.config.verify.verify_mapping`, those of ``sfamp
config verify``; Save publishes with :func:`pipeline.kafka.config_topic.publish_mapping`
as ``sfamp config import`` does, after the same checks once more: the page's
hidden mapping comes back from the browser and is not trusted to be the one verified.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from pipeline.config.checks import VerifyReport
from pipeline.config.mapping import MappingConfig
from pipeline.config.validation import dump_mapping, parse_mapping
from pipeline.config.verify import verify_mapping
from pipeline.console.context import Console, console_of, form_fields, render
from pipeline.console.forms import form_from_document, form_from_fields
from pipeline.console.pages_mapping import checked, form_view
from pipeline.errors import MappingError, Problem, SfampError
from pipeline.kafka.config_topic import publish_mapping
from pipeline.kafka.topics import TopicNames


async def _verification(
    request: web.Request, mapping: MappingConfig, report: VerifyReport, **context: Any
) -> web.Response:
    context.setdefault("error", None)
    return render(
        request,
        "verification.html",
        status=200 if report.ok else 422,
        report=report,
        mapping_json=dump_mapping(mapping),
        **context,
    )


async def _back_to_form(
    request: web.Request, document: object, problems: list[Problem]
) -> web.Response:
    view = await form_view(console_of(request), form_from_document(document), problems)
    return render(request, "mapping.html", status=422, revision=None, notice=None, **view)


async def verify(request: web.Request) -> web.Response:
    """Next: the form must validate; then every online check runs and shows as a table."""
    console = console_of(request)
    form = form_from_fields(await form_fields(request))
    document, problems = checked(console, form)
    if problems:
        view = await form_view(console, form)
        return render(request, "mapping.html", status=422, revision=None, notice=None, **view)
    mapping = MappingConfig.model_validate(document)
    report = await verify_mapping(console.settings, mapping)
    return await _verification(request, mapping, report)


def _mapping_from(console: Console, text: str) -> MappingConfig:
    mapping = parse_mapping(text, source="the mapping")
    _, problems = checked(console, form_from_document(mapping.model_dump(mode="json")))
    if problems:
        raise MappingError(f"the mapping has {len(problems)} problem(s)", problems)
    return mapping


async def save(request: web.Request) -> web.Response:
    """Save: verify again, then publish a new revision to sfamp.config."""
    console = console_of(request)
    text = (await form_fields(request)).get("mapping", "")
    try:
        mapping = _mapping_from(console, text)
    except MappingError as exc:
        problems = list(exc.problems) or [Problem("$", str(exc))]
        return await _back_to_form(request, _document(text), problems)
    report = await verify_mapping(console.settings, mapping)
    if not report.ok:
        return await _verification(request, mapping, report, error="A check failed: not saved.")
    try:
        published = await publish_mapping(console.settings.kafka, mapping, now_ms=console.now_ms())
    except SfampError as exc:
        message = f"Not saved: {str(exc).splitlines()[0]}"
        return await _verification(request, mapping, report, error=message)
    return render(
        request,
        "saved.html",
        revision=published.revision,
        topic=TopicNames(console.settings.kafka.topic_prefix).config,
        mapping_json=dump_mapping(mapping),
    )


def _document(text: str) -> object:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}


def register(app: web.Application) -> None:
    app.router.add_post("/mapping/verify", verify)
    app.router.add_post("/mapping/save", save)
