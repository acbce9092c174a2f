"""The HTTP V2 transport ($groupidentify events on /2/httpapi) at the HTTP edge."""

from __future__ import annotations

import random
from types import MappingProxyType
from typing import Any

import httpx
import orjson
import pytest

from pipeline.amplitude import AmplitudeClient
from pipeline.amplitude.httpapi import (
    MAX_EVENTS,
    EventWire,
    encode_event,
    event_prefix,
    plan_events,
    refused_events,
)
from pipeline.amplitude.payload import group_properties, to_identification
from pipeline.config.settings import AmplitudeSettings
from pipeline.errors import AmplitudeAuthError
from pipeline.transform.group_update import GroupUpdate
from tests.amplitude.test_client_unit import FakeTime

SETTINGS = AmplitudeSettings(
    api_key="key-123", transport="httpapi", min_429_wait_seconds=15, max_concurrency=2
)


def _events(request: httpx.Request) -> list[dict[str, Any]]:
    return list(orjson.loads(request.content)["events"])


def _client(handler: object, time: FakeTime | None = None) -> AmplitudeClient:
    time = time or FakeTime()
    return AmplitudeClient(
        SETTINGS,
        transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
        sleep=time.sleep,
        clock=time.clock,
        jitter=lambda: 0.0,
    )


def _updates(n: int) -> list[GroupUpdate]:
    return [GroupUpdate("account", f"001A{i:06d}", {"a": i, "b": "x"}) for i in range(n)]


def _json(status: int, **body: Any) -> httpx.Response:
    return httpx.Response(status, json={"code": status, **body})


async def test_sends_the_sdk_group_identify_event_without_user_or_device_id() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _json(200, events_ingested=2)

    update = GroupUpdate("account", "001X", {"tier": "Gold"}, frozenset({"legacy"}))
    async with _client(handler) as client:
        report = await client.send([update, GroupUpdate("account", "empty")])
    assert (report.delivered, report.skipped, report.requests) == (1, 1, 1)
    (request,) = seen
    assert str(request.url) == "https://api2.amplitude.com/2/httpapi"
    assert request.headers["content-type"] == "application/json"
    body = orjson.loads(request.content)
    assert body["api_key"] == "key-123"
    (event,) = body["events"]
    assert event.pop("insert_id").startswith("sfamp-")
    assert isinstance(event.pop("time"), int)
    assert event == {
        "event_type": "$groupidentify",
        "groups": {"account": "001X"},
        "group_properties": {"$set": {"tier": "Gold"}, "$unset": {"legacy": "-"}},
        "library": "sfamp",
    }


def test_requests_close_under_2000_events_and_1_mb_with_exact_sizes() -> None:
    prefix = event_prefix("key")
    chunks = plan_events(_updates(5000), len(prefix))
    assert [len(chunk) for chunk in chunks] == [MAX_EVENTS, MAX_EVENTS, 5000 - 2 * MAX_EVENTS]
    wire = EventWire("u", prefix)
    assert all(len(wire.body(chunk)) == chunk.body_bytes for chunk in chunks)
    big = [GroupUpdate("account", f"{i}", {"text": "é" * 1000}) for i in range(600)]
    sized = plan_events(big, len(prefix))
    assert len(sized) > 1
    assert all(chunk.body_bytes <= 950_000 for chunk in sized)
    assert all(len(wire.body(chunk)) == chunk.body_bytes for chunk in sized)
    left, right = wire.halves(sized[0])
    assert len(wire.body(left)) == left.body_bytes
    assert len(left) + len(right) == len(sized[0])


def test_an_event_holds_the_update_as_is_and_a_kept_identification_owns_its_values() -> None:
    update = GroupUpdate("account", "001A", {"name": "Acme", "seats": 12}, frozenset({"tier"}))
    (chunk,) = plan_events([update], len(event_prefix("key")))
    (event,) = orjson.loads(EventWire("u", event_prefix("key")).body(chunk))["events"]
    assert event["group_properties"] == {"$set": {"name": "Acme", "seats": 12},
                                         "$unset": {"tier": "-"}}  # fmt: skip
    kept = to_identification(update)["group_properties"]["$set"]
    assert kept == update.set
    assert kept is not update.set
    assert group_properties(update, shared=True)["$set"] is update.set
    # A set that is not a dict is copied either way: the JSON encoders take dicts.
    proxied = GroupUpdate("account", "001A", MappingProxyType({"name": "Acme"}))
    assert type(group_properties(proxied, shared=True)["$set"]) is dict


