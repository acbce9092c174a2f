"""CdcSubscriber logging in through SalesforceAuth against the sandbox's CometD endpoint."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from aiosfstream_ng.exceptions import AuthenticationError

from pipeline.errors import SalesforceAuthError
from pipeline.salesforce.cdc import CdcSubscriber, DurableReplayStorage
from pipeline.salesforce.channels import channel_for
from pipeline.salesforce.client import SalesforceClient
from sfamp_sandbox.salesforce import SalesforceSandbox
from tests.salesforce.helpers import fault, sandbox_settings

pytestmark = pytest.mark.integration

CHANNEL = channel_for("Account")


async def next_event(cdc: CdcSubscriber) -> dict[str, Any]:
    async with asyncio.timeout(20):
        async for batch in cdc.batches():
            return batch[0]
    raise AssertionError("no batch")


async def create_account(client: SalesforceClient, name: str) -> str:
    response = await client.rest.request("POST", "sobjects/Account/", json={"Name": name})
    assert response.status_code == 201
    record_id: str = response.json()["id"]
    return record_id


async def test_subscriber_receives_a_create_made_over_rest(sf_client: SalesforceClient) -> None:
    subscriber = CdcSubscriber(
        sf_client.auth.streaming_authenticator(),
        [CHANNEL],
        DurableReplayStorage({}),
        api_version=sf_client.settings.api_version,
        connection_timeout=10,
    )
    async with subscriber as cdc:
        assert cdc.subscribed == {CHANNEL}
        record_id = await create_account(sf_client, "Streamed Inc")
        message = await next_event(cdc)
    assert message["channel"] == CHANNEL
    header = message["data"]["payload"]["ChangeEventHeader"]
    assert header["changeType"] == "CREATE"
    assert header["recordIds"] == [record_id]
    assert message["data"]["payload"]["Name"] == "Streamed Inc"
    assert sf_client.auth.logins == 1  # streaming reused the REST session


async def test_streaming_login_renews_an_expired_session(
    sf_client: SalesforceClient, control: httpx.AsyncClient
) -> None:
    stale = await sf_client.auth.token()
    await fault(control, "expire_sessions")
    subscriber = CdcSubscriber(
        sf_client.auth.streaming_authenticator(),
        [CHANNEL],
        DurableReplayStorage({}),
        connection_timeout=10,
    )
    async with subscriber as cdc:
        assert sf_client.auth.current != stale
        assert sf_client.auth.logins == 2
        record_id = await create_account(sf_client, "After Expiry")
        message = await next_event(cdc)
    assert message["data"]["payload"]["ChangeEventHeader"]["recordIds"] == [record_id]


async def test_streaming_login_refusal_is_the_auth_error(
    salesforce_sandbox: SalesforceSandbox,
) -> None:
    settings = sandbox_settings(salesforce_sandbox, password="wrong")
    async with SalesforceClient.from_settings(settings) as client:
        subscriber = CdcSubscriber(
            client.auth.streaming_authenticator(), [CHANNEL], DurableReplayStorage({})
        )
        # CdcSubscriber translates subscribe errors; open() may pass aiosfstream's
        # AuthenticationError through, with the SalesforceAuthError as its cause.
        with pytest.raises((SalesforceAuthError, AuthenticationError)) as caught:
            async with subscriber:
                pass
    error = caught.value
    refusal = error if isinstance(error, SalesforceAuthError) else error.__cause__
    assert isinstance(refusal, SalesforceAuthError)
    assert "authentication failure (invalid_grant)" in str(refusal)
