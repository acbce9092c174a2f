"""The ingestion endpoints: ``/groupidentify``, ``/2/httpapi`` and ``/batch``.

Both regions are served by one process: US at the root, EU under ``/eu``. A
key is only valid on its own region's paths, as with Amplitude, where a US key
sent to the EU host is refused as an invalid API key.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from email.message import Message
from email.parser import BytesParser
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from sfamp_sandbox.amplitude.events import (
    BATCH,
    GROUP_IDENTIFY_EVENT,
    HTTP_V2,
    AcceptedEvent,
    EventApi,
    GroupIdentify,
    JsonRefused,
    WellFormedEvent,
    group_identifies,
    parse_event_request,
    success_body,
    too_large,
    validate_events,
)
from sfamp_sandbox.amplitude.identify import (
    IdentifyLimits,
    RequestRefused,
    parse_identifications,
)
from sfamp_sandbox.amplitude.state import GroupStore, Region, SandboxState, request_entry

GROUP_IDENTIFY_PATH = "/groupidentify"
MAX_QUERY_STRING = 8192
# Larger than any endpoint's limit, so an oversized body still gets the documented 413.
CLIENT_MAX_SIZE = 25_000_000

_FAULT_TEXT = {
    "429": (429, "too_many_requests"),
    "500": (500, "internal_server_error"),
    "503": (503, "service_unavailable"),
    "timeout": (504, "gateway_timeout"),
}
_FAULT_JSON_ERROR = {
    "429": "Too many requests for some devices and users",
    "500": "Internal server error",
    "503": "Service unavailable",
    "timeout": "Gateway timeout",
}

Outcome = tuple[int, bytes]


class Ingestion:
    """Request handlers over one :class:`SandboxState`."""

    def __init__(self, state: SandboxState, limits: IdentifyLimits, closing: asyncio.Event) -> None:
        self.state = state
        self.limits = limits
        self.closing = closing

    def register(self, app: web.Application) -> None:
        regions: tuple[tuple[str, Region], ...] = (("", "us"), ("/eu", "eu"))
        for prefix, region in regions:
            identify = self._bind(self.group_identify, region)
            app.router.add_route("POST", prefix + GROUP_IDENTIFY_PATH, identify)
            app.router.add_route("GET", prefix + GROUP_IDENTIFY_PATH, identify)
            app.router.add_post(prefix + HTTP_V2.path, self._bind_events(HTTP_V2, region))
            app.router.add_post(prefix + BATCH.path, self._bind_events(BATCH, region))

    @staticmethod
    def _bind(handler: Callable[..., Any], region: Region) -> Handler:
        async def bound(request: web.Request) -> web.StreamResponse:
            response: web.StreamResponse = await handler(request, region)
            return response

        return bound

    def _bind_events(self, api: EventApi, region: Region) -> Handler:
        async def bound(request: web.Request) -> web.StreamResponse:
            return await self.events(request, region, api)

        return bound

    async def group_identify(self, request: web.Request, region: Region) -> web.Response:
        entry = self._entry(request, region, GROUP_IDENTIFY_PATH)
        body = await _read_body(request)
        entry["request_bytes"] = len(body or b"") + len(request.query_string)

        def process() -> Outcome:
            return self._identify(request, body, region, entry)

        status, payload = await self._answer(entry, process, json_api=False)
        return _finish(self.state, entry, status, payload, "text/plain")

    def _identify(
        self, request: web.Request, body: bytes | None, region: Region, entry: dict[str, Any]
    ) -> Outcome:
        if body is None or entry["request_bytes"] > self.limits.max_request_bytes:
            return 413, b"Payload too large"
        if len(request.query_string) > MAX_QUERY_STRING:
            return 414, b"Request-URI Too Large"
        params = _form_params(request, body)
        project = self.state.project_for(params.get("api_key"), region)
        if project is None:
            return 400, b"invalid_api_key"
        try:
            identifications = parse_identifications(params.get("identification"), self._limits())
        except RequestRefused as refused:
            return refused.status, refused.body.encode()
        entry["identifications"] = len(identifications)
        store, stamp = self.state.store(region), _history_stamp(entry)
        ignored = [
            item.group_type
            for item in identifications
            if not store.apply(item.group_type, item.group_value, item.operations, stamp)
        ]
        if ignored:
            entry["warnings"] = [f"group types past the limit of 5 ignored: {sorted(set(ignored))}"]
        return 200, b"success"

    async def events(self, request: web.Request, region: Region, api: EventApi) -> web.Response:
        entry = self._entry(request, region, api.path)
        body = await _read_body(request)
        entry["request_bytes"] = len(body or b"")

        def process() -> Outcome:
            try:
                return 200, orjson.dumps(self._ingest_events(body, region, api, entry))
            except JsonRefused as refused:
                return refused.status, orjson.dumps(refused.body)

        status, payload = await self._answer(entry, process, json_api=True, body=body)
        return _finish(self.state, entry, status, payload, "application/json")

    def _ingest_events(
        self, body: bytes | None, region: Region, api: EventApi, entry: dict[str, Any]
    ) -> dict[str, Any]:
        if body is None:
            raise too_large()
        blocked = self._limits().blocked_group_values
        store, now, stamp = self.state.store(region), time.time(), _history_stamp(entry)
        quick = group_identifies(body, api, blocked)
        if quick is not None:
            api_key, events = quick
            self._require_project(api_key, region)
            ingested, groups = apply_group_identifies(store, events, now, stamp)
            types = Counter({GROUP_IDENTIFY_EVENT: ingested} if ingested else {})
            count = len(events)
        else:
            parsed = parse_event_request(body, api)
            self._require_project(parsed.api_key, region)
            accepted = validate_events(parsed, blocked)
            ingested, types, groups = apply_events(store, accepted, now, stamp)
            count = len(accepted)
        entry.update(events=count, events_ingested=ingested, event_types=dict(types))
        entry["identifications"] = groups
        return success_body(ingested, len(body), int(now * 1000))

    async def _answer(
        self,
        entry: dict[str, Any],
        process: Callable[[], Outcome],
        *,
        json_api: bool,
        body: bytes | None = None,
    ) -> Outcome:
        fault = self.state.take_fault(entry["path"])
        if fault is None:
            return process()
        entry["fault"] = fault.kind
        if fault.retry_after is not None:
            entry["retry_after"] = fault.retry_after
        if fault.kind == "500_after_apply":
            process()
            return 500, _fault_body("500", json_api, body)
        if fault.kind == "timeout":
            # Held past the client's timeout; the request is not applied.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), fault.delay_seconds)
        return _FAULT_TEXT[fault.kind][0], _fault_body(fault.kind, json_api, body)

    def _require_project(self, api_key: str, region: Region) -> None:
        if self.state.project_for(api_key, region) is None:
            raise JsonRefused({"code": 400, "error": f"Invalid API key: {api_key}"})

    def _limits(self) -> IdentifyLimits:
        """The limits, with the group values blocked through the control API added."""
        blocked = self.state.blocked_group_values
        if not blocked:
            return self.limits
        return replace(self.limits, blocked_group_values=self.limits.blocked_group_values | blocked)

    def _entry(self, request: web.Request, region: Region, path: str) -> dict[str, Any]:
        return request_entry(self.state.next_request_id(), request.method, path, region)


def apply_events(
    store: GroupStore,
    accepted: list[AcceptedEvent | WellFormedEvent],
    now: float,
    stamp: dict[str, Any],
) -> tuple[int, Counter[str], int]:
    """Events ingested (not seen before by insert id), their types, and groups changed."""
    first_seen, apply = store.first_seen, store.apply
    ingested, types, groups = 0, Counter[str](), 0
    for event in accepted:
        if isinstance(event, dict):
            # A well-formed $groupidentify: its fields are read here as _event would
            # have put them into an AcceptedEvent.
            event_type, insert_id = GROUP_IDENTIFY_EVENT, event.get("insert_id")
            if type(insert_id) is not str:
                insert_id = None
            device_id = event.get("device_id")
            if type(device_id) is not str:
                device_id = ""
            pairs, operations = event["groups"].items(), event["group_properties"]
        else:
            event_type, insert_id, device_id = event.event_type, event.insert_id, event.device_id
            pairs, operations = event.groups, event.operations
        if insert_id and not first_seen(device_id, insert_id, now):
            continue
        ingested += 1
        types[event_type] += 1
        if event_type == GROUP_IDENTIFY_EVENT:
            for group_type, group_value in pairs:
                groups += apply(group_type, group_value, operations, stamp)
    return ingested, types, groups


def apply_group_identifies(
    store: GroupStore, events: list[GroupIdentify], now: float, stamp: dict[str, Any]
) -> tuple[int, int]:
    """:func:`apply_events` of the events :func:`group_identifies` accepted: events
    ingested (not seen before by insert id) and groups changed."""
    first_seen, apply = store.first_seen, store.apply
    ingested = groups = 0
    for event in events:
        insert_id = event.insert_id
        if insert_id and not first_seen(event.device_id or "", insert_id, now):
            continue
        ingested += 1
        operations = event.group_properties
        for group_type, group_value in event.groups.items():
            groups += apply(group_type, group_value, operations, stamp)
    return ingested, groups


def _fault_body(kind: str, json_api: bool, body: bytes | None) -> bytes:
    if not json_api:
        return _FAULT_TEXT[kind][1].encode()
    status = _FAULT_TEXT.get(kind, (500, ""))[0]
    payload: dict[str, Any] = {"code": status, "error": _FAULT_JSON_ERROR.get(kind, "Error")}
    if kind == "429":
        payload.update(
            eps_threshold=HTTP_V2.eps_threshold,
            throttled_devices={},
            throttled_users={},
            throttled_events=list(range(_event_count(body))),
        )
    return orjson.dumps(payload)


def _event_count(body: bytes | None) -> int:
    try:
        events = orjson.loads(body or b"{}").get("events")
    except (orjson.JSONDecodeError, AttributeError):
        return 0
    return len(events) if isinstance(events, list) else 0


def _history_stamp(entry: dict[str, Any]) -> dict[str, Any]:
    return {"request_id": entry["id"], "at": entry["at"], "path": entry["path"]}


def _finish(
    state: SandboxState, entry: dict[str, Any], status: int, payload: bytes, content_type: str
) -> web.Response:
    entry.update(status=status, response_bytes=len(payload))
    if status >= 400:
        entry["response"] = payload[:300].decode("utf-8", "replace")
    state.log_request(entry)
    response = web.Response(status=status, body=payload, content_type=content_type)
    retry_after = entry.get("retry_after")
    if retry_after is not None:
        response.headers["Retry-After"] = str(round(retry_after))
    return response


async def _read_body(request: web.Request) -> bytes | None:
    """The raw body, or None past ``CLIENT_MAX_SIZE`` (then not read at all).

    A body over an endpoint's own limit is still read, so that the client gets
    the documented 413 rather than a connection reset in the middle of its upload.
    """
    if request.content_length and request.content_length > CLIENT_MAX_SIZE:
        return None
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return None


def _form_params(request: web.Request, body: bytes) -> dict[str, str]:
    """``api_key`` and ``identification`` from the query string, a urlencoded or a
    multipart body; body fields win over query fields."""
    params = dict(request.query)
    if not body:
        return params
    if request.content_type.startswith("multipart/"):
        params.update(_multipart_fields(request.headers.get("Content-Type", ""), body))
    else:
        # yarl's C unquoter: the stdlib's parse_qsl needs ~90 ms for a 1 MB body
        # that is mostly %XX escapes (non-ASCII text), yarl a few ms.
        query = URL.build(query_string=body.decode("utf-8", "replace"), encoded=True).query
        params.update(query)
    return params


def _multipart_fields(content_type: str, body: bytes) -> dict[str, str]:
    header = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser().parsebytes(header + body)
    fields: dict[str, str] = {}
    if not message.is_multipart():
        return fields
    for part in message.get_payload():
        if not isinstance(part, Message):
            continue
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = payload.decode(part.get_content_charset() or "utf-8", "replace")
    return fields
