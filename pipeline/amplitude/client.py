"""The Group Identify client: ``GroupUpdate``s in, a ``DeliveryReport`` out.

Two transports (``SFAMP_AMPLITUDE__TRANSPORT``): ``groupidentify`` posts
form-encoded identifications to ``/groupidentify``; ``httpapi`` posts
``$groupidentify`` events to ``/2/httpapi`` (see :mod:`pipeline.amplitude.httpapi`).
Requests in flight follow a :class:`ConcurrencyController` shared by every send
of the client, with ``max_concurrency`` as its ceiling.

Where requests go: ``settings.base_url`` when set, else the region's ingestion
host (US ``https://api2.amplitude.com``, EU ``https://api.eu.amplitude.com``).
A base URL replaces the host entirely, region included: for the sandbox's EU
project use ``SFAMP_AMPLITUDE__BASE_URL=http://127.0.0.1:8420/eu``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import TracebackType

import httpx
import orjson
import structlog

from pipeline.amplitude.backoff import RetryPolicy, parse_retry_after
from pipeline.amplitude.concurrency import ConcurrencyController
from pipeline.amplitude.delivery import (
    REFUSED_KEY,
    Answer,
    Clock,
    Delivery,
    Random,
    RequestSlots,
    Sleep,
    Timing,
)
from pipeline.amplitude.httpapi import EventWire, event_prefix, plan_events
from pipeline.amplitude.planning import (
    MAX_STRING_CHARS,
    Chunk,
    ChunkLimits,
    cut_properties,
    form_prefix,
    plan_chunks,
)
from pipeline.amplitude.report import DeliveryPlan, DeliveryReport, KeyCheck
from pipeline.amplitude.wire import FormWire, Wire
from pipeline.config.settings import AmplitudeSettings
from pipeline.errors import (
    AmplitudeAuthError,
    AmplitudeError,
    AmplitudeUnavailableError,
    ConfigError,
)
from pipeline.http_failures import describe_transport_failure
from pipeline.tls import verified_context
from pipeline.transform.group_update import GroupUpdate

REGION_BASE_URLS = {
    "us": "https://api2.amplitude.com",
    "eu": "https://api.eu.amplitude.com",
}
# The Dashboard REST API's hosts, where an API key and secret key are checked as a pair
# by HTTP Basic auth (https://amplitude.com/docs/apis/analytics/dashboard-rest; EU
# projects: https://amplitude.com/docs/apis/authentication).
REGION_REST_URLS = {
    "us": "https://amplitude.com",
    "eu": "https://analytics.eu.amplitude.com",
}
USER_SEARCH_PATH = "/api/2/usersearch"
GROUP_IDENTIFY_PATH = "/groupidentify"
HTTP_API_PATH = "/2/httpapi"
MAX_CONNECT_SECONDS = 10.0
# Amplitude's answers are short tokens or small JSON; read no more than this.
MAX_ANSWER_BYTES = 64_000
# Requests in flight at the start, before any answer says more are welcome.
INITIAL_CONCURRENCY = 4
log = structlog.get_logger(__name__)


def resolve_base_url(settings: AmplitudeSettings) -> str:
    return (settings.base_url or REGION_BASE_URLS[settings.region]).rstrip("/")


def resolve_rest_url(settings: AmplitudeSettings) -> str:
    """The Dashboard REST API's host: the base URL when set (the sandbox serves both)."""
    return (settings.base_url or REGION_REST_URLS[settings.region]).rstrip("/")


