"""Validation of the JSON event APIs (``/2/httpapi`` and ``/batch``).

Pure. Every answer of these APIs is a JSON object carrying ``code``: the
official Python SDK reads the status from ``body["code"]`` and loses events
silently on a non-JSON 200, so even errors are JSON here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeGuard

import msgspec
import orjson

from sfamp_sandbox.amplitude.operations import (
    KNOWN_OPERATIONS,
    InvalidPropertiesError,
    is_normalized,
    normalize_operations,
)

GROUP_IDENTIFY_EVENT = "$groupidentify"
DEFAULT_MIN_ID_LENGTH = 5
MAX_EVENTS = 2000
# Amplitude refuses these as user or device ids.
BLOCKED_IDS = frozenset(
    {
        "anonymous",
        "nil",
        "none",
        "null",
        "n/a",
        "na",
        "undefined",
        "unknown",
        "00000000-0000-0000-0000-000000000000",
        "{}",
        "lmy47d",
        "0",
        "-1",
        "",
    }
)


@dataclass(frozen=True, slots=True)
class EventApi:
    """One JSON endpoint and its documented limits."""

    path: str
    max_request_bytes: int
    eps_threshold: int


HTTP_V2 = EventApi("/2/httpapi", 1_000_000, 30)
BATCH = EventApi("/batch", 20_000_000, 1000)


class JsonRefused(Exception):
    """The request is refused as a whole with this JSON ``body``."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        super().__init__(str(body))

    @property
    def status(self) -> int:
        return int(self.body["code"])


@dataclass(frozen=True, slots=True)
class EventRequest:
    api_key: str
    events: list[Any]
    min_id_length: int


@dataclass(slots=True)
class AcceptedEvent:
    event_type: str
    insert_id: str | None
    device_id: str
    groups: list[tuple[str, str]] = field(default_factory=list)
    operations: dict[str, Any] = field(default_factory=dict)


# A $groupidentify event accepted as sent (see _well_formed_group_identify): its
# "groups" map names the groups, its "group_properties" is the operation map.
WellFormedEvent = dict[str, Any]


def too_large() -> JsonRefused:
    return JsonRefused({"code": 413, "error": "Payload too large"})


# An integer orjson reads as one (msgspec keeps any integer whole; orjson reads a float
# past 64 bits), so that both paths store the same value.
_Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_Scalar = str | _Int | float | bool | None
_Value = _Scalar | list[_Scalar] | dict[str, _Scalar]


class GroupIdentify(msgspec.Struct, gc=False):
    """A ``$groupidentify`` event of a request :func:`group_identifies` accepts whole:
    property values nested one level at most, as sfamp and the SDKs send them."""

    event_type: str
    groups: dict[str, str]
    group_properties: dict[str, dict[str, _Value]]
    insert_id: str | None = None
    device_id: str | None = None
    time: _Int | None = None


class _GroupIdentifies(msgspec.Struct, gc=False):
    api_key: str
    events: list[GroupIdentify]


_GROUP_IDENTIFIES = msgspec.json.Decoder(_GroupIdentifies)


def group_identifies(
    body: bytes, api: EventApi, blocked_group_values: frozenset[str] = frozenset()
) -> tuple[str, list[GroupIdentify]] | None:
    """The API key and events of a request made only of well-formed ``$groupidentify``
    events (as :func:`_well_formed_group_identify` has them), decoded and type-checked in
    one pass; ``None`` for any other request, which then takes :func:`parse_event_request`
    and :func:`validate_events` (they name what is wrong, and where).

    What a backfill sends: 2,000 such events a request, where decoding into dicts and
    checking each field took as much CPU as the rest of the request.
    """
    if len(body) > api.max_request_bytes:
        return None
    try:
        request = _GROUP_IDENTIFIES.decode(body)
    except msgspec.DecodeError:
        return None
    events = request.events
    if not request.api_key or not events or len(events) > MAX_EVENTS:
        return None
    for event in events:
        if event.event_type != GROUP_IDENTIFY_EVENT:
            return None
        if not KNOWN_OPERATIONS.issuperset(event.group_properties):
            return None
        for value in event.groups.values():
            if not value or value in blocked_group_values:
                return None
    return request.api_key, events


def parse_event_request(body: bytes, api: EventApi) -> EventRequest:
    """Size, JSON and required fields; the API key is checked by the caller next."""
    if len(body) > api.max_request_bytes:
        raise too_large()
    if not body.strip():
        raise JsonRefused({"code": 400, "error": "Missing request body"})
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise JsonRefused({"code": 400, "error": "Invalid JSON request body"}) from exc
    if not isinstance(document, dict):
        raise JsonRefused({"code": 400, "error": "Invalid JSON request body"})
    for required in ("api_key", "events"):
        if not document.get(required):
            raise JsonRefused(
                {"code": 400, "error": "Request missing required field", "missing_field": required}
            )
    events = document["events"]
    if not isinstance(events, list):
        raise JsonRefused({"code": 400, "error": "Invalid event JSON"})
    if len(events) > MAX_EVENTS:
        raise too_large()
    options = document.get("options")
    min_length = options.get("min_id_length") if isinstance(options, dict) else None
    if not isinstance(min_length, int) or isinstance(min_length, bool) or min_length < 0:
        min_length = DEFAULT_MIN_ID_LENGTH
    return EventRequest(str(document["api_key"]), events, min_length)


