"""Deliver planned chunks: adaptive concurrency, retries, 413 splits, 400 bisection.

Delivery semantics (both transports, see :mod:`pipeline.amplitude.wire`):
- 2xx: every identification of the chunk is delivered.
- 429, 5xx, timeouts, connection errors: the same chunk is sent again after a
  backoff, until the request's deadline; then AmplitudeUnavailableError. Only
  ``$set``/``$unset`` are sent, so a repeat of a request Amplitude had already
  applied (a 500 after apply, a lost answer) leaves the same state.
- 413: the chunk is split in half and both halves are sent.
- 400: Amplitude refuses a whole request for one bad identification. When the
  answer names the bad events (HTTP V2), they are rejected with its reason and
  the rest is sent again; otherwise the chunk is bisected until the bad
  identification stands alone, which is then rejected with Amplitude's answer.
- 429 naming some events as throttled (HTTP V2): the others go again at once,
  the throttled ones after the backoff.
- 400 naming an invalid API key: AmplitudeAuthError at once; nothing can succeed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, NoReturn

import structlog

from pipeline.amplitude.backoff import RetryPolicy, backoff_delay, is_retriable, within_deadline
from pipeline.amplitude.concurrency import ConcurrencyController, Outcome
from pipeline.amplitude.planning import Chunk
from pipeline.amplitude.report import DeliveryReport, Rejection
from pipeline.amplitude.wire import Wire
from pipeline.errors import AmplitudeAuthError, AmplitudeError, AmplitudeUnavailableError
from pipeline.transform.group_update import GroupUpdate
from pipeline.wording import plural

log = structlog.get_logger(__name__)

# No HTTP answer at all since the client's start (connections refused or closed unanswered,
# a host that does not resolve) ends a send once it has tried this long, not at the deadline.
FIRST_CONTACT_SECONDS: Final = 30.0
# A send that must wait this long before its first request (a Retry-After an earlier
# answer gave still runs) says so: a flush retried after one gave up can wait minutes.
SAID_PAUSE_SECONDS: Final = 5.0
_PAUSED: Final = "Amplitude asked to wait (Retry-After); no request goes until then"

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
Random = Callable[[], float]
MAX_REASON_CHARS = 500


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP attempt: a status and body, or ``failure`` when no answer came."""

    status: int | None
    text: str = ""
    retry_after: float | None = None
    failure: str | None = None  # "timeout" or "connection_error"
    reason: str = ""  # why no answer came, in words ("connection refused")

    @property
    def label(self) -> str:
        return str(self.status) if self.status is not None else str(self.failure)

    @property
    def described(self) -> str:
        """What Amplitude did, for a message: "answers 503", "does not answer (...)"."""
        if self.status is not None:
            return f"answers {self.status}"
        return f"does not answer ({self.reason or self.failure})"

    @property
    def retriable(self) -> bool:
        return self.status is None or is_retriable(self.status)


Post = Callable[[bytes], Awaitable[Answer]]


# Amplitude's answer quotes the key it refused ("Invalid API key: <key>"): never
# repeat it, the message reaches logs and /status.
REFUSED_KEY = (
    "Amplitude refused the API key: check SFAMP_AMPLITUDE__API_KEY and that "
    "SFAMP_AMPLITUDE__REGION is the project's (us or eu)"
)


def is_invalid_api_key(answer: Answer) -> bool:
    """``invalid_api_key`` (group identify) or ``Invalid API key: ...`` (JSON APIs)."""
    text = answer.text.lower()
    return answer.status == 400 and ("invalid_api_key" in text or "invalid api key" in text)


@dataclass(slots=True)
class Timing:
    sleep: Sleep
    clock: Clock
    random: Random


class RequestSlots:
    """Requests in flight across every send of one client, kept at or under the level.

    Sends running at once (a backfill's batches) share it, so the controller's
    level bounds what Amplitude receives from the client, not what each send may
    start. A request waiting out its retry backoff keeps its slot. Freed slots go
    to the waiting sends in the order they first waited, so the send started first
    is served first (a backfill settles its batches in that order).
    """

    def __init__(self, control: ConcurrencyController) -> None:
        self.control = control
        self.in_flight = 0
        self.changed = asyncio.Event()  # set when a slot is given back or a chunk requeued

    def has_room(self) -> bool:
        return self.in_flight < self.control.level

    def take(self) -> None:
        self.in_flight += 1

    def give_back(self) -> None:
        self.in_flight -= 1
        self.changed.set()


