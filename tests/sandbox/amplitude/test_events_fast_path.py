"""The fast paths of /2/httpapi and /batch agree with the checked path on every request.

A request made only of well-formed ``$groupidentify`` events is decoded and checked in
one pass (``group_identifies``); in any other, well-formed ``$groupidentify`` events are
accepted as sent (no per-event objects), and everything else goes through the checked
path. Random requests, mostly shaped like sfamp's and often malformed, must get the same
answer and leave the same groups, history and insert-id memory every way.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
import orjson
import pytest

from sfamp_sandbox.amplitude.events import (
    BATCH,
    GROUP_IDENTIFY_EVENT,
    EventRequest,
    JsonRefused,
    group_identifies,
    parse_event_request,
    validate_events,
)
from sfamp_sandbox.amplitude.ingest import apply_events, apply_group_identifies
from sfamp_sandbox.amplitude.operations import apply_operations, set_all, truncate_value
from sfamp_sandbox.amplitude.state import GroupStore

BLOCKED = frozenset({"blocked-account"})
LONG = "é" * 1500


def _value(rng: random.Random) -> Any:
    return rng.choice(
        [
            "Energy",
            "",
            LONG,
            12,
            -3.5,
            True,
            None,
            ["APAC", "EMEA"],
            ["x" * 1100],
            ["a", 1, None],
            [],
            {"nested": LONG, "n": 1},
            1.5e300,
        ]
        if rng.random() > 0.01
        # Rarely, past 64 bits (orjson reads a float) or nested deeper.
        else [10**20, -(2**63) - 1, [1, 2**64], {"n": 2**63}, [["deep"]]]
    )


def _properties(rng: random.Random) -> dict[str, Any]:
    return {rng.choice(["name", "tier", "seats", "tags", "note"]): _value(rng) for _ in range(4)}


# Accepted, but not as sfamp sends them (so not all by the fast path).
UNUSUAL_PROPERTIES: list[Any] = [
    {"$unset": {"name": "-"}},
    {"$setOnce": {"tier": "Old", "new": 1}, "$add": {"seats": 2}, "$set": {"tier": "Gold"}},
    {"$append": {"tags": "NA"}, "$remove": {"tags": "APAC"}, "$preInsert": {"t": [1]}},
    {"$clearAll": "-", "$set": {"fresh": True}},
    {"$prepend": {"tags": ["z"]}, "$postInsert": {"tags": "q"}},
    {"$unknown": {"a": 1}, "$set": {"b": 2}},
    {"plain": "value", "$set": {"c": 3}},
    {"plain": "only", "tags": ["x"]},
    {},
    None,
]
INVALID_PROPERTIES: list[Any] = [{"$set": ["tier"]}, {"$unset": "name"}, [], "text", 5]
UNUSUAL_GROUPS: list[Any] = [
    {"account": 42},
    {"account": 4.5},
    {"account": ["001A", "001B"]},
    {"account": "001A", "plan": "gold"},
    {"account": "001A", "plan": 7},
    {},
    None,
    *({f"type{n}": "v1"} for n in range(7)),  # past the five group types, eventually
]
INVALID_GROUPS: list[Any] = [
    {"account": "blocked-account"},
    {"account": ""},
    {"account": True},
    {"account": None},
    {"account": ["001A", "blocked-account"]},
    {"account": [""]},
    [],
    "001A",
]
UNUSUAL_FIELDS: list[tuple[str, Any]] = [
    ("time", None),
    ("device_id", "device-12345"),
    ("device_id", 17),
    ("insert_id", ""),
    ("insert_id", 17),
    ("insert_id", None),
    ("user_id", "null"),
]
INVALID_FIELDS: list[tuple[str, Any]] = [
    ("time", "x"),
    ("time", 1.5),
    ("time", False),
    ("event_type", ""),
    ("event_type", 17),
    ("event_type", None),
]
MISSING_FIELDS = ["groups", "group_properties", "insert_id", "time", "library"]


def _pick(
    rng: random.Random,
    odd: float,
    bad: float,
    common: Any,
    odd_ones: list[Any],
    bad_ones: list[Any],
) -> Any:
    draw = rng.random()
    if draw < bad:
        return rng.choice(bad_ones)
    return rng.choice(odd_ones) if draw < bad + odd else common


def _event(rng: random.Random, index: int, odd: float, bad: float) -> Any:
    if rng.random() < bad / 5:
        return rng.choice([None, "event", 3, []])
    if rng.random() < odd / 5:  # other event types, with their own id checks
        user_id = rng.choice(["user-12345", "user-12345", "u1", "null", None])
        return {"event_type": "page_view", "user_id": user_id, "insert_id": f"pv-{index}"}
    set_only = {"$set": _properties(rng)}
    common = rng.choice([set_only, {**set_only, "$unset": {"tier": "-", "gone": "-"}}])
    event: dict[str, Any] = {
        "event_type": "$groupidentify",
        "groups": _pick(
            rng,
            odd,
            bad,
            {"account": f"001RM{rng.randrange(40):05d}"},
            UNUSUAL_GROUPS,
            INVALID_GROUPS,
        ),
        "group_properties": _pick(rng, odd, bad, common, UNUSUAL_PROPERTIES, INVALID_PROPERTIES),
        "insert_id": f"sfamp-abcdef-{rng.randrange(300)}",  # repeats across requests
        "time": 1_764_500_000_000,
        "library": "sfamp",
    }
    field = _pick(rng, odd, bad, None, UNUSUAL_FIELDS, INVALID_FIELDS)
    if field is not None:
        event[field[0]] = field[1]
    if rng.random() < odd / 3:
        event.pop(rng.choice(MISSING_FIELDS))
    return event


def _body(rng: random.Random) -> bytes:
    # How often an event has an unusual field, and how often an invalid one.
    odd, bad = rng.choice([0.0, 0.05, 0.4]), rng.choice([0.0, 0.0, 0.01, 0.2])
    events = [_event(rng, index, odd, bad) for index in range(rng.randrange(1, 25))]
    return msgspec.json.encode({"api_key": "sandbox-api-key", "events": events})  # big ints too


def _ingest(store: GroupStore, body: bytes, request_id: int, path: str) -> Any:
    """The answer to ``body`` by ``path``: "whole" (a request of well-formed events in one
    pass, else as "fast"), "fast" (well-formed events as sent) or "checked"."""
    stamp = {"request_id": request_id, "at": 1.0, "path": "/batch"}
    now = 1_000.0 + request_id
    quick = group_identifies(body, BATCH, BLOCKED) if path == "whole" else None
    if quick is not None:
        ingested, groups = apply_group_identifies(store, quick[1], now, stamp)
        return [ingested, [(GROUP_IDENTIFY_EVENT, ingested)] if ingested else [], groups]
    try:
        accepted = validate_events(
            parse_event_request(body, BATCH), BLOCKED, fast_path=path != "checked"
        )
    except JsonRefused as refused:
        return refused.body
    ingested, types, groups = apply_events(store, accepted, now, stamp)
    return [ingested, list(types.items()), groups]


def _snapshot(store: GroupStore) -> bytes:
    """Everything stored, in its order (dict equality alone would ignore key order)."""
    return orjson.dumps(
        {
            "groups": [[key, list(props.items())] for key, props in store.groups.items()],
            "history": [[key, list(entries)] for key, entries in store.history.items()],
            "types": sorted(store.group_types),
            "ignored": sorted(store.ignored_group_types),
            "seen": list(store.seen_insert_ids.items()),
        }
    )


@pytest.mark.parametrize("seed", range(4))
def test_fast_and_checked_paths_give_the_same_answers_and_state(seed: int) -> None:
    rng = random.Random(seed)
    stores = {path: GroupStore() for path in ("whole", "fast", "checked")}
    accepted_requests = whole_requests = 0
    for request_id in range(160):
        body = _body(rng)
        answers = {path: _ingest(store, body, request_id, path) for path, store in stores.items()}
        assert answers["whole"] == answers["fast"] == answers["checked"], f"{request_id}: {body!r}"
        accepted_requests += isinstance(answers["checked"], list)
        whole_requests += group_identifies(body, BATCH, BLOCKED) is not None
    snapshots = {path: _snapshot(store) for path, store in stores.items()}
    assert snapshots["whole"] == snapshots["fast"] == snapshots["checked"]
    assert accepted_requests > 40, "the generator should not refuse nearly everything"
    assert whole_requests > 20, "some requests should be made of well-formed events only"
    assert stores["whole"].groups, "some groups should be stored"


def test_sfamp_shaped_events_take_the_fast_path() -> None:
    events = [
        {
            "event_type": "$groupidentify",
            "groups": {"account": f"001RM{n}"},
            "group_properties": {"$set": {"name": "Acme"}, "$unset": {"tier": "-"}},
            "insert_id": f"sfamp-0-{n}",
            "time": 1,
            "library": "sfamp",
        }
        for n in range(3)
    ]
    request = EventRequest("sandbox-api-key", events, 5)
    accepted = validate_events(request)
    assert all(item is event for item, event in zip(accepted, events, strict=True))


@pytest.mark.parametrize("seed", range(3))
def test_set_and_unset_give_what_the_walk_through_every_operation_gives(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        start = _properties(rng)
        operations: dict[str, Any] = {"$set": _properties(rng)}
        if rng.random() < 0.5:
            operations["$unset"] = {"tier": "-", "name": "-"}
        quick, walked = dict(start), dict(start)
        apply_operations(quick, operations)
        # An empty $remove changes nothing but takes the walk through every operation.
        apply_operations(walked, {**operations, "$remove": {}})
        assert list(quick.items()) == list(walked.items())


def test_set_all_stores_cut_strings_and_copies_of_lists() -> None:
    values: dict[str, Any] = {"tags": ["a", "b"], "long": LONG, "n": 1, "deep": {"s": LONG}}
    props: dict[str, Any] = {"n": 0, "other": True}
    set_all(props, values)
    assert list(props.items()) == [
        ("n", 1),
        ("other", True),
        ("tags", ["a", "b"]),
        ("long", LONG[:1024]),
        ("deep", {"s": LONG[:1024]}),
    ]
    assert props["tags"] is not values["tags"], "a stored list is a copy"
    assert props == {**{"other": True}, **{k: truncate_value(v) for k, v in values.items()}}
