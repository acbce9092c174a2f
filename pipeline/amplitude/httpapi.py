"""Group identifies as ``$groupidentify`` events through HTTP V2 (``/2/httpapi``).

Pure: no I/O. Each update becomes the event the official SDKs send for a
group identify::

    {"event_type": "$groupidentify", "groups": {type: value},
     "group_properties": {"$set": {...}, "$unset": {...}},
     "insert_id": "...", "time": ms, "library": "sfamp"}

without ``user_id`` or ``device_id`` (as the Python SDK does), so no per-user or
per-device throttle applies to one fixed id. ``insert_id`` is new for every
identification of a send and travels unchanged in every retry of it, so
Amplitude drops a repeat of a request it had already applied (7-day window);
a later update of the same group gets a new one and is never mistaken for a
repeat.

A request holds fewer than 2,000 events and stays under 1 MB of JSON. HTTP V2
has no limit on property keys per request. A 400 lists the failing events by
index (``events_with_invalid_fields``, ``events_with_missing_fields``,
``events_with_invalid_id_lengths``, ``silenced_events``); a 429 lists the
throttled ones in ``throttled_events``.
"""

from __future__ import annotations

import operator
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec
import orjson

from pipeline.amplitude.payload import group_properties
from pipeline.amplitude.planning import (
    MAX_REQUEST_BYTES,
    MAX_STRING_CHARS,
    Chunk,
    EncodedUpdate,
    cut_strings,
)
from pipeline.transform.group_update import GroupUpdate

GROUP_IDENTIFY_EVENT = "$groupidentify"
# "Send fewer than 2000 events per request" (HTTP V2 limits).
MAX_EVENTS = 1999
LIBRARY = "sfamp"
_SUFFIX = b"]}"
_PER_EVENT_FIELDS = (
    "events_with_invalid_fields",
    "events_with_missing_fields",
    "events_with_invalid_id_lengths",
)


def event_prefix(api_key: str) -> bytes:
    """The body up to the first event: ``{"api_key":"...","events":[``."""
    return b'{"api_key":' + orjson.dumps(api_key) + b',"events":['


class _Event(msgspec.Struct, kw_only=True, gc=False):
    """A ``$groupidentify`` event as the SDKs send it; its JSON keys in field order."""

    event_type: str = GROUP_IDENTIFY_EVENT
    groups: dict[str, str]
    group_properties: dict[str, Any]
    insert_id: str
    time: int
    library: str = LIBRARY


_ENCODER: Final = msgspec.json.Encoder()
_UNSET: Final = operator.attrgetter("unset")
_GROUP_TYPE: Final = operator.attrgetter("group_type")
_GROUP_VALUE: Final = operator.attrgetter("group_value")
_ENCODED_SIZE: Final = operator.attrgetter("encoded_size")
_PROPERTY_KEYS: Final = operator.attrgetter("property_keys")


def _event(update: GroupUpdate, insert_id: str, time_ms: int) -> _Event:
    """``group_properties`` as :func:`to_identification` has them, ``$set`` not copied:
    the event is encoded at once and dropped."""
    return _Event(
        groups={update.group_type: update.group_value},
        group_properties=group_properties(update, shared=True),
        insert_id=insert_id,
        time=time_ms,
    )


def encode_event(update: GroupUpdate, insert_id: str, time_ms: int) -> EncodedUpdate:
    """The event's JSON, strings over :data:`MAX_STRING_CHARS` characters cut first."""
    raw = _ENCODER.encode(_event(update, insert_id, time_ms))
    cut: tuple[str, ...] = ()
    # A string over MAX_STRING_CHARS characters takes at least that many bytes, so a
    # shorter event has none to cut (nearly every one): it is encoded once.
    if len(raw) > MAX_STRING_CHARS:
        update, cut = cut_strings(update)
        if cut:
            raw = _ENCODER.encode(_event(update, insert_id, time_ms))
    return EncodedUpdate(update, raw, len(raw), len(update.set) + len(update.unset), cut)


def event_body_bytes(prefix_len: int, sizes: int, count: int) -> int:
    return prefix_len + sizes + max(0, count - 1) + len(_SUFFIX)


def make_event_chunk(items: Sequence[EncodedUpdate], prefix_len: int) -> Chunk:
    sizes, keys = sum(map(_ENCODED_SIZE, items)), sum(map(_PROPERTY_KEYS, items))
    return Chunk(tuple(items), event_body_bytes(prefix_len, sizes, len(items)), keys)


