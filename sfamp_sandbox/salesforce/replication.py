"""Replication helpers: ids deleted or updated in a window (reference §2.7, §7).

Deleted records stay in the store with ``IsDeleted`` set; their ``SystemModstamp`` is the
deletion time, since a deleted record cannot be edited. Windows are at minute granularity and
reach back 15 days (30 for updates), as Salesforce's do.
"""

from __future__ import annotations

from aiohttp import web

from sfamp_sandbox.salesforce.api_error import ApiError, not_found
from sfamp_sandbox.salesforce.objects import find_object
from sfamp_sandbox.salesforce.state import STATE, json_response
from sfamp_sandbox.salesforce.values import datetime_rest, parse_datetime_ms

MINUTE_MS = 60_000
DAY_MS = 86_400_000
MAX_IDS = 600_000


def _window(request: web.Request, reach_days: int) -> tuple[int, int, int]:
    """(start, end, earliest available) in ms; raises for a missing or bad window."""
    state = request.app[STATE]
    try:
        start = parse_datetime_ms(request.query["start"]) // MINUTE_MS * MINUTE_MS
        end = parse_datetime_ms(request.query["end"]) // MINUTE_MS * MINUTE_MS
    except (KeyError, ValueError) as exc:
        raise ApiError(400, "MALFORMED_QUERY", "start and end must be valid dateTimes") from exc
    now = state.org.now_ms() // MINUTE_MS * MINUTE_MS
    earliest = now - reach_days * DAY_MS
    if start >= end or end < earliest:
        raise ApiError(
            400,
            "INVALID_REPLICATION_DATE",
            "start date must be before end date and within the available window",
        )
    return max(start, earliest), min(end, now), earliest


async def deleted(request: web.Request) -> web.Response:
    state = request.app[STATE]
    obj = find_object(request.match_info["sobject"])
    if obj is None:
        raise not_found()
    start, end, earliest = _window(request, 15)
    stamp = obj.slots["SystemModstamp"]
    found = [
        {"id": r[0], "deletedDate": datetime_rest(r[stamp])}
        for r in state.org.stores[obj.name].records.values()
        if r[1] and start <= r[stamp] < end
    ]
    if len(found) > MAX_IDS:
        raise ApiError(400, "EXCEEDED_ID_LIMIT", "too many ids; narrow the window")
    return json_response(
        {
            "deletedRecords": found,
            "earliestDateAvailable": datetime_rest(earliest),
            "latestDateCovered": datetime_rest(end),
        }
    )


async def updated(request: web.Request) -> web.Response:
    state = request.app[STATE]
    obj = find_object(request.match_info["sobject"])
    if obj is None:
        raise not_found()
    start, end, _ = _window(request, 30)
    stamp = obj.slots["SystemModstamp"]
    ids = [
        r[0]
        for r in state.org.stores[obj.name].records.values()
        if not r[1] and start <= r[stamp] < end
    ]
    if len(ids) > MAX_IDS:
        raise ApiError(400, "EXCEEDED_ID_LIMIT", "too many ids; narrow the window")
    return json_response({"ids": ids, "latestDateCovered": datetime_rest(end)})
