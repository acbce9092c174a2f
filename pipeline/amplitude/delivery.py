"""Deliver planned chunks: bounded concurrency, retries, 413 splits, 400 bisection.

Delivery semantics:
- 2xx: every identification of the chunk is delivered.
- 429, 5xx, timeouts, connection errors: the same chunk is sent again after a
  backoff, until the request's deadline; then AmplitudeUnavailableError. Only
  ``$set``/``$unset`` are sent, so a repeat of a request Amplitude had already
  applied (a 500 after apply, a lost answer) leaves the same state.
- 413: the chunk is split in half and both halves are sent.
- 400: Amplitude refuses a whole request for one bad identification, so the
  chunk is bisected until the bad identification stands alone; it is then
  reported as rejected with Amplitude's answer, and all others are delivered.
- 400 naming an invalid API key: AmplitudeAuthError at once; nothing can succeed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from pipeline.amplitude.backoff import RetryPolicy, backoff_delay, is_retriable, within_deadline
from pipeline.amplitude.planning import Chunk
from pipeline.amplitude.report import DeliveryReport, Rejection
from pipeline.errors import AmplitudeAuthError, AmplitudeError, AmplitudeUnavailableError

log = structlog.get_logger(__name__)

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

    @property
    def label(self) -> str:
        return str(self.status) if self.status is not None else str(self.failure)

    @property
    def retriable(self) -> bool:
        return self.status is None or is_retriable(self.status)


Post = Callable[[bytes], Awaitable[Answer]]


def is_invalid_api_key(answer: Answer) -> bool:
    """``invalid_api_key`` (group identify) or ``Invalid API key: ...`` (JSON APIs)."""
    text = answer.text.lower()
    return answer.status == 400 and ("invalid_api_key" in text or "invalid api key" in text)


@dataclass(slots=True)
class Timing:
    sleep: Sleep
    clock: Clock
    random: Random


class Delivery:
    """One ``send``: a fixed pool of workers drains a queue of chunks.

    Splits go back on the queue, so the queue never holds more than the planned
    chunks plus their halves, and at most ``concurrency`` requests are in flight.
    """

    def __init__(
        self, post: Post, prefix: bytes, policy: RetryPolicy, timing: Timing, concurrency: int
    ) -> None:
        self._post = post
        self._prefix = prefix
        self._policy = policy
        self._timing = timing
        self._concurrency = concurrency
        self._queue: asyncio.Queue[Chunk | None] = asyncio.Queue()
        self._pending = 0
        self.report = DeliveryReport()

    async def run(self, chunks: list[Chunk]) -> DeliveryReport:
        for chunk in chunks:
            self._enqueue(chunk)
        workers = min(self._concurrency, len(chunks))
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(self._work(workers))
        except BaseExceptionGroup as failures:
            error = _first_error(failures)
            if error is None:
                raise
            # The worker's own error, not the group, so callers can catch it by class.
            raise error from error.__cause__
        return self.report

    def _enqueue(self, chunk: Chunk) -> None:
        self._pending += 1
        self._queue.put_nowait(chunk)

    async def _work(self, workers: int) -> None:
        while (chunk := await self._queue.get()) is not None:
            for half in await self._deliver(chunk):
                self._enqueue(half)
            self._pending -= 1
            if self._pending == 0:
                for _ in range(workers):
                    self._queue.put_nowait(None)

    async def _deliver(self, chunk: Chunk) -> tuple[Chunk, ...]:
        """Send one chunk; return the halves to send instead, if it must be split."""
        answer = await self._send_with_retries(chunk)
        status = answer.status or 0
        if 200 <= status < 300:
            self.report.delivered += len(chunk)
            return ()
        if is_invalid_api_key(answer):
            raise AmplitudeAuthError(f"Amplitude refused the API key: {answer.text.strip()}")
        if status not in (400, 413):
            raise AmplitudeError(f"unexpected answer from Amplitude: {status} {answer.text}")
        if len(chunk) > 1:
            log.info("amplitude_split", status=status, identifications=len(chunk))
            return chunk.halves(len(self._prefix))
        reason = answer.text.strip()[:MAX_REASON_CHARS] or f"HTTP {status}"
        if status == 413:
            reason += (
                f" (this identification alone is {chunk.body_bytes} bytes form-encoded, "
                "with its strings already cut to 1,024 characters)"
            )
        update = chunk.items[0].update
        log.warning(
            "amplitude_rejected",
            group_type=update.group_type,
            group_value=update.group_value,
            status=status,
            reason=reason,
        )
        self.report.rejected.append(Rejection(update, reason, status))
        return ()

    async def _send_with_retries(self, chunk: Chunk) -> Answer:
        body = chunk.body(self._prefix)
        started = self._timing.clock()
        attempt = 0
        while True:
            answer = await self._post(body)
            self.report.requests += 1
            self.report.bytes_sent += len(body)
            self.report.statuses[answer.label] += 1
            if not answer.retriable:
                return answer
            attempt += 1
            delay = backoff_delay(
                self._policy,
                attempt,
                jitter=self._timing.random(),
                throttled=answer.status == 429,
                retry_after=answer.retry_after,
            )
            if not within_deadline(self._policy, started, self._timing.clock(), delay):
                raise AmplitudeUnavailableError(
                    f"Amplitude still answers {answer.label} after {attempt} tries; "
                    f"gave up at the {self._policy.deadline_seconds:g} s retry deadline"
                )
            log.warning("amplitude_retry", answer=answer.label, attempt=attempt, delay=delay)
            self.report.retries += 1
            await self._timing.sleep(delay)


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