class _Findings:
    def __init__(self) -> None:
        self.missing: dict[str, list[int]] = defaultdict(list)
        self.invalid: dict[str, list[int]] = defaultdict(list)
        self.id_lengths: dict[str, list[int]] = defaultdict(list)

    def refusal(self) -> JsonRefused | None:
        if self.missing:
            return JsonRefused(
                {
                    "code": 400,
                    "error": "Request missing required field",
                    "events_with_missing_fields": dict(self.missing),
                }
            )
        if self.invalid:
            return JsonRefused(
                {
                    "code": 400,
                    "error": "Invalid field values on some events",
                    "events_with_invalid_fields": dict(self.invalid),
                }
            )
        if self.id_lengths:
            return JsonRefused(
                {
                    "code": 400,
                    "error": "Invalid id length for user_id or device_id",
                    "events_with_invalid_id_lengths": dict(self.id_lengths),
                }
            )
        return None


def validate_events(
    request: EventRequest,
    blocked_group_values: frozenset[str] = frozenset(),
    *,
    fast_path: bool = True,
) -> list[AcceptedEvent | WellFormedEvent]:
    """Check every event; any failure refuses the request, listing the failing indexes.

    A ``$groupidentify`` naming one of ``blocked_group_values`` (the sandbox's way to
    rehearse a refused identification) fails as an invalid ``groups`` field.
    ``fast_path=False`` sends every event through the checked path (the reference
    the fast path is tested against).
    """
    findings = _Findings()
    accepted: list[AcceptedEvent | WellFormedEvent] = []
    for index, event in enumerate(request.events):
        if fast_path and _well_formed_group_identify(event, blocked_group_values):
            accepted.append(event)
            continue
        checked = _event(index, event, request, findings, blocked_group_values)
        if checked is not None:
            accepted.append(checked)
    refusal = findings.refusal()
    if refusal is not None:
        raise refusal
    return accepted


def _well_formed_group_identify(
    event: object, blocked: frozenset[str]
) -> TypeGuard[WellFormedEvent]:
    """True for the event sfamp sends most: a ``$groupidentify`` whose fields :func:`_event`
    would accept exactly as they are (an int or no ``time``; string group values, none
    refused; already normalized ``group_properties``).

    Such an event is accepted as the dict itself, with no :class:`AcceptedEvent`, pair
    list or operation map built for it: a backfill sends 2,000 of them per request and
    the objects cost as much CPU as the checks. Anything else goes through the checked
    path, which names every failing index with its reason.
    """
    if type(event) is not dict or event.get("event_type") != GROUP_IDENTIFY_EVENT:
        return False
    time = event.get("time")
    if time is not None and type(time) is not int:
        return False
    groups = event.get("groups")
    if type(groups) is not dict:
        return False
    for value in groups.values():
        if type(value) is not str or not value or value in blocked:
            return False
    return is_normalized(event.get("group_properties"))


def _event(
    index: int,
    event: object,
    request: EventRequest,
    findings: _Findings,
    blocked: frozenset[str] = frozenset(),
) -> AcceptedEvent | None:
    if not isinstance(event, dict):
        findings.invalid["event"].append(index)
        return None
    event_type = event.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        findings.missing["event_type"].append(index)
        return None
    time = event.get("time")
    if time is not None and (not isinstance(time, int) or isinstance(time, bool)):
        findings.invalid["time"].append(index)
    device_id = event.get("device_id")
    accepted = AcceptedEvent(
        event_type,
        _text(event.get("insert_id")),
        device_id if isinstance(device_id, str) else "",
        [],
        {},
    )
    if event_type == GROUP_IDENTIFY_EVENT:
        # The official SDK sends $groupidentify with no user or device id.
        _group_identify(index, event, accepted, findings, blocked)
    else:
        _check_ids(index, event, request.min_id_length, findings)
    return accepted


def _group_identify(
    index: int,
    event: dict[str, Any],
    accepted: AcceptedEvent,
    findings: _Findings,
    blocked: frozenset[str],
) -> None:
    groups = event.get("groups") or {}
    if not isinstance(groups, dict):
        findings.invalid["groups"].append(index)
        return
    pairs = accepted.groups
    for group_type, value in groups.items():
        for item in value if isinstance(value, list) else (value,):
            if type(item) is str:  # the common case, checked without conversions
                text = item
                if not text or text in blocked:
                    findings.invalid["groups"].append(index)
                    return
            elif isinstance(item, bool) or not isinstance(item, str | int | float) or item == "":
                findings.invalid["groups"].append(index)
                return
            else:
                text = str(item)
                if text in blocked:
                    findings.invalid["groups"].append(index)
                    return
            pairs.append((group_type if type(group_type) is str else str(group_type), text))
    try:
        accepted.operations = normalize_operations(event.get("group_properties") or {})
    except InvalidPropertiesError:
        findings.invalid["group_properties"].append(index)


def _check_ids(index: int, event: dict[str, Any], min_length: int, findings: _Findings) -> None:
    ids = {
        name: str(event[name]) for name in ("user_id", "device_id") if event.get(name) is not None
    }
    if not ids:
        findings.missing["user_id"].append(index)
        return
    blocked = [name for name, value in ids.items() if value.lower() in BLOCKED_IDS]
    for name in blocked:
        findings.invalid[name].append(index)
    short = [name for name, value in ids.items() if name not in blocked and len(value) < min_length]
    # A too-short id next to a usable one is dropped, not refused.
    if short and len(short) + len(blocked) == len(ids):
        for name in short:
            findings.id_lengths[name].append(index)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def success_body(ingested: int, payload_bytes: int, now_ms: int) -> dict[str, Any]:
    return {
        "code": 200,
        "events_ingested": ingested,
        "payload_size_bytes": payload_bytes,
        "server_upload_time": now_ms,
    }
