"""Change Data Capture over CometD with aiosfstream-ng, replaying only from durable marks.

aiosfstream's default stores a replay id as soon as a message is received; if
the process dies before the event reaches Kafka, that event is skipped on
restart. Here the storage policy is MANUAL and the storage answers only with
marks the caller confirmed after Kafka acknowledged the events (``advance``),
so every reconnect, internal or after a restart, replays from a durable point.

Salesforce refuses a CometD handshake with a generic ``403::Handshake denied``
and puts the reason in ``ext.sfdc.failureReason`` (an invalid session, the
org's concurrent client limit, the daily event limit). The reason is kept in
the translated error, so it reaches the log line and ``/status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from types import TracebackType
from typing import Any

import orjson
from aiocometd_ng.constants import TransportState
from aiocometd_ng.exceptions import AiocometdException
from aiosfstream_ng.auth import AuthenticatorBase
from aiosfstream_ng.client import Client, ReplayMarkerStoragePolicy
from aiosfstream_ng.exceptions import (
    AiosfstreamException,
    AuthenticationError,
    ServerError,
)
from aiosfstream_ng.replay import ReplayMarker, ReplayMarkerStorage

from pipeline.errors import (
    ReplayIdExpiredError,
    SalesforceAuthError,
    SalesforceError,
    SalesforceUnavailableError,
    SessionExpiredError,
)
from pipeline.http_failures import describe_connection_failure
from pipeline.salesforce.auth import SalesforceAuth, SalesforceToken
from pipeline.salesforce.channels import LATEST
from pipeline.salesforce.text import read_json

_INVALID_REPLAY = re.compile(r"replayId \{?(-?\d+)\}? you provided was invalid", re.IGNORECASE)


class _QuietCancelledPoll(logging.Filter):
    """aiocometd logs a cancelled long poll, which every close cancels, as an ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (
            isinstance(exc, asyncio.CancelledError) and "_connect_done" in record.getMessage()
        )


logging.getLogger("asyncio").addFilter(_QuietCancelledPoll())


class DurableReplayStorage(ReplayMarkerStorage):
    """Answers subscribe requests with the last replay id Kafka holds, per channel."""

    def __init__(self, marks: dict[str, int], *, default: int = LATEST) -> None:
        super().__init__()
        self.marks = dict(marks)
        self.default = default

    def advance(self, channel: str, replay_id: int) -> None:
        """Kafka now holds every event of ``channel`` up to ``replay_id``."""
        self.marks[channel] = replay_id

    def restart_from(self, channel: str, replay_id: int) -> None:
        self.marks[channel] = replay_id

    async def get_replay_marker(self, subscription: str) -> ReplayMarker | None:
        return ReplayMarker(date="", replay_id=self.marks.get(subscription, self.default))

    async def set_replay_marker(self, subscription: str, replay_marker: ReplayMarker) -> None:
        """Unused under the MANUAL policy: marks move only through :meth:`advance`."""


class _VersionedClient(Client):
    api_version = "62.0"

    def get_cometd_url(self, instance_url: str) -> str:  # type: ignore[override]
        # aiosfstream pins CometD 45.0; use the configured API version instead.
        return f"{instance_url.rstrip('/')}/cometd/{self.api_version}"

    async def _wait_connection_timeout(self, seconds: float) -> None:
        """Return once the transport has been reconnecting for ``seconds``.

        aiocometd-ng 0.5.6's own passes ``loop`` to ``asyncio.wait_for``, which Python
        3.10 removed: each reconnect (a long poll the server ended early, say) then
        raised a TypeError at once, which ``receive`` reported as a lost connection,
        and the task's error was logged at exit, one per reconnect.
        """
        transport = self._transport
        assert transport is not None
        while True:
            await transport.wait_for_state(TransportState.CONNECTING)
            try:
                # Not wait_for: cancelled as its wait ends, it returns instead of raising,
                # and this loop would go on after ``receive`` cancelled it.
                async with asyncio.timeout(seconds):
                    await transport.wait_for_state(TransportState.CONNECTED)
            except TimeoutError:
                return


def _loads(data: str | bytes) -> Any:
    return read_json(data)


def _dumps(data: Any) -> str:
    return orjson.dumps(data).decode()


