"""Dead letters: entries with reason and time; Replay one or all, Dismiss one or every
unreplayable one.

The same calls as ``sfamp dlq list``, ``sfamp dlq replay`` and ``sfamp dlq dismiss``
(:func:`pipeline.kafka.dlq.read_dlq`, :func:`pipeline.runtime.dlq_redeliver.replay_dead_letters`,
:func:`pipeline.runtime.dlq_dismiss.dismiss_dead_letters`): a replay re-reads the
records from Salesforce and sends what they hold now, never the stale payload, and
marks the replayed entries; a dismissal marks an entry settled without sending
anything (for entries no replay can deliver).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from pipeline.console.context import (
    console_of,
    form_fields,
    redirect_get,
    render,
    session_of,
)
from pipeline.errors import SfampError
from pipeline.kafka.dlq import DlqView, read_dlq
from pipeline.kafka.inspect import KafkaInspector
from pipeline.runtime.dlq_dismiss import Dismissal, dismiss_dead_letters
from pipeline.runtime.dlq_redeliver import RedeliveryOutcome, replay_dead_letters

CONSOLE_NOTE = "dismissed in the console"


async def _view(request: web.Request) -> DlqView | str:
    settings = console_of(request).settings
    try:
        async with KafkaInspector(settings.kafka) as inspector:
            return await read_dlq(inspector)
    except SfampError as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


async def _page(
    request: web.Request,
    outcomes: list[RedeliveryOutcome] | None = None,
    error: str | None = None,
    dismissed: list[Dismissal] | None = None,
) -> web.Response:
    view = await _view(request)
    return render(
        request,
        "dead_letters.html",
        view=None if isinstance(view, str) else view,
        items=[] if isinstance(view, str) else [item.as_json() for item in view.items],
        kafka_error=view if isinstance(view, str) else None,
        outcomes=outcomes,
        dismissed=dismissed,
        error=error,
    )


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What one Replay did, kept for the page it redirects to."""

    outcomes: list[RedeliveryOutcome] | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DismissResult:
    """What one Dismiss did, kept for the page it redirects to."""

    dismissed: list[Dismissal] | None
    error: str | None = None


async def dead_letters_page(request: web.Request) -> web.Response:
    """The entries; after a Replay or a Dismiss (``?replay=<key>``, ``?dismiss=<key>``)
    also what it did."""
    console = console_of(request)
    session = session_of(request)
    result = console.results.get(session, request.query.get("replay"))
    if isinstance(result, ReplayResult):
        return await _page(request, outcomes=result.outcomes, error=result.error)
    done = console.results.get(session, request.query.get("dismiss"))
    if isinstance(done, DismissResult):
        return await _page(request, dismissed=done.dismissed, error=done.error)
    return await _page(request)


async def replay(request: web.Request) -> web.StreamResponse:
    """Replay the entry named by ``id``, or every pending one with ``all``; then back to the
    list (Post/Redirect/Get): reloading it shows what was done and replays nothing again."""
    console = console_of(request)
    fields = await form_fields(request)
    ids = [fields["id"]] if fields.get("id") else []
    settings = console.settings
    try:
        async with KafkaInspector(settings.kafka) as inspector:
            outcomes = await replay_dead_letters(
                settings, inspector, ids, bool(fields.get("all")), settings.mapping_file
            )
        result = ReplayResult(outcomes)
    except SfampError as exc:
        result = ReplayResult(None, str(exc).splitlines()[0])
    key = console.results.keep(session_of(request), result)
    raise web.HTTPSeeOther(f"/dead-letters?replay={key}")


async def dismiss(request: web.Request) -> web.StreamResponse:
    """Dismiss the entry named by ``id``, or every waiting one no replay can deliver with
    ``unreplayable``; then back to the list (Post/Redirect/Get)."""
    console = console_of(request)
    fields = await form_fields(request)
    ids = [fields["id"]] if fields.get("id") else []
    settings = console.settings
    # A named entry carries the console's note; the unreplayable ones say why they are.
    note = CONSOLE_NOTE if ids else None
    try:
        async with KafkaInspector(settings.kafka) as inspector:
            dismissed = await dismiss_dead_letters(
                settings,
                inspector,
                ids,
                bool(fields.get("unreplayable")),
                settings.mapping_file,
                note,
            )
        result = DismissResult(dismissed)
    except SfampError as exc:
        result = DismissResult(None, str(exc).splitlines()[0])
    key = console.results.keep(session_of(request), result)
    raise web.HTTPSeeOther(f"/dead-letters?dismiss={key}")


def register(app: web.Application) -> None:
    app.router.add_get("/dead-letters", dead_letters_page)
    app.router.add_post("/dead-letters/replay", replay)
    app.router.add_get("/dead-letters/replay", redirect_get("/dead-letters"))
    app.router.add_post("/dead-letters/dismiss", dismiss)
    app.router.add_get("/dead-letters/dismiss", redirect_get("/dead-letters"))
