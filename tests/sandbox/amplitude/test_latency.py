"""A simulated WAN round trip: every ingestion request of the Amplitude sandbox is answered at
least the set latency later; the control API (US and EU paths) sets and reads it.

Only lower bounds are asserted: a loaded machine may always be slower, never faster.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from sfamp_sandbox.amplitude import EU_API_KEY, US_API_KEY, AmplitudeSandbox

pytestmark = pytest.mark.integration


def _identification(value: str) -> str:
    return json.dumps(
        [{"group_type": "account", "group_value": value, "group_properties": {"tier": "Gold"}}]
    )


async def test_the_control_api_sets_and_reads_the_latency(http: httpx.AsyncClient) -> None:
    assert (await http.get("/__sandbox/latency")).json() == {"ms": 0}
    answer = await http.post("/eu/__sandbox/latency", json={"ms": 80})
    assert (answer.status_code, answer.json()) == (200, {"ms": 80})
    assert (await http.get("/__sandbox/latency")).json() == {"ms": 80}  # one server, one network
    for bad in ({"ms": -5}, {"ms": "80"}, {"ms": False}, {}, [80]):
        refused = await http.post("/__sandbox/latency", json=bad)
        assert refused.status_code == 400, bad
        assert "ms" in refused.json()["error"]
    assert (await http.post("/__sandbox/reset")).status_code == 200
    assert (await http.get("/__sandbox/latency")).json() == {"ms": 80}  # a setting, not data


async def test_every_ingestion_request_waits_the_latency(http: httpx.AsyncClient) -> None:
    assert (await http.post("/__sandbox/latency", json={"ms": 150})).status_code == 200
    for path, key in (("/groupidentify", US_API_KEY), ("/eu/groupidentify", EU_API_KEY)):
        started = time.perf_counter()
        sent = await http.post(path, data={"api_key": key, "identification": _identification("1")})
        assert (sent.status_code, sent.text) == (200, "success")
        assert time.perf_counter() - started >= 0.150
    started = time.perf_counter()
    refused = await http.post("/groupidentify", data={"api_key": "wrong", "identification": "[]"})
    assert refused.status_code == 400  # a refusal travels the same network
    assert time.perf_counter() - started >= 0.150
    group = await http.get("/__sandbox/groups/account/1")
    assert group.json()["properties"] == {"tier": "Gold"}


async def test_the_latency_can_be_set_at_start() -> None:
    async with (
        AmplitudeSandbox(latency_ms=120) as sandbox,
        httpx.AsyncClient(base_url=sandbox.base_url, timeout=10) as http,
    ):
        assert (await http.get("/__sandbox/latency")).json() == {"ms": 120}
        started = time.perf_counter()
        event = {"event_type": "$identify", "user_id": "user-1", "user_properties": {"a": 1}}
        sent = await http.post("/2/httpapi", json={"api_key": US_API_KEY, "events": [event]})
        assert sent.status_code == 200, sent.text
        assert time.perf_counter() - started >= 0.120
