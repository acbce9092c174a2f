"""REST writes on the Salesforce sandbox reach a real aiosfstream client as CDC events."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from aiosfstream_ng.auth import PasswordAuthenticator
from aiosfstream_ng.client import Client
from aiosfstream_ng.exceptions import ServerError
from aiosfstream_ng.replay import ReplayMarker, ReplayOption

from sfamp_sandbox.salesforce import SalesforceSandbox

pytestmark = pytest.mark.integration

API = "/services/data/v62.0"
ACCOUNT_CHANNEL = "/data/AccountChangeEvent"
THREE_DAYS = 72 * 3600


class SandboxAuthenticator(PasswordAuthenticator):
    """Points aiosfstream's password flow at the sandbox token endpoint."""

    def __init__(self, base_url: str) -> None:
        super().__init__("sandbox-client", "sandbox-secret", "admin@sandbox.example", "sandbox")
        self.token_endpoint = f"{base_url}/services/oauth2/token"

    @property
    def _token_url(self) -> str:
        return self.token_endpoint


def streaming_client(sandbox: SalesforceSandbox, replay: Any, **options: Any) -> Client:
    return Client(SandboxAuthenticator(sandbox.base_url), replay=replay, **options)


async def receive(client: Client, count: int) -> list[dict[str, Any]]:
    async with asyncio.timeout(10):
        return [await client.receive() for _ in range(count)]


async def create_account(http: httpx.AsyncClient, **fields: Any) -> str:
    response = await http.post(f"{API}/sobjects/Account/", json=fields)
    assert response.status_code == 201, response.text
    record_id: str = response.json()["id"]
    return record_id


async def test_create_update_delete_over_rest(
    salesforce_sandbox: SalesforceSandbox, sf_http: httpx.AsyncClient
) -> None:
    async with streaming_client(salesforce_sandbox, ReplayOption.NEW_EVENTS) as client:
        await client.subscribe(ACCOUNT_CHANNEL)
        record_id = await create_account(sf_http, Name="Acme", Industry="Biotechnology")
        response = await sf_http.patch(
            f"{API}/sobjects/Account/{record_id}", json={"Industry": "Energy"}
        )
        assert response.status_code == 204, response.text
        response = await sf_http.delete(f"{API}/sobjects/Account/{record_id}")
        assert response.status_code == 204, response.text
        created, updated, deleted = await receive(client, 3)

    headers = [m["data"]["payload"]["ChangeEventHeader"] for m in (created, updated, deleted)]
    assert [h["changeType"] for h in headers] == ["CREATE", "UPDATE", "DELETE"]
    assert all(h["entityName"] == "Account" for h in headers)
    assert all(h["recordIds"] == [record_id] for h in headers)
    assert all(h["commitUser"].startswith("005") for h in headers)
    assert headers[0]["changeOrigin"].startswith("com/salesforce/api/rest/")
    replay_ids = [m["data"]["event"]["replayId"] for m in (created, updated, deleted)]
    assert replay_ids == sorted(replay_ids)
    assert created["data"]["payload"]["Name"] == "Acme"
    assert created["data"]["payload"]["CreatedDate"].endswith("Z")
    assert "Industry" in headers[1]["changedFields"]
    assert "LastModifiedDate" in headers[1]["changedFields"]
    assert updated["data"]["payload"]["Industry"] == "Energy"
    assert "Name" not in updated["data"]["payload"]
    assert set(deleted["data"]["payload"]) == {"ChangeEventHeader"}


async def test_stored_replay_id_resumes_after_reconnect(
    salesforce_sandbox: SalesforceSandbox, sf_http: httpx.AsyncClient
) -> None:
    storage: dict[str, ReplayMarker] = {}
    async with streaming_client(salesforce_sandbox, storage) as client:
        await client.subscribe(ACCOUNT_CHANNEL)
        await create_account(sf_http, Name="First")
        await receive(client, 1)
    missed = [await create_account(sf_http, Name=f"Missed {n}") for n in range(2)]
    async with streaming_client(salesforce_sandbox, storage) as client:
        await client.subscribe(ACCOUNT_CHANNEL)
        messages = await receive(client, 2)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.7):
                await client.receive()
    assert [m["data"]["payload"]["ChangeEventHeader"]["recordIds"][0] for m in messages] == missed


async def test_replay_all_then_expiry_after_three_days(
    salesforce_sandbox: SalesforceSandbox, sf_http: httpx.AsyncClient
) -> None:
    ids = [await create_account(sf_http, Name=f"Account {n}") for n in range(3)]
    async with streaming_client(salesforce_sandbox, ReplayOption.ALL_EVENTS) as client:
        await client.subscribe("/data/ChangeEvents")
        messages = await receive(client, 3)
    assert [m["data"]["payload"]["ChangeEventHeader"]["recordIds"][0] for m in messages] == ids
    first = messages[0]["data"]["event"]["replayId"]

    response = await sf_http.post("/__sandbox/clock", json={"advance_seconds": THREE_DAYS + 60})
    assert response.status_code == 200, response.text
    storage = {"/data/ChangeEvents": ReplayMarker("0", first)}
    async with streaming_client(salesforce_sandbox, storage) as client:
        with pytest.raises(ServerError) as info:
            await client.subscribe("/data/ChangeEvents")
    assert info.value.error == (
        f"400::The replayId {{{first}}} you provided was invalid.  Please provide a valid ID, "
        "-2 to replay all events, or -1 to replay only new events."
    )