def plan_events(
    updates: Iterable[GroupUpdate],
    prefix_len: int,
    *,
    max_events: int = MAX_EVENTS,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    now_ms: int | None = None,
) -> list[Chunk]:
    """Fill requests in order; empty updates are left out, strings cut to 1,024 characters.

    Every event is encoded by one call: newline-delimited JSON (a newline inside a
    string is escaped), split into one exact-size ``bytes`` per event. An event long
    enough to hold a string to cut is encoded again, alone (:func:`encode_event`).
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    insert_ids = f"sfamp-{uuid.uuid4().hex[:20]}-"
    updates = list(updates)
    sent = [u for u in updates if u.set or u.unset]
    numbers: Sequence[int] = range(len(sent))
    if len(sent) < len(updates):
        numbers = [number for number, u in enumerate(updates) if u.set or u.unset]
    lines, keys = _event_lines(sent, numbers, insert_ids, now_ms)
    sizes = list(map(len, lines))
    if max(sizes, default=0) <= MAX_STRING_CHARS:  # no event holds a string to cut
        items = list(map(EncodedUpdate, sent, lines, sizes, keys))
    else:
        items = [
            encode_event(update, f"{insert_ids}{number}", now_ms)
            if size > MAX_STRING_CHARS
            else EncodedUpdate(update, raw, size, key)
            for update, number, raw, size, key in zip(
                sent, numbers, lines, sizes, keys, strict=True
            )
        ]
        sizes = [item.encoded_size for item in items]
    return _filled(items, sizes, prefix_len, max_events, max_request_bytes)


def _event_lines(
    sent: list[GroupUpdate], numbers: Sequence[int], insert_ids: str, now_ms: int
) -> tuple[list[bytes], list[int]]:
    """Each update's event JSON, byte for byte as ``_ENCODER`` writes its
    :class:`_Event` (insert ids numbered by ``numbers``), and its property keys.

    When every update only sets properties (a backfill's, nearly always), the group
    names and the ``$set`` objects are encoded by one call each and put in a line
    template per group type: the rest of an event is the same for the whole send.
    """
    sets, group_types = [u.set for u in sent], set(map(_GROUP_TYPE, sent))
    plain = set(map(type, sets)) <= {dict} and set(map(type, group_types)) <= {str}
    if not plain or any(map(_UNSET, sent)):
        events = [_event(u, f"{insert_ids}{n}", now_ms) for u, n in zip(sent, numbers, strict=True)]
        keys = [len(u.set) + len(u.unset) for u in sent]
        return _ENCODER.encode_lines(events).split(b"\n")[:-1], keys  # [:-1]: the b"" at the end
    templates = {
        group_type: _line_template(group_type, insert_ids, now_ms) for group_type in group_types
    }
    names = _ENCODER.encode_lines(list(map(_GROUP_VALUE, sent))).split(b"\n")[:-1]
    encoded_sets = _ENCODER.encode_lines(sets).split(b"\n")[:-1]
    lines = [
        templates[u.group_type] % (name, values, number)
        for u, name, values, number in zip(sent, names, encoded_sets, numbers, strict=True)
    ]
    return lines, list(map(len, sets))


def _line_template(group_type: str, insert_id_prefix: str, time_ms: int) -> bytes:
    """A set-only event's JSON with ``%s`` for the group name and the ``$set`` object
    (each as JSON) and ``%d`` for the insert id's number; fields in :class:`_Event`'s order."""

    def json(value: object) -> bytes:
        return _ENCODER.encode(value).replace(b"%", b"%%")

    return b"".join((
        b'{"event_type":', json(GROUP_IDENTIFY_EVENT),
        b',"groups":{', json(group_type), b":%s}",
        b',"group_properties":{"$set":%s}',
        b',"insert_id":', json(insert_id_prefix)[:-1], b'%d"',
        b',"time":', json(time_ms),
        b',"library":', json(LIBRARY), b"}",
    ))  # fmt: skip


def _filled(
    items: list[EncodedUpdate],
    sizes: list[int],
    prefix_len: int,
    max_events: int,
    max_request_bytes: int,
) -> list[Chunk]:
    """``items`` (of JSON ``sizes``) in order, as many to a request as it may hold."""
    limit = max_request_bytes - prefix_len - len(_SUFFIX)
    if len(items) <= max_events and sum(sizes) + len(items) - 1 <= limit:
        return [make_event_chunk(items, prefix_len)] if items else []  # all in one (most sends)
    chunks: list[Chunk] = []
    start, size = 0, -1
    for index, item_size in enumerate(sizes):
        grown = size + 1 + item_size
        if index > start and (index - start >= max_events or grown > limit):
            chunks.append(make_event_chunk(items[start:index], prefix_len))
            start, grown = index, item_size
        size = grown
    if start < len(items):
        chunks.append(make_event_chunk(items[start:], prefix_len))
    return chunks


def refused_events(text: str, count: int) -> dict[int, str]:
    """Event index -> reason, from a 400's per-event fields; empty when it names none."""
    answer = _json(text)
    error = str(answer.get("error") or "refused")
    refused: dict[int, str] = {}
    for name in _PER_EVENT_FIELDS:
        fields = answer.get(name)
        if not isinstance(fields, dict):
            continue
        for field, indexes in fields.items():
            for index in _indexes(indexes, count):
                refused.setdefault(index, f"{error} ({name}: {field})")
    for index in _indexes(answer.get("silenced_events"), count):
        refused.setdefault(index, f"{error} (silenced_events)")
    return refused


def throttled_events(text: str, count: int) -> set[int]:
    return set(_indexes(_json(text).get("throttled_events"), count))


def _json(text: str) -> dict[str, Any]:
    try:
        answer = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _indexes(value: object, count: int) -> list[int]:
    if not isinstance(value, list):
        return []
    return [i for i in value if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < count]


class EventWire:
    """``/2/httpapi``: ``{"api_key": ..., "events": [...]}`` as JSON."""

    content_type = "application/json"

    def __init__(self, url: str, prefix: bytes) -> None:
        self.url = url
        self.prefix = prefix

    def body(self, chunk: Chunk) -> bytes:
        events = b",".join([item.json for item in chunk.items])
        return b"".join((self.prefix, events, _SUFFIX))

    def halves(self, chunk: Chunk) -> tuple[Chunk, Chunk]:
        middle = len(chunk.items) // 2
        return (
            make_event_chunk(chunk.items[:middle], len(self.prefix)),
            make_event_chunk(chunk.items[middle:], len(self.prefix)),
        )

    def pick(self, chunk: Chunk, indexes: Iterable[int]) -> Chunk:
        return make_event_chunk([chunk.items[i] for i in indexes], len(self.prefix))

    def refused_items(self, chunk: Chunk, text: str) -> dict[int, str]:
        return refused_events(text, len(chunk))

    def throttled_items(self, chunk: Chunk, text: str) -> set[int]:
        return throttled_events(text, len(chunk))