class CdcSubscriber:
    """One CometD connection subscribed to several channels.

    ``async with CdcSubscriber(...) as cdc: async for batch in cdc.batches(): ...``
    """

    def __init__(
        self,
        authenticator: AuthenticatorBase,
        channels: Iterable[str],
        storage: DurableReplayStorage,
        *,
        api_version: str = "v62.0",
        connection_timeout: float = 30.0,
        max_pending: int = 10_000,
    ) -> None:
        self.channels = list(dict.fromkeys(channels))
        self.storage = storage
        self.subscribed: set[str] = set()
        self._client = _VersionedClient(
            authenticator,
            replay=storage,
            replay_storage_policy=ReplayMarkerStoragePolicy.MANUAL,
            connection_timeout=connection_timeout,
            max_pending_count=max_pending,
            json_dumps=_dumps,
            json_loads=_loads,
        )
        self._client.api_version = api_version.lstrip("v")

    async def __aenter__(self) -> CdcSubscriber:
        try:
            with translate_cometd_errors(None):
                await self._client.open()
            for channel in self.channels:
                await self.subscribe(channel)
        except BaseException:
            await self.close()
            raise
        return self

    @property
    def is_open(self) -> bool:
        """The CometD connection is up (aiocometd reconnects it on its own while it can)."""
        return not self._client.closed

    def missing_subscriptions(self) -> set[str]:
        """Channels subscribed once that the connection no longer holds."""
        if self._client.closed:
            return set()
        return self.subscribed - set(self._client.subscriptions)

    async def subscribe(self, channel: str) -> None:
        with translate_cometd_errors(channel):
            await self._client.subscribe(channel)
        self.subscribed.add(channel)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            if not self._client.closed:
                # Closing a broken connection: nothing is left to save.
                with contextlib.suppress(AiosfstreamException, AiocometdException, OSError):
                    await self._client.close()
        finally:
            # A client whose open() failed or was cancelled still holds its HTTP session.
            await self._client._close_http_session()

    async def batches(self, max_batch: int = 2000) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield the messages waiting right now (at least one), in replay order."""
        while True:
            with translate_cometd_errors(None):
                batch = [await self._client.receive()]
                while self._client.has_pending_messages and len(batch) < max_batch:
                    batch.append(await self._client.receive())
            yield batch


@contextlib.contextmanager
def translate_cometd_errors(channel: str | None) -> Iterator[None]:
    """Turn aiosfstream/aiocometd exceptions into the project's error tree."""
    try:
        yield
    except AiosfstreamException as exc:
        raise _translate(exc, channel) from exc


def _translate(exc: AiosfstreamException, channel: str | None) -> SalesforceError:
    if isinstance(exc, AuthenticationError):
        if isinstance(exc.__cause__, SalesforceError):
            return exc.__cause__
        return SalesforceAuthError(f"Salesforce refused the streaming login: {exc}")
    if isinstance(exc, ServerError):
        text = str(exc.error or exc)
        reason = failure_reason(exc)
        if reason is not None:
            return _refused_handshake(reason, text)
        invalid = _INVALID_REPLAY.search(text)
        if invalid:
            subscription = channel or _subscription_of(exc) or "?"
            return ReplayIdExpiredError(
                f"Salesforce no longer retains replay id {invalid.group(1)} of {subscription}",
                channel=subscription,
                replay_id=int(invalid.group(1)),
            )
        if exc.error_code == 400 and "does not exist" in text:
            return SalesforceError(f"CDC channel refused: {text}")
        return SalesforceUnavailableError(f"CometD server error: {text}")
    return SalesforceUnavailableError(
        f"CometD connection problem: {describe_connection_failure(exc)}"
    )


def failure_reason(exc: ServerError) -> str | None:
    """Salesforce's own reason for a refusal (``ext.sfdc.failureReason``), if it gave one."""
    response = exc.response if isinstance(exc.response, dict) else {}
    ext = response.get("ext")
    sfdc = ext.get("sfdc") if isinstance(ext, dict) else None
    reason = sfdc.get("failureReason") if isinstance(sfdc, dict) else None
    return str(reason) if reason else None


def _refused_handshake(reason: str, error: str) -> SalesforceError:
    message = f"Salesforce refused the CometD handshake: {reason} ({error})"
    code = reason.split("::", 1)[0]
    if code == "401":
        # The session was revoked or expired: logging in again can help.
        return SessionExpiredError(message, error_code=reason)
    # Limits (concurrent clients, daily events) clear by themselves as clients leave or
    # the day rolls over; the reason says which one so an operator can act sooner.
    return SalesforceUnavailableError(message, error_code=reason)


def _subscription_of(exc: ServerError) -> str | None:
    response = exc.response or {}
    return str(response.get("subscription") or "") or None


class StreamingAuthenticator(AuthenticatorBase):
    """aiosfstream's authenticator protocol on top of :class:`SalesforceAuth`.

    The CometD transport calls :meth:`authenticate` once when it opens and again
    after a ``401::Authentication invalid``; the second time it must not hand out
    the token the server just refused, so it refreshes past the one it used.
    """

    def __init__(self, auth: SalesforceAuth) -> None:
        super().__init__()
        self._auth = auth
        self._used: SalesforceToken | None = None

    async def authenticate(self) -> None:
        try:
            if self._used is None:
                token = await self._auth.token()
            else:
                token = await self._auth.refresh(self._used)
        except SalesforceError as exc:
            # cdc.translate_cometd_errors unwraps the cause back into the error tree.
            raise AuthenticationError(str(exc)) from exc
        self._used = token
        self.access_token = token.access_token
        self.token_type = "Bearer"  # noqa: S105 - the scheme name
        self.instance_url = token.instance_url
        self.id = token.identity_url
        self.issued_at = str(token.issued_at_ms)

    async def _authenticate(self) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError("authenticate() logs in through SalesforceAuth")

    def __repr__(self) -> str:
        return f"StreamingAuthenticator(login_url={self._auth.settings.login_url!r})"