class AmplitudeClient:
    """Sends group updates to Amplitude; use as ``async with``.

    ``on_answer`` is called with every :class:`Answer` :meth:`send` gets, as it comes
    (``label``: the HTTP status, "200", "503", or "timeout" / "connection_error" when
    none came). It sees the answers of a send that fails in the end too (a refused
    key, the retry deadline), which its report cannot carry: the service counts them
    in ``sfamp_amplitude_requests_total``.

    ``transport``, ``sleep``, ``clock`` and ``jitter`` (numbers in [0, 1)) exist
    for tests: an ``httpx.MockTransport`` for unit-level HTTP, and a fake sleep
    so that long backoffs (15 s and more after a 429) take no real time.
    """

    def __init__(
        self,
        settings: AmplitudeSettings,
        *,
        limits: ChunkLimits | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        jitter: Random = random.random,
        on_answer: Callable[[Answer], None] | None = None,
    ) -> None:
        self.base_url = resolve_base_url(settings)
        self.rest_url = resolve_rest_url(settings)
        self._on_answer = on_answer
        self._answered = False  # any HTTP answer since the start (see Delivery)
        self._api_key = settings.api_key.get_secret_value() if settings.api_key else None
        self._limits = limits or ChunkLimits(
            property_keys_per_request=settings.property_limit_scope == "request"
        )
        self.transport = settings.transport
        self.concurrency = ConcurrencyController(
            settings.max_concurrency,
            initial=INITIAL_CONCURRENCY,
            slow_seconds=settings.slow_answer_seconds,
        )
        self.slots = RequestSlots(self.concurrency)
        self._policy = RetryPolicy(
            min_429_wait_seconds=settings.min_429_wait_seconds,
            deadline_seconds=settings.retry_deadline_seconds,
        )
        self._timing = Timing(sleep, clock, jitter)
        timeout = httpx.Timeout(
            settings.timeout_seconds, connect=min(MAX_CONNECT_SECONDS, settings.timeout_seconds)
        )
        pool = httpx.Limits(
            max_connections=settings.max_concurrency,
            max_keepalive_connections=settings.max_concurrency,
        )
        self._http = httpx.AsyncClient(
            timeout=timeout, limits=pool, transport=transport, verify=verified_context()
        )
        self._cuts_logged: set[tuple[str, str]] = set()  # log each cut property once

    @property
    def group_identify_url(self) -> str:
        return self.base_url + GROUP_IDENTIFY_PATH

    @property
    def url(self) -> str:
        """Where ``send`` posts: ``/groupidentify`` or ``/2/httpapi``."""
        path = HTTP_API_PATH if self.transport == "httpapi" else GROUP_IDENTIFY_PATH
        return self.base_url + path

    def _wire(self, api_key: str) -> Wire:
        if self.transport == "httpapi":
            return EventWire(self.url, event_prefix(api_key))
        return FormWire(self.url, form_prefix(api_key))

    def _plan_chunks(self, updates: list[GroupUpdate], wire: Wire) -> list[Chunk]:
        if isinstance(wire, EventWire):
            return plan_events(updates, len(wire.prefix))
        assert isinstance(wire, FormWire)
        return plan_chunks(updates, len(wire.prefix), self._limits)

    def plan(self, updates: Iterable[GroupUpdate]) -> DeliveryPlan:
        """The requests ``send`` would start with, measured exactly; sends nothing.

        Without a configured API key the sizes assume an empty one.
        """
        listed = list(updates)
        wire = self._wire(self._api_key or "")
        chunks = self._plan_chunks(listed, wire)
        return DeliveryPlan.from_chunks(self.url, chunks, _skipped(listed, chunks))

    async def send(self, updates: Iterable[GroupUpdate]) -> DeliveryReport:
        """Deliver every update, or raise AmplitudeAuthError / AmplitudeUnavailableError.

        Pass at most one update per group (coalesced): chunks go out concurrently,
        so two updates of one group in one call have no guaranteed order.
        """
        listed = list(updates)
        wire = self._wire(self._require_key())
        chunks = self._plan_chunks(listed, wire)
        headers = {"Content-Type": wire.content_type}

        async def post(body: bytes) -> Answer:
            answer = await self._post(wire.url, body, headers)
            if self._on_answer is not None:
                self._on_answer(answer)
            return answer

        delivery = Delivery(
            post, wire, self._policy, self._timing, self.slots, self._never_answered
        )
        try:
            report = await delivery.run(chunks)
        except AmplitudeError as exc:
            exc.attempts = delivery.report  # what it did before giving up
            raise
        report.skipped = _skipped(listed, chunks)
        report.truncated = cut_properties(chunks)
        self._log_cuts(report)
        return report

    def _log_cuts(self, report: DeliveryReport) -> None:
        """Say once per property that Amplitude would have cut its values anyway."""
        for group_type, prop in report.truncated.keys() - self._cuts_logged:
            self._cuts_logged.add((group_type, prop))
            log.warning(
                "amplitude_value_truncated",
                group_type=group_type,
                property=prop,
                max_chars=MAX_STRING_CHARS,
                detail="Amplitude keeps only this many characters of a string; sent cut",
            )

    async def verify_api_key(self) -> KeyCheck:
        """Check that Amplitude accepts the API key, without changing any data.

        Amplitude has no read endpoint for an API key alone, so this posts to
        ``/2/httpapi`` one event that lacks ``event_type``: an accepted key gets
        400 "Request missing required field" (nothing ingested), a refused key
        gets 400 "Invalid API key: ..." and raises AmplitudeAuthError. This relies
        on Amplitude checking the key before the events, which is how its
        servers have been seen to answer but is not documented.
        """
        url = self.base_url + HTTP_API_PATH
        payload = {"api_key": self._require_key(), "events": [{"user_id": "sfamp-key-check"}]}
        answer = await self._post(url, orjson.dumps(payload), {"Content-Type": "application/json"})
        if answer.status is None:
            raise AmplitudeUnavailableError(
                f"Amplitude did not answer ({answer.reason or answer.failure})"
            )
        if answer.status == 400 and "invalid api key" in answer.text.lower():
            raise AmplitudeAuthError(REFUSED_KEY)
        if answer.status >= 500 or answer.status == 429:
            raise AmplitudeUnavailableError(f"Amplitude answered {answer.status}")
        accepted = answer.status < 300 or "missing" in answer.text.lower()
        if not accepted:
            raise AmplitudeError(f"unexpected answer to the key check: {answer.status}")
        return KeyCheck(True, url, answer.status, answer.text.strip()[:200])

    async def verify_key_pair(self, secret_key: str) -> KeyCheck:
        """Check the API key and ``secret_key`` as a pair, reading nothing but a search.

        ``GET /api/2/usersearch`` with HTTP Basic auth (API key as the user, secret key
        as the password), which Amplitude answers 200 for a valid pair (Dashboard REST
        API, https://amplitude.com/docs/apis/analytics/dashboard-rest) and 401 for any
        other (seen, not documented); Segment's Amplitude destination checks keys so.
        Raises AmplitudeAuthError for a refused pair, AmplitudeUnavailableError when no
        answer comes or Amplitude answers 429 or 5xx.
        """
        url = self.rest_url + USER_SEARCH_PATH
        try:
            response = await self._http.get(
                url, params={"user": "sfamp-key-check"}, auth=(self._require_key(), secret_key)
            )
        except httpx.TransportError as exc:
            reason = describe_transport_failure(exc)
            raise AmplitudeUnavailableError(f"Amplitude did not answer ({reason})") from exc
        status = response.status_code
        if status in (401, 403):
            raise AmplitudeAuthError(
                f"Amplitude refused the API key and secret key as a pair ({status}): set "
                "SFAMP_AMPLITUDE__SECRET_KEY to the secret key of the API key's project"
            )
        if status == 429 or status >= 500:
            raise AmplitudeUnavailableError(f"Amplitude answered {status}")
        if status >= 300:
            raise AmplitudeError(f"unexpected answer to the key pair check: {status}")
        return KeyCheck(True, url, status, response.text.strip()[:200])

    def _never_answered(self) -> bool:
        """True until Amplitude gave any HTTP answer to this client."""
        return not self._answered

    def _require_key(self) -> str:
        if not self._api_key:
            raise ConfigError("no Amplitude API key: set SFAMP_AMPLITUDE__API_KEY")
        return self._api_key

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        try:
            async with self._http.stream("POST", url, content=body, headers=headers) as response:
                text = await _read_capped(response)
        except httpx.TimeoutException as exc:
            return Answer(None, failure="timeout", reason=describe_transport_failure(exc))
        except httpx.TransportError as exc:
            return Answer(None, failure="connection_error", reason=describe_transport_failure(exc))
        retry_after = parse_retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
        self._answered = True  # any HTTP answer (the start's key check's too)
        return Answer(response.status_code, text, retry_after)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AmplitudeClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def _read_capped(response: httpx.Response) -> str:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_ANSWER_BYTES:
            break
    return b"".join(chunks)[:MAX_ANSWER_BYTES].decode("utf-8", "replace")


def _skipped(updates: list[GroupUpdate], chunks: list[Chunk]) -> int:
    """Updates left out of the planned chunks: the empty ones (planning skips them)."""
    return len(updates) - sum(map(len, chunks))
