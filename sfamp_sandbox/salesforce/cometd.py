"""CometD (Bayeux, long-polling only) endpoint of the Salesforce sandbox, as Salesforce runs it.

``POST /cometd/{version}`` answers handshake, connect, subscribe (with the replay extension),
unsubscribe and disconnect, with Salesforce's advice values and ``code::message`` error
strings. A refused handshake (invalid session, the org's concurrent client limit) answers
``403::Handshake denied`` with the reason in ``ext.sfdc.failureReason``, as Salesforce does.
Events come from a :class:`~sfamp_sandbox.salesforce.cdc.ChangeEventLog`; a held
``/meta/connect`` returns as soon as the log publishes something a subscription wants.

Each delivered event is the pre-serialized ``data`` bytes of the log wrapped with the
subscribed channel, so a batch costs one concatenation, not one JSON encoding per event.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from sfamp_sandbox.salesforce.cdc import ChangeEventLog, InvalidReplayIdError

Message = dict[str, Any]

RETRY_ADVICE = {"interval": 0, "timeout": 110000, "reconnect": "retry"}
HANDSHAKE_ADVICE = {"reconnect": "handshake", "interval": 0}
NO_RECONNECT_ADVICE = {"reconnect": "none", "interval": 0}
UNKNOWN_CLIENT = "403::Unknown client"
AUTHENTICATION_INVALID = "401::Authentication invalid"
AUTHENTICATION_REQUIRED = "401::Request requires authentication"
HANDSHAKE_DENIED = "403::Handshake denied"
CONCURRENT_CLIENT_LIMIT = "403::Organization concurrent user limit exceeded"
HANDSHAKE_EXT = {"replay": True, "payload.format": True}
MAX_REQUEST_BYTES = 32_768
MIN_API_VERSION = 37.0
FAULT_KINDS = frozenset({"drop_long_poll", "unknown_client", "expire_sessions"})
COOKIE_NAME = "BAYEUX_BROWSER"


class _DropConnection(Exception):
    """Raised inside a request to make it end without an HTTP response."""


@dataclass(slots=True)
class Subscription:
    channel: str
    channel_json: bytes
    entity_name: str
    cursor: int


@dataclass(slots=True)
class BayeuxClient:
    client_id: str
    last_seen: float
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    connected: bool = False
    polling: bool = False
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


def new_client_id() -> str:
    """A 27-character base-36 id, the shape Salesforce hands out."""
    return "".join(secrets.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(27))


def reply_to(message: Message, **fields: Any) -> Message:
    """A reply echoing the message's channel, id, clientId and subscription."""
    reply: Message = {"channel": message.get("channel")}
    for key in ("id", "clientId", "subscription"):
        if key in message:
            reply[key] = message[key]
    reply.update(fields)
    return reply


def failure(message: Message, error: str, advice: Message | None = None) -> Message:
    reply = reply_to(message, successful=False, error=error)
    if advice is not None:
        reply["advice"] = advice
    return reply


def handshake_denied(message: Message, reason: str) -> Message:
    """A refused handshake as Salesforce words it: the generic ``403::Handshake denied`` in
    ``error``, the actual reason in ``ext.sfdc.failureReason``, next to the extensions every
    handshake answer advertises, and advice not to reconnect."""
    reply = failure(message, HANDSHAKE_DENIED, {"reconnect": "none"})
    reply["ext"] = {"sfdc": {"failureReason": reason}, **HANDSHAKE_EXT}
    return reply


def version_error(version: str) -> str | None:
    """The Salesforce error for an unusable ``/cometd/{version}``, or None when it is fine."""
    try:
        number = float(version)
    except ValueError:
        return "400::API version in the URI is mandatory. URI format: '/cometd/NN.0'"
    if number < MIN_API_VERSION:
        return (
            "400::Unsupported API version. Only API versions '37.0' and later are supported "
            "by this endpoint."
        )
    return None