class Delivery:
    """One ``send``: chunks wait in a queue and start while the client's slots have room.

    Splits and the parts of a chunk that must go again go back on the queue. The
    level is read before each start, so it follows the answers as they come.
    """

    def __init__(
        self,
        post: Post,
        wire: Wire,
        policy: RetryPolicy,
        timing: Timing,
        slots: RequestSlots,
        never_answered: Callable[[], bool] = lambda: False,
    ) -> None:
        self._post = post
        self._never_answered = never_answered
        self._wire = wire
        self._policy = policy
        self._timing = timing
        self._slots = slots
        self._control = slots.control
        self._waiting: deque[Chunk] = deque()
        self._in_flight = 0  # this send's requests among the client's
        self.report = DeliveryReport()

    async def run(self, chunks: list[Chunk]) -> DeliveryReport:
        self._waiting.extend(chunks)
        try:
            async with asyncio.TaskGroup() as group:
                await self._schedule(group)
        except BaseExceptionGroup as failures:
            error = _first_error(failures)
            if error is None:
                raise
            # The worker's own error, not the group, so callers can catch it by class.
            raise error from error.__cause__
        finally:
            # A request the group cancelled before it started (after another one failed)
            # never ran _one's finally: its slot is given back here, or the client's
            # later sends would wait for it forever.
            for _ in range(self._in_flight):
                self._slots.give_back()
            self._in_flight = 0
        return self.report

    async def _schedule(self, group: asyncio.TaskGroup) -> None:
        while self._waiting or self._in_flight:
            pause = self._control.pause_remaining(self._timing.clock())
            if pause > 0 and self._waiting and not self._in_flight:
                if pause >= SAID_PAUSE_SECONDS:  # a later send waits for an earlier one's
                    log.warning("amplitude_paused", seconds=round(pause, 1), why=_PAUSED)
                await self._timing.sleep(pause)
                continue
            while self._waiting and self._slots.has_room() and pause <= 0:
                self._slots.take()
                self._in_flight += 1
                group.create_task(self._one(self._waiting.popleft()))
            # Checked and cleared with no await between: a slot given back after the
            # check sets the event again, so no wake-up is lost.
            self._slots.changed.clear()
            await self._slots.changed.wait()

    async def _one(self, chunk: Chunk) -> None:
        try:
            self._waiting.extend(await self._deliver(chunk))
        finally:
            self._in_flight -= 1
            self._slots.give_back()

    def _requeue(self, chunk: Chunk) -> None:
        self._waiting.append(chunk)
        self._slots.changed.set()

    async def _deliver(self, chunk: Chunk) -> tuple[Chunk, ...]:
        """Send one chunk; return what to send instead (halves, or the events not refused)."""
        chunk, answer = await self._send_with_retries(chunk)
        status = answer.status or 0
        if 200 <= status < 300:
            self.report.delivered += len(chunk)
            return ()
        if is_invalid_api_key(answer):
            raise AmplitudeAuthError(REFUSED_KEY)
        if status not in (400, 413):
            raise AmplitudeError(f"unexpected answer from Amplitude: {status} {answer.text}")
        refused = self._wire.refused_items(chunk, answer.text) if status == 400 else {}
        if refused:
            for index, reason in sorted(refused.items()):
                self._reject(chunk.items[index].update, reason[:MAX_REASON_CHARS], status)
            rest = [i for i in range(len(chunk)) if i not in refused]
            return (self._wire.pick(chunk, rest),) if rest else ()
        if len(chunk) > 1:
            log.info("amplitude_split", status=status, identifications=len(chunk))
            return self._wire.halves(chunk)
        reason = answer.text.strip()[:MAX_REASON_CHARS] or f"HTTP {status}"
        if status == 413:
            reason += (
                f" (this identification alone is {chunk.body_bytes} bytes encoded, "
                "with its strings already cut to 1,024 characters)"
            )
        self._reject(chunk.items[0].update, reason, status)
        return ()

    def _reject(self, update: GroupUpdate, reason: str, status: int) -> None:
        log.warning(
            "amplitude_rejected",
            group_type=update.group_type,
            group_value=update.group_value,
            status=status,
            reason=reason,
        )
        self.report.rejected.append(Rejection(update, reason, status))

    async def _send_with_retries(self, chunk: Chunk) -> tuple[Chunk, Answer]:
        """The chunk finally answered (only its throttled part after a partial 429), and how."""
        body = self._wire.body(chunk)
        started = self._timing.clock()
        attempt = 0
        while True:
            sent_at = self._timing.clock()
            answer = await self._post(body)
            self._count(answer, len(body), sent_at)
            if not answer.retriable:
                return chunk, answer
            if answer.status == 429:
                narrowed = self._split_throttled(chunk, answer)
                if narrowed is not chunk:
                    chunk, body = narrowed, self._wire.body(narrowed)
            attempt += 1
            delay = backoff_delay(
                self._policy,
                attempt,
                jitter=self._timing.random(),
                throttled=answer.status == 429,
                retry_after=answer.retry_after,
            )
            waited = self._timing.clock() - started
            if answer.failure == "connection_error" and self._never_answered():
                if waited >= FIRST_CONTACT_SECONDS:
                    self._unreachable_since_the_start(answer, attempt, waited)
                # The last try comes at the end of that window, not a backoff past it.
                delay = min(delay, FIRST_CONTACT_SECONDS - waited)
            if not within_deadline(self._policy, started, self._timing.clock(), delay):
                raise AmplitudeUnavailableError(
                    f"Amplitude still {answer.described} after "
                    f"{plural(attempt, 'try', 'tries')} in {waited:.0f} s; gave up, as the next "
                    f"would come past the {self._policy.deadline_seconds:g} s retry deadline"
                )
            log.warning(
                "amplitude_retry",
                answer=answer.label,
                **({"reason": answer.reason} if answer.reason else {}),
                attempt=attempt,
                delay=delay,
            )
            self.report.retries += 1
            await self._timing.sleep(delay)

    def _unreachable_since_the_start(self, answer: Answer, attempt: int, waited: float) -> NoReturn:
        """Give up early on an Amplitude that never gave an HTTP answer since the client's
        start (connections refused or closed unanswered, a host that does not resolve): a
        wrong base URL or region, more likely than an outage; retrying to the deadline
        would only look like a hang."""
        raise AmplitudeUnavailableError(
            f"Amplitude at {self._wire.url} has not answered once since the start "
            f"({answer.reason or answer.failure}; {plural(attempt, 'try', 'tries')} in "
            f"{waited:.0f} s); check SFAMP_AMPLITUDE__BASE_URL and SFAMP_AMPLITUDE__REGION"
        )

    def _split_throttled(self, chunk: Chunk, answer: Answer) -> Chunk:
        """Send again at once what a 429 did not name; answers the part that must wait."""
        throttled = self._wire.throttled_items(chunk, answer.text)
        if not throttled or len(throttled) >= len(chunk):
            return chunk
        rest = [i for i in range(len(chunk)) if i not in throttled]
        self._requeue(self._wire.pick(chunk, rest))
        return self._wire.pick(chunk, sorted(throttled))

    def _count(self, answer: Answer, body_bytes: int, sent_at: float) -> None:
        self.report.requests += 1
        self.report.bytes_sent += body_bytes
        self.report.statuses[answer.label] += 1
        now = self._timing.clock()
        outcome = Outcome(answer.status, sent_at, now - sent_at, answer.retry_after)
        self.report.concurrency = self._control.record(outcome)


def _first_error(failures: BaseExceptionGroup[BaseException]) -> AmplitudeError | None:
    """The error to raise for a failed send: an auth error first, then any other."""
    leaves = list(_leaves(failures))
    for wanted in (AmplitudeAuthError, AmplitudeError):
        for leaf in leaves:
            if isinstance(leaf, wanted):
                return leaf
    return None


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
