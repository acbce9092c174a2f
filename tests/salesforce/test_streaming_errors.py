"""CometD refusals keep Salesforce's reason; a session refused at the handshake is renewed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from types import SimpleNamespace

import httpx
import pytest
from aiocometd_ng.constants import TransportState
from aiosfstream_ng.exceptions import ServerError
from structlog.testing import capture_logs

from pipeline.config.settings import KafkaSettings, Settings
from pipeline.config.validation import parse_mapping
from pipeline.errors import SalesforceError, SalesforceUnavailableError, SessionExpiredError
from pipeline.kafka.producer import ChangeProducer
from pipeline.runtime.ingest import IngestPump
from pipeline.runtime.mapping_file import MappingVersion
from pipeline.runtime.mapping_source import MappingHolder
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.state import ServiceState
from pipeline.salesforce.cdc import (
    CdcSubscriber,
    DurableReplayStorage,
    _VersionedClient,
    translate_cometd_errors,
)
from pipeline.salesforce.channels import channel_for
from pipeline.salesforce.client import SalesforceClient
from sfamp_sandbox.salesforce import SalesforceSandbox
from tests.runtime.conftest import wait_until
from tests.salesforce.helpers import sandbox_settings

CHANNEL = channel_for("Account")
ACCOUNT_MAPPING = {
    "version": 1,
    "sync_cadence": {"mode": "interval", "every_seconds": 1},
    "mappings": [
        {
            "sfdc_object": "Account",
            "group_type": "account",
            "group_name_field": "Id",
            "group_properties": [{"sfdc_field": "Name", "amplitude_property": "name"}],
        }
    ],
}


def handshake_denied(reason: str) -> ServerError:
    """The handshake answer Salesforce gives, as aiosfstream raises it."""
    return ServerError(
        "Handshake request failed.",
        {
            "channel": "/meta/handshake",
            "successful": False,
            "error": "403::Handshake denied",
            "advice": {"reconnect": "none"},
            "ext": {"sfdc": {"failureReason": reason}},
        },
    )


def test_a_concurrent_client_limit_refusal_keeps_the_reason() -> None:
    with (
        pytest.raises(SalesforceUnavailableError) as caught,
        translate_cometd_errors(None),
    ):
        raise handshake_denied("403::Organization concurrent user limit exceeded")
    assert "Organization concurrent user limit exceeded" in str(caught.value)
    assert "403::Handshake denied" in str(caught.value)
    assert caught.value.error_code == "403::Organization concurrent user limit exceeded"


def test_an_invalid_session_at_the_handshake_is_a_session_to_renew() -> None:
    with pytest.raises(SessionExpiredError) as caught, translate_cometd_errors(None):
        raise handshake_denied("401::Authentication invalid")
    assert "401::Authentication invalid" in str(caught.value)
    assert caught.value.retriable


@pytest.mark.integration
async def test_a_revoked_session_is_renewed_at_the_handshake(
    sf_client: SalesforceClient, control: httpx.AsyncClient
) -> None:
    revoked = await sf_client.auth.token()
    answer = await control.post("/services/oauth2/revoke", data={"token": revoked.access_token})
    assert answer.status_code == 200, answer.text
    subscriber = CdcSubscriber(
        sf_client.auth.streaming_authenticator(),
        [CHANNEL],
        DurableReplayStorage({}),
        connection_timeout=10,
    )
    async with subscriber as cdc:
        assert cdc.subscribed == {CHANNEL}
    assert sf_client.auth.logins == 2
    assert sf_client.auth.current != revoked


@pytest.mark.integration
async def test_the_org_client_limit_is_named_in_the_error(
    salesforce_sandbox: SalesforceSandbox, sf_client: SalesforceClient
) -> None:
    assert salesforce_sandbox.state.cometd is not None
    salesforce_sandbox.state.cometd.max_clients = 0
    subscriber = CdcSubscriber(
        sf_client.auth.streaming_authenticator(), [CHANNEL], DurableReplayStorage({})
    )
    with pytest.raises(SalesforceError) as caught:
        async with subscriber:
            pass
    # The sandbox refuses as Salesforce does (403::Handshake denied, the reason in
    # ext.sfdc.failureReason): the reason, not the generic refusal, names the error.
    assert isinstance(caught.value, SalesforceUnavailableError)
    assert caught.value.error_code == "403::Organization concurrent user limit exceeded"
    assert "403::Handshake denied" in str(caught.value)
    assert caught.value.retriable  # it clears once other clients leave


@pytest.mark.integration
@pytest.mark.parametrize(
    ("refusal", "error", "level", "fix_needed"),
    [
        ("password", "SalesforceAuthError", "error", True),
        ("client limit", "SalesforceUnavailableError", "warning", False),
    ],
)
async def test_an_interrupted_ingest_says_whether_waiting_fixes_it(
    salesforce_sandbox: SalesforceSandbox,
    kafka_bootstrap: str,
    topic_prefix: str,
    refusal: str,
    error: str,
    level: str,
    fix_needed: bool,
) -> None:
    """The ingest loop retries every error: its log says so, and what waiting cannot fix
    (a refused password) is an error where what clears by itself (the org's limit of
    streaming clients) is a warning."""
    refused = {"password": "wrong"} if refusal == "password" else {}
    if refusal == "client limit":
        assert salesforce_sandbox.state.cometd is not None
        salesforce_sandbox.state.cometd.max_clients = 0
    settings = Settings(
        salesforce=sandbox_settings(salesforce_sandbox, **refused),
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix),
    )
    config = parse_mapping(json.dumps(ACCOUNT_MAPPING))
    holder = MappingHolder(MappingVersion(config, "test"))
    with capture_logs() as logs:
        async with (
            SalesforceClient.from_settings(settings.salesforce) as salesforce,
            ChangeProducer(settings.kafka) as producer,
        ):
            pump = IngestPump(
                settings, holder, salesforce, producer, ServiceState(role="ingest"), Metrics()
            )
            task = asyncio.create_task(pump.run())
            try:
                await wait_until(
                    lambda: any(e["event"] == "ingest_interrupted" for e in logs),
                    timeout=20,
                    what=f"the ingest loop to log the refusal ({refusal})",
                )
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    line = next(e for e in logs if e["event"] == "ingest_interrupted")
    assert (line["retriable"], line["fix_needed"]) == (True, fix_needed)
    assert (line["error"], line["log_level"]) == (error, level)
    assert line["retry_in_seconds"] > 0


def _account_subscriber(sf_client: SalesforceClient, *, connection_timeout: float) -> CdcSubscriber:
    return CdcSubscriber(
        sf_client.auth.streaming_authenticator(),
        [CHANNEL],
        DurableReplayStorage({}),
        connection_timeout=connection_timeout,
    )


@pytest.mark.integration
async def test_a_dropped_long_poll_is_reconnected_without_an_error(
    sf_client: SalesforceClient, control: httpx.AsyncClient
) -> None:
    """A long poll the server ends early is followed by a new connect: the subscription
    goes on, and no connection timeout fires before ``connection_timeout`` has passed."""
    async with _account_subscriber(sf_client, connection_timeout=30) as cdc:
        batches = cdc.batches()
        names = []
        with capture_logs() as logs:
            for name in ("Before", "After", "Later"):
                if name == "After":  # the connect after the one now held ends early
                    fault = {"kind": "drop_long_poll", "count": 1}
                    (await control.post("/__sandbox/faults", json=fault)).raise_for_status()
                created = await control.post("/__sandbox/records/Account", json={"Name": name})
                created.raise_for_status()
                batch = await asyncio.wait_for(anext(batches), timeout=20)
                names += [message["data"]["payload"]["Name"] for message in batch]
        await batches.aclose()
    assert names == ["Before", "After", "Later"]
    assert not [line for line in logs if line["log_level"] in ("error", "warning")]


@pytest.mark.integration
async def test_a_connection_that_does_not_come_back_is_lost_after_its_timeout(
    sf_client: SalesforceClient, control: httpx.AsyncClient
) -> None:
    async with _account_subscriber(sf_client, connection_timeout=1) as cdc:
        batches = cdc.batches()
        fault = {"kind": "drop_long_poll", "count": 10_000}
        (await control.post("/__sandbox/faults", json=fault)).raise_for_status()
        await control.post("/__sandbox/records/Account", json={"Name": "Ends the held poll"})
        await asyncio.wait_for(anext(batches), timeout=20)
        started = asyncio.get_running_loop().time()
        with pytest.raises(SalesforceUnavailableError, match="lost connection"):
            await asyncio.wait_for(anext(batches), timeout=20)
        waited = asyncio.get_running_loop().time() - started
        await batches.aclose()
    assert waited >= 1, "given up before the connection timeout"


class _Transport:
    """The CometD transport's states, moved by the test. ``connected`` is run as a wait for
    CONNECTED ends, before it returns: where ``receive`` cancels the watch."""

    def __init__(self) -> None:
        self.events = {state: asyncio.Event() for state in TransportState}
        self.waits_for_connected = asyncio.Event()
        self.connected: Callable[[], object] = lambda: None

    def enter(self, state: TransportState) -> None:
        for event in self.events.values():
            event.clear()
        self.events[state].set()

    async def wait_for_state(self, state: TransportState) -> None:
        if state is TransportState.CONNECTED:
            self.waits_for_connected.set()
        await self.events[state].wait()
        if state is TransportState.CONNECTED:
            self.connected()


async def test_the_reconnect_watch_ends_when_cancelled_as_the_connection_comes_back() -> None:
    """``receive`` cancels the watch in the same loop turn a reconnect answers with messages:
    the watch must end then, not wait for the next reconnect (a task left per reconnect)."""
    transport = _Transport()
    client = SimpleNamespace(_transport=transport)
    transport.enter(TransportState.CONNECTING)
    watch = asyncio.ensure_future(_VersionedClient._wait_connection_timeout(client, 30))  # type: ignore[arg-type]
    await asyncio.wait_for(transport.waits_for_connected.wait(), timeout=5)
    transport.connected = watch.cancel  # as its wait for CONNECTED ends
    transport.enter(TransportState.CONNECTED)
    await asyncio.wait([watch], timeout=5)
    ended = watch.done()
    watch.cancel()  # again, should it have gone on
    await asyncio.gather(watch, return_exceptions=True)
    assert ended, "the watch went on after it was cancelled"