def test_events_encoded_by_one_call_are_each_what_encoding_it_alone_gives() -> None:
    updates = [
        GroupUpdate("account", "001A", {"note": "line\nbreak", "quote": 'a"b', "zoë": "é😀"}),
        GroupUpdate("account", "001B", {"long": "x" * 2000, "list": ["y" * 1500, "z"]}),
        GroupUpdate("account", "001C"),  # nothing to send: left out
        GroupUpdate(
            "company", "two\nlines", {"n": 1e20, "on": True, "i": 2**62}, frozenset({"old"})
        ),
    ]
    (chunk,) = plan_events(updates, 10, now_ms=5)

    ids = [orjson.loads(item.json)["insert_id"] for item in chunk.items]
    assert [i.rsplit("-", 1)[1] for i in ids] == ["0", "1", "3"]
    sent = [updates[0], updates[1], updates[3]]
    alone = [encode_event(update, i, 5) for update, i in zip(sent, ids, strict=True)]
    assert [item.json for item in chunk.items] == [item.json for item in alone]
    assert [item.cut for item in chunk.items] == [(), alone[1].cut, ()]
    assert alone[1].cut  # the long strings were cut, and the event encoded again
    for item in chunk.items:
        event = orjson.loads(item.json)
        assert event["groups"] == {item.update.group_type: item.update.group_value}
        assert event["group_properties"] == group_properties(item.update)
        assert event["time"] == 5
    assert len(orjson.loads(chunk.items[1].json)["group_properties"]["$set"]["long"]) == 1024


def _text(rng: random.Random) -> str:
    pieces = ["a", "%", "%s", "%d", "%%", '"', "\\", "\n", "é", "😀", "\x00", ":", '":""', "{}"]
    return "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 5)))


def _value(rng: random.Random) -> Any:
    choices = [
        lambda: _text(rng),
        lambda: rng.randrange(-(10**20), 10**20),
        lambda: rng.random() * 10 ** rng.randrange(-5, 25),
        lambda: rng.random() < 0.5,
        lambda: [_text(rng), _text(rng)],
        lambda: "x" * rng.choice([1, 1030]),
    ]
    return rng.choice(choices)()


@pytest.mark.parametrize("seed", range(4))
def test_set_only_sends_are_the_events_each_update_encodes_to_alone(seed: int) -> None:
    # A send of set-only updates (a backfill's) fills a line template per group type;
    # group types and values with %, quotes, escapes and newlines must not leak into it.
    rng = random.Random(seed)
    group_types = [_text(rng) or "account" for _ in range(3)]
    updates = [
        GroupUpdate(
            rng.choice(group_types),
            _text(rng),
            {_text(rng): _value(rng) for _ in range(rng.randrange(0, 4))},
        )
        for _ in range(300)
    ]
    if seed == 1:  # a set that is not a dict: the send is encoded event by event
        updates[5] = GroupUpdate("account", "001P", MappingProxyType({"name": "Acme"}))
    if seed == 3:  # so is a group type that is not exactly str

        class Kind(str):
            pass

        updates[5] = GroupUpdate(Kind("account"), "001P", {"name": "Acme"})
    chunks = plan_events(updates, 10, now_ms=7)

    items = [item for chunk in chunks for item in chunk.items]
    sent = [update for update in updates if update.set]
    assert [item.update.key for item in items] == [update.key for update in sent]
    for item, update in zip(items, sent, strict=True):
        alone = encode_event(update, orjson.loads(item.json)["insert_id"], 7)
        assert (item.json, item.encoded_size, item.cut, item.property_keys) == (
            alone.json, alone.encoded_size, alone.cut, alone.property_keys
        )  # fmt: skip
    assert any(item.cut for item in items)  # some strings were long enough to cut
    numbers = [int(orjson.loads(item.json)["insert_id"].rsplit("-", 1)[1]) for item in items]
    assert numbers == [index for index, update in enumerate(updates) if update.set]


