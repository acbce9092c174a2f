"""A simulated WAN round trip: every API request of the Salesforce sandbox (REST, OAuth, CometD)
is answered at least the set latency later; the control API sets and reads it.

Only lower bounds are asserted: a loaded machine may always be slower, never faster.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from sfamp_sandbox.salesforce import SalesforceSandbox

from .conftest import API, CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME

pytestmark = pytest.mark.integration
LATENCY = "/__sandbox/latency"
PASSWORD_GRANT = {
    "grant_type": "password",
    "client_id": CLIENT_ID,
    "client_secret": CLIENT_SECRET,
    "username": USERNAME,
    "password": PASSWORD,
}


async def _timed(request: Any) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response: httpx.Response = await request
    return response, time.perf_counter() - started


async def test_the_control_api_sets_and_reads_the_latency(sf_http: httpx.AsyncClient) -> None:
    assert (await sf_http.get(LATENCY)).json() == {"ms": 0}
    answer = await sf_http.post(LATENCY, json={"ms": 120})
    assert (answer.status_code, answer.json()) == (200, {"ms": 120})
    assert (await sf_http.get(LATENCY)).json() == {"ms": 120}
    for bad in ({"ms": -1}, {"ms": 1.5}, {"ms": "50"}, {"ms": True}, {}, {"ms": 60_001}):
        refused = await sf_http.post(LATENCY, json=bad)
        assert refused.status_code == 400, bad
        assert "ms must be a whole number of milliseconds" in refused.json()["message"]
    assert (await sf_http.get(LATENCY)).json() == {"ms": 120}
    assert (await sf_http.post("/__sandbox/reset")).status_code == 200
    assert (await sf_http.get(LATENCY)).json() == {"ms": 120}  # a setting, not data


async def test_every_api_request_waits_the_latency(
    salesforce_sandbox: SalesforceSandbox, sf_http: httpx.AsyncClient
) -> None:
    assert (await sf_http.post(LATENCY, json={"ms": 150})).status_code == 200
    limits, took = await _timed(sf_http.get(f"{API}/limits"))
    assert limits.status_code == 200
    assert took >= 0.150
    created, took = await _timed(sf_http.post(f"{API}/sobjects/Account/", json={"Name": "Acme"}))
    assert created.status_code == 201, created.text
    assert took >= 0.150
    refused, took = await _timed(sf_http.get(f"{API}/sobjects/Nope__c/describe/"))
    assert refused.status_code == 404  # errors travel the same network
    assert took >= 0.150
    async with httpx.AsyncClient(base_url=salesforce_sandbox.base_url, timeout=10) as anonymous:
        token, took = await _timed(anonymous.post("/services/oauth2/token", data=PASSWORD_GRANT))
    assert token.status_code == 200, token.text
    assert took >= 0.150


async def test_a_held_long_poll_waits_the_latency_on_top_of_its_own_wait() -> None:
    poll_seconds, latency_ms = 0.3, 200
    async with (
        SalesforceSandbox(poll_timeout=poll_seconds, latency_ms=latency_ms) as sandbox,
        httpx.AsyncClient(base_url=sandbox.base_url, timeout=10) as http,
    ):
        assert (await http.get(LATENCY)).json() == {"ms": latency_ms}
        token = (await http.post("/services/oauth2/token", data=PASSWORD_GRANT)).json()
        http.headers["Authorization"] = f"Bearer {token['access_token']}"
        [shaken] = (
            await http.post(
                "/cometd/62.0",
                json=[{"channel": "/meta/handshake", "supportedConnectionTypes": ["long-polling"]}],
            )
        ).json()
        connect = {"channel": "/meta/connect", "clientId": shaken["clientId"], "id": "1"}
        [first], took = await _timed_json(http, connect)  # answered at once: no hold
        assert first["successful"] is True
        assert took >= latency_ms / 1000
        [held], took = await _timed_json(http, connect | {"id": "2"})  # held, nothing comes
        assert held["successful"] is True
        assert took >= poll_seconds + latency_ms / 1000


async def _timed_json(http: httpx.AsyncClient, message: dict[str, Any]) -> tuple[Any, float]:
    response, took = await _timed(http.post("/cometd/62.0", json=[message]))
    assert response.status_code == 200, response.text
    return response.json(), took
