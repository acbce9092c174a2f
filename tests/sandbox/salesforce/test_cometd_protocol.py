"""The CometD endpoint on the wire: Salesforce's message shapes, advice and error strings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiohttp import web

from sfamp_sandbox.salesforce.cdc import ChangeEventLog, RecordChange
from sfamp_sandbox.salesforce.cometd import CometdServer, add_cometd_routes
from tests.support.clock import FakeClock

pytestmark = pytest.mark.integration

TOKEN = "00DRM000000abcd!AQ8AQFakeToken"
INVALID_REPLAY = (
    "400::The replayId {{{}}} you provided was invalid.  Please provide a valid ID, "
    "-2 to replay all events, or -1 to replay only new events."
)


@dataclass
class Endpoint:
    http: httpx.AsyncClient
    log: ChangeEventLog
    server: CometdServer
    clock: FakeClock[float]

    async def post(
        self, *messages: dict[str, Any], auth: str | None = f"Bearer {TOKEN}", path: str = "45.0"
    ) -> httpx.Response:
        headers = {"Authorization": auth} if auth is not None else {}
        return await self.http.post(f"/cometd/{path}", json=list(messages), headers=headers)

    async def call(self, *messages: dict[str, Any]) -> list[dict[str, Any]]:
        response = await self.post(*messages)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("application/json")
        body: list[dict[str, Any]] = response.json()
        return body

    async def handshake(self) -> str:
        [reply] = await self.call(
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["websocket", "long-polling"],
                "id": "0",
            }
        )
        client_id: str = reply["clientId"]
        return client_id

    async def connected_client(self) -> str:
        client_id = await self.handshake()
        await self.call(connect(client_id, "1"))
        return client_id


def connect(client_id: str, message_id: str) -> dict[str, Any]:
    return {
        "channel": "/meta/connect",
        "clientId": client_id,
        "connectionType": "long-polling",
        "id": message_id,
    }


def subscribe(client_id: str, channel: str, replay: int | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "channel": "/meta/subscribe",
        "clientId": client_id,
        "subscription": channel,
        "id": "s",
    }
    if replay is not None:
        message["ext"] = {"replay": {channel: replay}}
    return message


def account_change(change_type: str = "CREATE", record_id: str = "001A") -> RecordChange:
    return RecordChange("Account", change_type, (record_id,), {"Name": "Acme"})


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    clock = FakeClock(1_714_156_685.0)
    log = ChangeEventLog(clock, retention_seconds=3600.0)
    app = web.Application()
    server = add_cometd_routes(
        app,
        log,
        authorize=lambda header: header == f"Bearer {TOKEN}",
        clock=clock,
        poll_timeout=0.5,
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as http:
        yield Endpoint(http, log, server, clock)
    await runner.cleanup()


async def test_handshake_reply_and_cookie(endpoint: Endpoint) -> None:
    response = await endpoint.post(
        {
            "channel": "/meta/handshake",
            "version": "1.0",
            "id": "0",
            "supportedConnectionTypes": ["websocket", "long-polling"],
        }
    )
    [reply] = response.json()
    assert reply == {
        "channel": "/meta/handshake",
        "id": "0",
        "successful": True,
        "clientId": reply["clientId"],
        "version": "1.0",
        "minimumVersion": "1.0",
        "supportedConnectionTypes": ["long-polling"],
        "ext": {"replay": True, "payload.format": True},
    }
    assert len(reply["clientId"]) == 27
    assert "BAYEUX_BROWSER" in response.cookies


async def test_handshake_without_long_polling_is_refused(endpoint: Endpoint) -> None:
    [reply] = await endpoint.call(
        {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["websocket"]}
    )
    assert reply["successful"] is False
    assert reply["error"].startswith("400::Invalid connection type")


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("36.0", "400::Unsupported API version. Only API versions '37.0' and later are supported"),
        ("latest", "400::API version in the URI is mandatory. URI format: '/cometd/NN.0'"),
    ],
)
async def test_bad_api_version(endpoint: Endpoint, path: str, error: str) -> None:
    response = await endpoint.post({"channel": "/meta/handshake", "id": "0"}, path=path)
    assert response.status_code == 400
    [reply] = response.json()
    assert reply["channel"] == "/meta/handshake"
    assert reply["error"].startswith(error)


async def test_any_version_from_37_is_served(endpoint: Endpoint) -> None:
    for version in ("37.0", "62.0"):
        response = await endpoint.post(
            {"channel": "/meta/handshake", "supportedConnectionTypes": ["long-polling"]},
            path=version,
        )
        assert response.json()[0]["successful"] is True


async def test_oversized_request_is_refused(endpoint: Endpoint) -> None:
    response = await endpoint.post({"channel": "/meta/handshake", "pad": "x" * 40_000})
    assert response.status_code == 413


async def test_first_connect_returns_advice_at_once(endpoint: Endpoint) -> None:
    endpoint.server.poll_timeout = 5.0
    client_id = await endpoint.handshake()
    started = time.monotonic()
    [reply] = await endpoint.call(connect(client_id, "1"))
    assert time.monotonic() - started < 2.5  # not held for the 5 s poll
    assert reply == {
        "channel": "/meta/connect",
        "id": "1",
        "clientId": client_id,
        "successful": True,
        "advice": {"interval": 0, "timeout": 110000, "reconnect": "retry"},
    }


async def test_later_connect_is_held_until_the_poll_timeout(endpoint: Endpoint) -> None:
    client_id = await endpoint.connected_client()
    started = time.monotonic()
    [reply] = await endpoint.call(connect(client_id, "2"))
    assert time.monotonic() - started >= 0.45
    assert reply == {
        "channel": "/meta/connect",
        "id": "2",
        "clientId": client_id,
        "successful": True,
    }


async def test_held_connect_returns_when_an_event_is_published(endpoint: Endpoint) -> None:
    endpoint.server.poll_timeout = 5.0
    client_id = await endpoint.connected_client()
    await endpoint.call(subscribe(client_id, "/data/AccountChangeEvent"))
    poll = asyncio.create_task(endpoint.call(connect(client_id, "2")))
    await asyncio.sleep(0.1)
    assert not poll.done()
    started = time.monotonic()
    endpoint.log.publish(account_change())
    event, reply = await poll
    assert time.monotonic() - started < 2.5  # not held for the 5 s poll
    assert event["channel"] == "/data/AccountChangeEvent"
    assert event["data"]["event"] == {"replayId": 1}
    assert event["data"]["payload"]["Name"] == "Acme"
    assert reply["id"] == "2"
    assert reply["successful"] is True


async def test_subscribe_replay_values(endpoint: Endpoint) -> None:
    for kind in ("CREATE", "UPDATE", "DELETE"):
        endpoint.log.publish(account_change(kind))
    client_id = await endpoint.connected_client()
    [reply] = await endpoint.call(subscribe(client_id, "/data/AccountChangeEvent", -2))
    assert reply == {
        "channel": "/meta/subscribe",
        "id": "s",
        "clientId": client_id,
        "subscription": "/data/AccountChangeEvent",
        "successful": True,
    }
    *events, _ = await endpoint.call(connect(client_id, "2"))
    assert [e["data"]["event"]["replayId"] for e in events] == [1, 2, 3]

    other = await endpoint.connected_client()
    await endpoint.call(subscribe(other, "/data/ChangeEvents", 1))
    *events, _ = await endpoint.call(connect(other, "2"))
    assert [(e["channel"], e["data"]["event"]["replayId"]) for e in events] == [
        ("/data/ChangeEvents", 2),
        ("/data/ChangeEvents", 3),
    ]


async def test_subscribe_without_replay_gets_new_events_only(endpoint: Endpoint) -> None:
    endpoint.log.publish(account_change())
    client_id = await endpoint.connected_client()
    await endpoint.call(subscribe(client_id, "/data/AccountChangeEvent"))
    endpoint.log.publish(account_change("UPDATE"))
    *events, _ = await endpoint.call(connect(client_id, "2"))
    assert [e["data"]["event"]["replayId"] for e in events] == [2]


async def test_invalid_and_expired_replay_ids(endpoint: Endpoint) -> None:
    endpoint.log.publish(account_change())
    client_id = await endpoint.connected_client()
    [reply] = await endpoint.call(subscribe(client_id, "/data/AccountChangeEvent", 7))
    assert reply["successful"] is False
    assert reply["subscription"] == "/data/AccountChangeEvent"
    assert reply["error"] == INVALID_REPLAY.format(7)
    endpoint.clock.now += 3601  # past retention; also past the idle limit
    client_id = await endpoint.connected_client()
    [reply] = await endpoint.call(subscribe(client_id, "/data/AccountChangeEvent", 1))
    assert reply["error"] == INVALID_REPLAY.format(1)


async def test_subscribe_channel_errors(endpoint: Endpoint) -> None:
    endpoint.log.select_entities(["Account"])
    client_id = await endpoint.connected_client()
    cases = {
        "/data/LeadChangeEvent": (
            "400::The channel you requested to subscribe to does not exist {/data/LeadChangeEvent}"
        ),
        "/topic/Accounts": (
            "400::The channel you requested to subscribe to does not exist {/topic/Accounts}"
        ),
        "data/AccountChangeEvent": "400::Channel subscriptions must start with a leading '/'",
        "": "400::Channel name not specified",
    }
    for channel, error in cases.items():
        [reply] = await endpoint.call(subscribe(client_id, channel))
        assert (reply["successful"], reply["error"]) == (False, error)


async def test_several_messages_in_one_request(endpoint: Endpoint) -> None:
    endpoint.log.publish(account_change())
    client_id = await endpoint.connected_client()
    replies = await endpoint.call(
        connect(client_id, "5"),
        subscribe(client_id, "/data/AccountChangeEvent", -2),
        {**subscribe(client_id, "/data/ContactChangeEvent"), "id": "6"},
    )
    event, *meta = replies
    assert event["data"]["event"]["replayId"] == 1
    assert sorted((m["channel"], m["id"], m["successful"]) for m in meta) == [
        ("/meta/connect", "5", True),
        ("/meta/subscribe", "6", True),
        ("/meta/subscribe", "s", True),
    ]


async def test_batches_are_capped_at_max_batch(endpoint: Endpoint) -> None:
    endpoint.server.max_batch = 50
    for _ in range(120):
        endpoint.log.publish(account_change())
    client_id = await endpoint.connected_client()
    await endpoint.call(subscribe(client_id, "/data/ChangeEvents", -2))
    sizes = []
    for n in range(3):
        replies = await endpoint.call(connect(client_id, str(n + 2)))
        sizes.append(len(replies) - 1)
    assert sizes == [50, 50, 20]
    assert endpoint.server.subscriptions_of(client_id) == {"/data/ChangeEvents": 120}


async def test_unsubscribe_and_disconnect(endpoint: Endpoint) -> None:
    client_id = await endpoint.connected_client()
    await endpoint.call(subscribe(client_id, "/data/AccountChangeEvent"))
    [reply] = await endpoint.call(
        {**subscribe(client_id, "/data/AccountChangeEvent"), "channel": "/meta/unsubscribe"}
    )
    assert reply["successful"] is True
    assert reply["subscription"] == "/data/AccountChangeEvent"
    assert endpoint.server.subscriptions_of(client_id) == {}
    [reply] = await endpoint.call({"channel": "/meta/disconnect", "clientId": client_id, "id": "9"})
    assert reply == {
        "channel": "/meta/disconnect",
        "clientId": client_id,
        "id": "9",
        "successful": True,
    }
    assert client_id not in endpoint.server.client_ids


async def test_unknown_and_idle_clients_must_handshake(endpoint: Endpoint) -> None:
    [reply] = await endpoint.call(connect("nosuchclient", "3"))
    assert reply["error"] == "403::Unknown client"
    assert reply["advice"] == {"reconnect": "handshake", "interval": 0}
    client_id = await endpoint.connected_client()
    endpoint.clock.now += 41
    [reply] = await endpoint.call(connect(client_id, "2"))
    assert (reply["successful"], reply["error"]) == (False, "403::Unknown client")


async def test_auth_failures(endpoint: Endpoint) -> None:
    [reply] = (
        await endpoint.post({"channel": "/meta/handshake", "id": "0"}, auth="Bearer wrong")
    ).json()
    assert reply["error"] == "403::Handshake denied"
    assert reply["ext"]["sfdc"] == {"failureReason": "401::Authentication invalid"}
    assert reply["advice"] == {"reconnect": "none"}
    client_id = await endpoint.connected_client()
    [reply] = (await endpoint.post(connect(client_id, "2"), auth="OAuth expired")).json()
    assert (reply["error"], reply["advice"]["reconnect"]) == ("401::Authentication invalid", "none")
    [reply] = (await endpoint.post(connect(client_id, "3"), auth=None)).json()
    assert reply["error"] == "401::Request requires authentication"


async def test_fault_unknown_client(endpoint: Endpoint) -> None:
    client_id = await endpoint.connected_client()
    endpoint.server.inject_fault("unknown_client")
    [reply] = await endpoint.call(connect(client_id, "2"))
    assert (reply["error"], reply["advice"]["reconnect"]) == ("403::Unknown client", "handshake")
    fresh = await endpoint.connected_client()  # the fault was used up
    assert fresh in endpoint.server.client_ids


async def test_fault_expire_sessions(endpoint: Endpoint) -> None:
    client_id = await endpoint.connected_client()
    endpoint.server.inject_fault("expire_sessions")
    [reply] = await endpoint.call(connect(client_id, "2"))
    assert (reply["error"], reply["advice"]["reconnect"]) == ("401::Authentication invalid", "none")
    [reply] = await endpoint.call(connect(client_id, "3"))
    assert reply["error"] == "403::Unknown client"


async def test_fault_drop_long_poll_keeps_events_for_the_next_connect(endpoint: Endpoint) -> None:
    client_id = await endpoint.connected_client()
    await endpoint.call(subscribe(client_id, "/data/AccountChangeEvent"))
    endpoint.log.publish(account_change())
    endpoint.server.inject_fault("drop_long_poll")
    with pytest.raises(httpx.TransportError):
        await endpoint.call(connect(client_id, "2"))
    event, _ = await endpoint.call(connect(client_id, "3"))
    assert event["data"]["event"]["replayId"] == 1


async def test_unknown_fault_kind_is_refused(endpoint: Endpoint) -> None:
    with pytest.raises(ValueError, match="unknown CometD fault"):
        endpoint.server.inject_fault("melt")


async def test_concurrent_client_limit(endpoint: Endpoint) -> None:
    endpoint.server.max_clients = 2
    await endpoint.handshake()
    await endpoint.handshake()
    [reply] = await endpoint.call(
        {"channel": "/meta/handshake", "supportedConnectionTypes": ["long-polling"], "id": "0"}
    )
    # Salesforce's words on the wire: a generic refusal, the reason in ext.sfdc.failureReason.
    assert reply == {
        "channel": "/meta/handshake",
        "id": "0",
        "successful": False,
        "error": "403::Handshake denied",
        "advice": {"reconnect": "none"},
        "ext": {
            "sfdc": {"failureReason": "403::Organization concurrent user limit exceeded"},
            "replay": True,
            "payload.format": True,
        },
    }
    assert len(endpoint.server.client_ids) == 2
