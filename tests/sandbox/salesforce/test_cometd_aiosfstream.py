"""The real aiosfstream-ng client against the CometD endpoint (with a minimal token endpoint)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiocometd_ng.constants import TransportState
from aiohttp import web
from aiosfstream_ng.auth import PasswordAuthenticator
from aiosfstream_ng.client import Client
from aiosfstream_ng.exceptions import ServerError
from aiosfstream_ng.replay import ReplayMarker, ReplayOption

from sfamp_sandbox.salesforce.cdc import ChangeEventLog, RecordChange
from sfamp_sandbox.salesforce.cometd import CometdServer, add_cometd_routes
from tests.support.clock import FakeClock

pytestmark = pytest.mark.integration

ACCOUNT_CHANNEL = "/data/AccountChangeEvent"
RETENTION = 3600.0


class EmulatorAuthenticator(PasswordAuthenticator):
    """aiosfstream has no token URL parameter; the ``_token_url`` property is the hook."""

    def __init__(self, token_url: str) -> None:
        super().__init__("sandbox-client", "sandbox-secret", "admin@sandbox.example", "sandbox")
        self.emulator_token_url = token_url

    @property
    def _token_url(self) -> str:
        return self.emulator_token_url


class ReconnectingClient(Client):
    """aiocometd-ng passes ``loop=`` to ``asyncio.wait_for`` (gone since Python 3.10), so after a
    dropped connection ``receive()`` fails at once; this is the method with that fixed."""

    # The library calls this hook with a timeout argument; the name is not ours to change.
    async def _wait_connection_timeout(self, timeout: float) -> None:
        assert self._transport is not None
        while True:
            await self._transport.wait_for_state(TransportState.CONNECTING)
            try:
                async with asyncio.timeout(timeout):
                    await self._transport.wait_for_state(TransportState.CONNECTED)
            except TimeoutError:
                return


@dataclass
class Org:
    base_url: str
    log: ChangeEventLog
    server: CometdServer
    clock: FakeClock[float]
    valid_tokens: set[str] = field(default_factory=set)
    tokens_issued: int = 0
    sessions_disabled: bool = False  # no token, old or new, is accepted
    logins: asyncio.Condition = field(default_factory=asyncio.Condition)  # notified per token

    def client(self, replay: Any = ReplayOption.NEW_EVENTS, **options: Any) -> Client:
        auth = EmulatorAuthenticator(f"{self.base_url}/services/oauth2/token")
        return Client(auth, replay=replay, connection_timeout=5.0, **options)

    def publish(self, change_type: str, record_id: str, **fields: Any) -> int:
        changed = tuple(fields) if change_type == "UPDATE" else ()
        body = {} if change_type == "DELETE" else fields
        return self.log.publish(
            RecordChange("Account", change_type, (record_id,), body, changed_fields=changed)
        )


@pytest.fixture
async def org() -> AsyncIterator[Org]:
    clock = FakeClock(1_714_156_685.0)
    log = ChangeEventLog(clock, retention_seconds=RETENTION)
    app = web.Application()
    state: dict[str, Org] = {}

    async def token(_: web.Request) -> web.Response:
        current = state["org"]
        current.tokens_issued += 1
        access_token = f"00DRM000000abcd!token{current.tokens_issued}"
        current.valid_tokens.add(access_token)
        async with current.logins:
            current.logins.notify_all()
        return web.json_response(
            {"access_token": access_token, "token_type": "Bearer", "instance_url": current.base_url}
        )

    def authorize(header: str | None) -> bool:
        current = state["org"]
        if current.sessions_disabled or header is None:
            return False
        return header.removeprefix("Bearer ") in current.valid_tokens

    app.router.add_post("/services/oauth2/token", token)
    server = add_cometd_routes(app, log, authorize=authorize, clock=clock, poll_timeout=0.5)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state["org"] = Org(f"http://127.0.0.1:{runner.addresses[0][1]}", log, server, clock)
    yield state["org"]
    await runner.cleanup()


async def receive(client: Client, count: int) -> list[dict[str, Any]]:
    async with asyncio.timeout(10):
        return [await client.receive() for _ in range(count)]


async def assert_nothing_more(client: Client) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.7):
            await client.receive()


def replay_ids(messages: list[dict[str, Any]]) -> list[int]:
    return [m["data"]["event"]["replayId"] for m in messages]


async def wait_for_new_session(server: CometdServer, old: list[str]) -> None:
    async with asyncio.timeout(10):
        # The server has no event for new sessions; poll its state briefly.
        while not server.client_ids or server.client_ids == old:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def wait_for_new_token(org: Org, issued: int) -> None:
    async with asyncio.timeout(10), org.logins:
        await org.logins.wait_for(lambda: org.tokens_issued >= issued)


async def test_create_update_delete_events_reach_the_client(org: Org) -> None:
    async with org.client() as client:
        await client.subscribe(ACCOUNT_CHANNEL)
        org.publish("CREATE", "001A", Name="Acme", Industry="Energy")
        org.publish("UPDATE", "001A", Industry=None, LastModifiedDate="2024-04-26T18:43:20.000Z")
        org.publish("DELETE", "001A")
        messages = await receive(client, 3)
    assert {m["channel"] for m in messages} == {ACCOUNT_CHANNEL}
    assert replay_ids(messages) == [1, 2, 3]
    headers = [m["data"]["payload"]["ChangeEventHeader"] for m in messages]
    assert [h["changeType"] for h in headers] == ["CREATE", "UPDATE", "DELETE"]
    assert all(h["entityName"] == "Account" and h["recordIds"] == ["001A"] for h in headers)
    assert headers[0]["commitTimestamp"] == 1_714_156_685_000
    assert headers[1]["changedFields"] == ["Industry", "LastModifiedDate"]
    assert messages[0]["data"]["payload"]["Industry"] == "Energy"
    assert messages[1]["data"]["payload"]["Industry"] is None
    assert set(messages[2]["data"]["payload"]) == {"ChangeEventHeader"}


async def test_reconnect_with_stored_replay_id_gets_exactly_the_later_events(org: Org) -> None:
    storage: dict[str, ReplayMarker] = {}
    async with org.client(storage) as client:
        await client.subscribe(ACCOUNT_CHANNEL)
        org.publish("CREATE", "001A", Name="A")
        org.publish("CREATE", "001B", Name="B")
        await receive(client, 2)
    assert storage[ACCOUNT_CHANNEL].replay_id == 2
    org.publish("UPDATE", "001A", Name="A2")
    org.publish("UPDATE", "001B", Name="B2")
    async with org.client(storage) as client:
        await client.subscribe(ACCOUNT_CHANNEL)
        later = await receive(client, 2)
        await assert_nothing_more(client)
    assert replay_ids(later) == [3, 4]
    assert storage[ACCOUNT_CHANNEL].replay_id == 4


async def test_all_events_replays_every_retained_event(org: Org) -> None:
    for n in range(5):
        org.publish("CREATE", f"001{n}", Name=str(n))
    async with org.client(ReplayOption.ALL_EVENTS) as client:
        await client.subscribe("/data/ChangeEvents")
        messages = await receive(client, 5)
        await assert_nothing_more(client)
    assert replay_ids(messages) == [1, 2, 3, 4, 5]
    assert {m["channel"] for m in messages} == {"/data/ChangeEvents"}


async def test_expired_replay_id_is_refused_then_falls_back(org: Org) -> None:
    org.publish("CREATE", "001A", Name="A")
    org.clock.now += RETENTION + 1
    org.publish("CREATE", "001B", Name="B")
    storage = {ACCOUNT_CHANNEL: ReplayMarker("1714156685000", 1)}
    async with org.client(storage) as client:
        with pytest.raises(ServerError) as info:
            await client.subscribe(ACCOUNT_CHANNEL)
    assert info.value.error == (
        "400::The replayId {1} you provided was invalid.  Please provide a valid ID, "
        "-2 to replay all events, or -1 to replay only new events."
    )
    async with org.client(storage, replay_fallback=ReplayOption.ALL_EVENTS) as client:
        await client.subscribe(ACCOUNT_CHANNEL)
        [message] = await receive(client, 1)
    assert message["data"]["payload"]["ChangeEventHeader"]["recordIds"] == ["001B"]


@pytest.mark.parametrize("fault", ["unknown_client", "expire_sessions"])
async def test_lost_session_makes_the_client_handshake_and_resubscribe(
    org: Org, fault: str
) -> None:
    storage: dict[str, ReplayMarker] = {}
    async with org.client(storage) as client:
        await client.subscribe(ACCOUNT_CHANNEL)
        org.publish("CREATE", "001A", Name="A")
        await receive(client, 1)
        old = org.server.client_ids
        org.server.inject_fault(fault)
        await wait_for_new_session(org.server, old)
        org.publish("UPDATE", "001A", Name="A2")
        [message] = await receive(client, 1)
    assert replay_ids([message]) == [2]
    assert org.tokens_issued >= 2  # aiocometd re-authenticates on 401/403 before handshaking


async def test_revoked_token_is_refreshed_and_the_stream_goes_on(org: Org) -> None:
    async with org.client() as client:
        await client.subscribe(ACCOUNT_CHANNEL)
        org.valid_tokens.clear()  # the next request answers 401::Authentication invalid
        # Published once the client has logged in again: a connect held meanwhile would
        # carry the event with the old token.
        await wait_for_new_token(org, 2)
        org.publish("CREATE", "001A", Name="A")
        [message] = await receive(client, 1)
    assert message["data"]["event"]["replayId"] == 1
    assert org.tokens_issued == 2


async def test_invalid_session_refuses_the_handshake(org: Org) -> None:
    org.sessions_disabled = True
    client = org.client()
    try:
        with pytest.raises(ServerError) as info:
            await client.open()
    finally:
        await client.close()
    response = info.value.response
    assert response is not None
    assert response["error"] == "403::Handshake denied"
    assert response["ext"]["sfdc"]["failureReason"] == "401::Authentication invalid"
    assert response["advice"]["reconnect"] == "none"


async def test_dropped_long_poll_loses_nothing(org: Org) -> None:
    auth = EmulatorAuthenticator(f"{org.base_url}/services/oauth2/token")
    async with ReconnectingClient(auth, connection_timeout=5.0) as client:
        await client.subscribe(ACCOUNT_CHANNEL)
        org.server.inject_fault("drop_long_poll", 2)
        org.publish("CREATE", "001A", Name="A")
        org.publish("CREATE", "001B", Name="B")
        messages = await receive(client, 2)
    assert replay_ids(messages) == [1, 2]
    assert org.server.pending_faults["drop_long_poll"] == 0