def parse_messages(body: bytes) -> list[Message] | None:
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    messages = decoded if isinstance(decoded, list) else [decoded]
    if not messages or not all(isinstance(m, dict) and "channel" in m for m in messages):
        return None
    return messages


def json_response(parts: list[bytes], status: int = 200) -> web.Response:
    return web.Response(
        body=b"[" + b",".join(parts) + b"]", status=status, content_type="application/json"
    )


class CometdServer:
    """The Bayeux state of one org: clients, their subscriptions and cursors, and faults.

    ``poll_timeout`` is how long a ``/meta/connect`` is held (seconds; Salesforce: 110),
    ``client_timeout`` how long a client may stay away between connects before it is
    forgotten (seconds of emulator time; Salesforce: 40), ``max_batch`` how many events one
    connect response carries at most, ``max_clients`` how many sessions may exist at once
    (Salesforce: 1,000 in Enterprise Edition).
    """

    def __init__(
        self,
        log: ChangeEventLog,
        *,
        authorize: Callable[[str | None], bool],
        clock: Callable[[], float],
        poll_timeout: float = 110.0,
        client_timeout: float = 40.0,
        max_batch: int = 1000,
        max_clients: int = 1000,
    ) -> None:
        self.log = log
        self.max_clients = max_clients
        self.poll_timeout = poll_timeout
        self.client_timeout = client_timeout
        self.max_batch = max_batch
        self._authorize = authorize
        self._clock = clock
        self._clients: dict[str, BayeuxClient] = {}
        self._expired: set[str] = set()
        self._faults: dict[str, int] = dict.fromkeys(FAULT_KINDS, 0)
        self._closing = False
        log.add_listener(self._wake_all)

    # -- control ------------------------------------------------------------------------------

    def inject_fault(self, kind: str, count: int = 1) -> None:
        """Script failures: ``drop_long_poll`` (the next N held connects end with the connection
        dropped), ``unknown_client`` (the next N requests get 403::Unknown client and lose their
        session), ``expire_sessions`` (every current session answers 401::Authentication
        invalid once, then is unknown; ``count`` is ignored)."""
        if kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown CometD fault {kind!r}; expected one of {sorted(FAULT_KINDS)}"
            )
        if kind == "expire_sessions":
            self._expired = set(self._clients)
            self._forget(list(self._clients))
            return
        self._faults[kind] += count

    def clear_faults(self) -> None:
        """Forget the scripted failures not used yet."""
        self._faults = dict.fromkeys(FAULT_KINDS, 0)

    @property
    def pending_faults(self) -> dict[str, int]:
        """How many injected faults of each kind are still to happen."""
        return {kind: count for kind, count in self._faults.items() if kind != "expire_sessions"}

    @property
    def client_ids(self) -> list[str]:
        return list(self._clients)

    def subscriptions_of(self, client_id: str) -> dict[str, int]:
        """channel -> cursor (last replay id delivered or skipped) of one client."""
        client = self._clients[client_id]
        return {sub.channel: sub.cursor for sub in client.subscriptions.values()}

    async def close(self) -> None:
        """Release every held connect (called on application shutdown)."""
        self._closing = True
        self._wake_all()

    def _wake_all(self) -> None:
        for client in self._clients.values():
            if client.polling:
                client.wakeup.set()

    def _forget(self, client_ids: list[str]) -> None:
        for client_id in client_ids:
            client = self._clients.pop(client_id, None)
            if client is not None:
                client.wakeup.set()

    def _expire_idle(self, now: float) -> None:
        idle = [
            c.client_id
            for c in self._clients.values()
            if not c.polling and now - c.last_seen > self.client_timeout
        ]
        self._forget(idle)

    # -- HTTP ---------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if len(body) > MAX_REQUEST_BYTES:
            return web.Response(status=413, text="Maximum Request Size Exceeded")
        messages = parse_messages(body)
        if messages is None:
            return json_response([orjson.dumps(failure({}, "400::Invalid request"))], 400)
        problem = version_error(request.match_info.get("version", ""))
        if problem is not None:
            return json_response([orjson.dumps(failure(m, problem)) for m in messages], 400)
        try:
            parts = await self._process(messages, request.headers.get("Authorization"))
        except _DropConnection:
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPServiceUnavailable() from None  # never reaches the client
        response = json_response(parts)
        if COOKIE_NAME not in request.cookies:
            response.set_cookie(COOKIE_NAME, secrets.token_hex(16), httponly=True)
        return response

    async def _process(self, messages: list[Message], authorization: str | None) -> list[bytes]:
        self._expire_idle(self._clock())
        if authorization is None or not self._authorize(authorization):
            error = AUTHENTICATION_REQUIRED if authorization is None else AUTHENTICATION_INVALID
            return [orjson.dumps(self._auth_failure(m, error)) for m in messages]
        if self._faults["unknown_client"] and any("clientId" in m for m in messages):
            self._faults["unknown_client"] -= 1
            self._forget([str(m["clientId"]) for m in messages if "clientId" in m])
        replies: list[Message | None] = [None] * len(messages)
        connect_at: int | None = None
        for index, message in enumerate(messages):
            if message.get("channel") == "/meta/connect" and connect_at is None:
                connect_at = index  # held last, so piggybacked subscribes take effect first
            else:
                replies[index] = self._dispatch(message)
        events: list[bytes] = []
        if connect_at is not None:
            events, replies[connect_at] = await self._connect(messages[connect_at])
        return events + [orjson.dumps(r) for r in replies if r is not None]

    @staticmethod
    def _auth_failure(message: Message, error: str) -> Message:
        if message.get("channel") == "/meta/handshake":
            return handshake_denied(message, error)
        return failure(message, error, NO_RECONNECT_ADVICE)

    # -- meta channels ------------------------------------------------------------------------

    def _dispatch(self, message: Message) -> Message:
        channel = message.get("channel")
        if channel == "/meta/handshake":
            return self._handshake(message)
        client = self._known_client(message)
        if not isinstance(client, BayeuxClient):
            return client
        client.last_seen = self._clock()
        if channel == "/meta/subscribe":
            return self._subscribe(client, message)
        if channel == "/meta/unsubscribe":
            client.subscriptions.pop(str(message.get("subscription")), None)
            return reply_to(message, successful=True)
        if channel == "/meta/disconnect":
            self._forget([client.client_id])
            return reply_to(message, successful=True)
        if isinstance(channel, str) and channel.startswith("/meta/"):
            return failure(message, f"400::Unknown meta channel {channel}")
        return failure(message, "403::Publish denied")

    def _known_client(self, message: Message) -> BayeuxClient | Message:
        client_id = str(message.get("clientId"))
        client = self._clients.get(client_id)
        if client is not None:
            return client
        return self._gone(message)

    def _gone(self, message: Message) -> Message:
        """The failure for a client id this server does not (or no longer) know."""
        client_id = str(message.get("clientId"))
        if client_id in self._expired:
            self._expired.discard(client_id)
            return failure(message, AUTHENTICATION_INVALID, NO_RECONNECT_ADVICE)
        return failure(message, UNKNOWN_CLIENT, HANDSHAKE_ADVICE)

    def _handshake(self, message: Message) -> Message:
        offered = message.get("supportedConnectionTypes") or []
        if "long-polling" not in offered:
            return failure(message, f"400::Invalid connection type {offered}")
        if len(self._clients) >= self.max_clients:
            return handshake_denied(message, CONCURRENT_CLIENT_LIMIT)
        client = BayeuxClient(new_client_id(), last_seen=self._clock())
        self._clients[client.client_id] = client
        return reply_to(
            message,
            successful=True,
            clientId=client.client_id,
            version="1.0",
            minimumVersion="1.0",
            supportedConnectionTypes=["long-polling"],
            ext=dict(HANDSHAKE_EXT),
        )

    def _subscribe(self, client: BayeuxClient, message: Message) -> Message:
        channel = message.get("subscription")
        if not isinstance(channel, str) or not channel:
            return failure(message, "400::Channel name not specified")
        if not channel.startswith("/"):
            return failure(message, "400::Channel subscriptions must start with a leading '/'")
        try:
            entity = self.log.channel_filter(channel)
        except KeyError:
            return failure(
                message,
                f"400::The channel you requested to subscribe to does not exist {{{channel}}}",
            )
        ext = message.get("ext")
        replay = ext.get("replay") if isinstance(ext, dict) else None
        replay_from = replay.get(channel, -1) if isinstance(replay, dict) else -1
        try:
            if isinstance(replay_from, bool) or not isinstance(replay_from, int):
                raise InvalidReplayIdError(replay_from)
            cursor = self.log.resolve_replay(replay_from)
        except InvalidReplayIdError as exc:
            return failure(message, f"400::{exc}")
        client.subscriptions[channel] = Subscription(channel, orjson.dumps(channel), entity, cursor)
        return reply_to(message, successful=True)

    async def _connect(self, message: Message) -> tuple[list[bytes], Message]:
        client = self._known_client(message)
        if not isinstance(client, BayeuxClient):
            return [], client
        if message.get("connectionType", "long-polling") != "long-polling":
            return [], failure(message, f"400::Invalid connection type {message['connectionType']}")
        if not client.connected:
            client.connected = True
            client.last_seen = self._clock()
            return [], reply_to(message, successful=True, advice=RETRY_ADVICE)
        if self._faults["drop_long_poll"]:
            self._faults["drop_long_poll"] -= 1
            raise _DropConnection
        events = await self._poll(client)
        if self._clients.get(client.client_id) is not client:
            return [], self._gone(message)  # forgotten while held
        client.last_seen = self._clock()
        return events, reply_to(message, successful=True)

    async def _poll(self, client: BayeuxClient) -> list[bytes]:
        client.wakeup.clear()
        events = self._collect(client)
        if events or self._closing:
            return events
        client.polling = True
        try:
            async with asyncio.timeout(self.poll_timeout):
                await client.wakeup.wait()
        except TimeoutError:
            pass
        finally:
            client.polling = False
        return self._collect(client)

    def _collect(self, client: BayeuxClient) -> list[bytes]:
        """Take up to max_batch new events over all subscriptions, in replay id order."""
        found: list[tuple[int, bytes]] = []
        for sub in client.subscriptions.values():
            events, sub.cursor = self.log.read_after(
                sub.cursor, sub.entity_name, self.max_batch - len(found)
            )
            found.extend(
                (e.replay_id, b'{"channel":%b,"data":%b}' % (sub.channel_json, e.data_json))
                for e in events
            )
        found.sort(key=lambda pair: pair[0])
        return [event for _, event in found]


def add_cometd_routes(
    app: web.Application,
    log: ChangeEventLog,
    *,
    authorize: Callable[[str | None], bool],
    clock: Callable[[], float],
    poll_timeout: float = 110.0,
    client_timeout: float = 40.0,
    max_batch: int = 1000,
    max_clients: int = 1000,
) -> CometdServer:
    """Serve ``POST /cometd/{version}`` on ``app``; returns the server for faults and tuning.

    ``authorize`` receives the raw Authorization header value (``Bearer <token>`` or
    ``OAuth <token>``) and says whether the session is valid.
    """
    server = CometdServer(
        log,
        authorize=authorize,
        clock=clock,
        poll_timeout=poll_timeout,
        client_timeout=client_timeout,
        max_batch=max_batch,
        max_clients=max_clients,
    )
    for path in ("/cometd/{version}", "/cometd/{version}/", "/cometd"):
        app.router.add_post(path, server.handle)

    async def release_polls(_: web.Application) -> None:
        await server.close()

    app.on_shutdown.append(release_polls)
    return server