def test_insert_ids_are_unique_per_identification_and_per_send() -> None:
    first = plan_events(_updates(3), 10)[0]
    again = plan_events(_updates(3), 10)[0]
    ids = [orjson.loads(item.json)["insert_id"] for item in (*first.items, *again.items)]
    assert len(set(ids)) == 6


async def test_a_retry_resends_the_same_insert_ids() -> None:
    bodies: list[list[dict[str, Any]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(_events(request))
        return _json(500, error="Internal") if len(bodies) == 1 else _json(200)

    async with _client(handler) as client:
        report = await client.send(_updates(3))
    assert (report.delivered, report.retries) == (3, 1)
    assert bodies[0] == bodies[1]


async def test_400_rejects_the_events_it_names_and_resends_the_rest() -> None:
    bodies: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        groups = [event["groups"]["account"] for event in _events(request)]
        bodies.append(groups)
        bad = [i for i, value in enumerate(groups) if value in ("001A000003", "001A000007")]
        if not bad:
            return _json(200)
        # HTTP V2 may list only the first failing event: name one at a time.
        return _json(
            400,
            error="Invalid field values on some events",
            events_with_invalid_fields={"groups": bad[:1]},
        )

    async with _client(handler) as client:
        report = await client.send(_updates(10))
    assert report.delivered == 8
    assert [r.update.group_value for r in report.rejected] == ["001A000003", "001A000007"]
    assert report.rejected[0].reason == (
        "Invalid field values on some events (events_with_invalid_fields: groups)"
    )
    assert report.requests == 3  # no bisection when the answer names the events


async def test_400_without_per_event_fields_is_bisected_to_the_bad_event() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        values = [event["groups"]["account"] for event in _events(request)]
        if "001A000005" in values:
            return _json(400, error="Invalid event JSON")
        return _json(200)

    async with _client(handler) as client:
        report = await client.send(_updates(16))
    assert report.delivered == 15
    assert [(r.update.group_value, r.status) for r in report.rejected] == [("001A000005", 400)]
    assert "Invalid event JSON" in report.rejected[0].reason


async def test_429_resends_the_unthrottled_events_without_the_throttled_ones_backoff() -> None:
    time = FakeTime()
    requests: list[tuple[float, int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append((time.now, len(_events(request))))
        if len(requests) == 1:
            return _json(
                429,
                error="Too many requests for some devices and users",
                eps_threshold=30,
                throttled_devices={},
                throttled_users={},
                throttled_events=[1, 2],
            )
        return _json(200)

    async with _client(handler, time) as client:
        report = await client.send(_updates(6))
    assert report.delivered == 6
    assert requests[0] == (1000.0, 6)
    # Only the two throttled events waited (one backoff); the other four went again.
    assert sorted(size for _, size in requests[1:]) == [2, 4]
    assert time.sleeps == [15.0]


async def test_413_splits_and_an_invalid_key_is_fatal() -> None:
    def too_large(request: httpx.Request) -> httpx.Response:
        if len(_events(request)) > 2:
            return _json(413, error="Payload too large")
        return _json(200)

    async with _client(too_large) as client:
        report = await client.send(_updates(8))
    assert (report.delivered, report.requests) == (8, 7)

    def refused(_request: httpx.Request) -> httpx.Response:
        return _json(400, error="Invalid API key: key-123")

    async with _client(refused) as client:
        with pytest.raises(AmplitudeAuthError, match="refused the API key") as refusal:
            await client.send(_updates(3))
    # Amplitude's answer quotes the key; the error (logs, /status) must not.
    assert "key-123" not in str(refusal.value)


def test_per_event_fields_are_read_whatever_their_kind_and_bad_indexes_ignored() -> None:
    text = orjson.dumps(
        {
            "code": 400,
            "error": "x",
            "events_with_missing_fields": {"event_type": [0]},
            "events_with_invalid_id_lengths": {"user_id": [2, 99]},
            "silenced_events": [3, "4", True],
        }
    ).decode()
    assert sorted(refused_events(text, 5)) == [0, 2, 3]
    assert refused_events("not json", 5) == {}


def test_plan_reports_the_http_v2_url() -> None:
    client = AmplitudeClient(SETTINGS)
    plan = client.plan(_updates(2500))
    assert plan.url == "https://api2.amplitude.com/2/httpapi"
    assert [r.identifications for r in plan.requests] == [MAX_EVENTS, 2500 - MAX_EVENTS]
