"""/2/httpapi and /batch: JSON answers, and the official SDK's $groupidentify events."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest
from amplitude import Amplitude, BaseEvent, Config, Identify

from sfamp_sandbox.amplitude import EU_API_KEY, US_API_KEY, AmplitudeSandbox

pytestmark = pytest.mark.integration


def _group_identify_event(value: str, props: dict[str, Any]) -> dict[str, Any]:
    return {"event_type": "$groupidentify", "groups": {"account": value}, "group_properties": props}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            {"api_key": US_API_KEY},
            {"error": "Request missing required field", "missing_field": "events"},
        ),
        ({"events": [{}]}, {"error": "Request missing required field", "missing_field": "api_key"}),
        ({"api_key": "wrong", "events": [{}]}, {"error": "Invalid API key: wrong"}),
        (
            {"api_key": US_API_KEY, "events": [{"user_id": "user-1"}]},
            {"events_with_missing_fields": {"event_type": [0]}},
        ),
        (
            {"api_key": US_API_KEY, "events": [{"event_type": "e", "user_id": "u1"}]},
            {"events_with_invalid_id_lengths": {"user_id": [0]}},
        ),
        (
            {"api_key": US_API_KEY, "events": [{"event_type": "e", "user_id": "null"}]},
            {"events_with_invalid_fields": {"user_id": [0]}},
        ),
        (
            {
                "api_key": US_API_KEY,
                "events": [{"event_type": "e", "user_id": "user-1", "time": "x"}],
            },
            {"events_with_invalid_fields": {"time": [0]}},
        ),
    ],
)
async def test_json_errors_carry_code(
    http: httpx.AsyncClient, payload: dict[str, Any], expected: dict[str, Any]
) -> None:
    response = await http.post("/2/httpapi", json=payload)
    body = response.json()
    assert response.status_code == 400
    assert body["code"] == 400
    assert expected.items() <= body.items()


async def test_invalid_json_body(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/batch", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.json() == {"code": 400, "error": "Invalid JSON request body"}


async def test_httpapi_over_1_mb_is_413_json(http: httpx.AsyncClient) -> None:
    events = [
        {"event_type": "e", "user_id": "user-1", "event_properties": {"x": "y" * 1000}}
    ] * 1100
    response = await http.post("/2/httpapi", json={"api_key": US_API_KEY, "events": events})
    assert response.status_code == 413
    assert response.json() == {"code": 413, "error": "Payload too large"}


async def test_groupidentify_event_sets_every_listed_group(http: httpx.AsyncClient) -> None:
    events = [
        {
            "event_type": "$groupidentify",
            "groups": {"account": ["a1", "a2"]},
            "group_properties": {"$set": {"tier": "Gold"}},
            "insert_id": "i-1",
        },
        {"event_type": "page_view", "user_id": "user-1", "group_properties": {"ignored": 1}},
    ]
    response = await http.post("/batch", json={"api_key": US_API_KEY, "events": events})
    body = response.json()
    assert (body["code"], body["events_ingested"]) == (200, 2)
    for value in ("a1", "a2"):
        group = (await http.get(f"/__sandbox/groups/account/{value}")).json()
        assert group["properties"] == {"tier": "Gold"}
    again = await http.post("/batch", json={"api_key": US_API_KEY, "events": events[:1]})
    assert again.json()["events_ingested"] == 0  # same insert_id: deduplicated


async def test_groups_blocked_through_the_control_api_are_refused_until_unblocked(
    http: httpx.AsyncClient,
) -> None:
    """The way to rehearse a rejected identification without writing Python."""
    blocked = await http.post("/__sandbox/blocked", json={"group_values": ["001B", "001C"]})
    assert blocked.json() == {"group_values": ["001B", "001C"]}
    events = [
        _group_identify_event(value, {"$set": {"tier": "Gold"}}) for value in ("001A", "001B")
    ]
    refused = await http.post("/2/httpapi", json={"api_key": US_API_KEY, "events": events})
    assert refused.status_code == 400
    assert refused.json()["events_with_invalid_fields"] == {"groups": [1]}
    form = {
        "api_key": US_API_KEY,
        "identification": '{"group_type":"account","group_value":"001C"}',
    }
    assert (await http.post("/groupidentify", data=form)).status_code == 400
    again = await http.post("/__sandbox/blocked", json={"group_values": ["001B"], "blocked": False})
    assert again.json() == {"group_values": ["001C"]}
    accepted = await http.post("/2/httpapi", json={"api_key": US_API_KEY, "events": events})
    assert accepted.status_code == 200, accepted.text
    for bad in (
        {"group_values": "001D"},
        {"group_values": [""]},
        {"group_values": [], "blocked": 1},
    ):
        answer = await http.post("/__sandbox/blocked", json=bad)
        assert answer.status_code == 400, bad
        assert "group_values" in answer.json()["error"] or "blocked" in answer.json()["error"]
    await http.post("/__sandbox/reset")
    assert (await http.get("/__sandbox/blocked")).json() == {"group_values": []}


async def test_eu_json_api_refuses_us_key(http: httpx.AsyncClient) -> None:
    event = _group_identify_event("e1", {"a": 1})
    refused = await http.post("/eu/2/httpapi", json={"api_key": US_API_KEY, "events": [event]})
    assert refused.json()["error"] == f"Invalid API key: {US_API_KEY}"
    accepted = await http.post("/eu/2/httpapi", json={"api_key": EU_API_KEY, "events": [event]})
    assert accepted.json()["code"] == 200


async def test_json_fault_answers_json(http: httpx.AsyncClient) -> None:
    await http.post("/__sandbox/faults", json={"kind": "503", "path": "/2/httpapi"})
    event = _group_identify_event("x", {"a": 1})
    # The fault is scoped to /2/httpapi, so /batch is untouched.
    assert (
        await http.post("/batch", json={"api_key": US_API_KEY, "events": [event]})
    ).status_code == 200
    response = await http.post("/2/httpapi", json={"api_key": US_API_KEY, "events": [event]})
    assert response.status_code == 503
    assert response.json() == {"code": 503, "error": "Service unavailable"}


def _send_with_sdk(base_url: str, use_batch: bool, groups: dict[str, dict[str, Any]]) -> list[int]:
    """Runs in a worker thread: the SDK is synchronous and must not block the server's loop."""
    codes: list[int] = []
    lock = threading.Lock()

    def callback(_event: BaseEvent, code: int, _message: str | None = None) -> None:
        with lock:
            codes.append(code)

    path = "/batch" if use_batch else "/2/httpapi"
    config = Config(
        server_url=base_url + path,
        use_batch=use_batch,
        flush_queue_size=50,
        flush_interval_millis=100,
        callback=callback,
    )
    client = Amplitude(US_API_KEY, config)
    for value, props in groups.items():
        identify = Identify()
        for key, prop in props.items():
            identify.set(key, prop)
        identify.unset("legacy")
        client.group_identify("account", value, identify)
    for future in client.flush() or []:
        if future is not None:
            future.result(timeout=10)
    client.shutdown()
    return codes


@pytest.mark.parametrize("use_batch", [False, True])
async def test_official_sdk_group_identify_reaches_read_back(
    amplitude_sandbox: AmplitudeSandbox, http: httpx.AsyncClient, use_batch: bool
) -> None:
    groups = {
        f"00{n}": {"name": f"Account {n}", "seats": n, "tags": ["a", "b"]} for n in range(120)
    }
    codes = await asyncio.to_thread(_send_with_sdk, amplitude_sandbox.base_url, use_batch, groups)
    assert codes == [200] * len(groups)
    for value in ("000", "0042", "00119"):
        group = (await http.get(f"/__sandbox/groups/account/{value}")).json()
        assert group["properties"] == groups[value]
    paths = {entry["path"] for entry in amplitude_sandbox.state.requests}
    assert paths == {"/batch" if use_batch else "/2/httpapi"}
    assert len(amplitude_sandbox.state.store("us").groups) == len(groups)
