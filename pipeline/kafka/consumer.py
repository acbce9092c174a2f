"""The changes consumer: deliver's member of the Kafka consumer group.

It owns the ``AIOKafkaConsumer`` of the deliver pump: building it from the
settings, joining the group by pattern, fetching, committing, rewinding and
stopping. aiokafka's exceptions become sfamp's (:mod:`pipeline.errors`) here,
so the runtime decides by class alone. Offsets are never committed
automatically: the pump commits after Amplitude has accepted a flush.

Group membership, which decides who may commit:

* While the pump works on what it fetched (a flush can take minutes of 429
  back-offs), :meth:`ChangesConsumer.held` pauses every partition and keeps
  polling, so the member never exceeds ``consumer_max_poll_interval_seconds``
  and keeps its partitions; nothing new is read until the work is done.
* :meth:`ChangesConsumer.fetch` also returns when the pump is asked to stop,
  even while the group is still being joined (aiokafka's poll waits for an
  assignment without a timeout).
* :meth:`ChangesConsumer.stop` leaves the group, so the next member gets the
  partitions at once instead of after the session timeout, and gives up
  joining rather than waiting for the broker to answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeAlias

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.client import ConnectionGroup
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.protocol.group import LeaveGroupRequest

from pipeline.config.settings import KafkaSettings
from pipeline.errors import KafkaError, KafkaUnavailableError
from pipeline.kafka.connection import (
    client_options,
    describe_failure,
    start_through_cancel,
    unavailable,
)

log = structlog.get_logger(__name__)

# aiokafka's own types, named for the runtime so that it never imports aiokafka.
Partition: TypeAlias = TopicPartition
Record: TypeAlias = ConsumerRecord[Any, Any]

# How long to wait between polls while partitions are held.
_HOLD_POLL_SECONDS = 0.5
# A LeaveGroup unanswered after this is left to the session timeout.
_LEAVE_SECONDS = 1.0
# Turns of the event loop aiokafka's fetcher task takes from a partition drained by
# getmany to its next fetch request on the wire: wake, plan the request, send it.
_FETCHER_TURNS = 3


class RebalanceHandler(Protocol):
    """What the pump does when the group moves partitions (called inside the rebalance)."""

    async def partitions_revoked(self, revoked: set[Partition]) -> None: ...

    async def partitions_assigned(self, assigned: set[Partition]) -> None: ...


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, handler: RebalanceHandler) -> None:
        self._handler = handler

    async def on_partitions_revoked(self, revoked: set[Partition]) -> None:
        await self._handler.partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[Partition]) -> None:
        await self._handler.partitions_assigned(assigned)


class ChangesConsumer:
    """One group member subscribed to every changes topic; ``start`` before use, then ``stop``."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._consumer = self._build()
        # Work shorter than this never pauses: pausing drops what was prefetched.
        self._hold_after = min(1.0, settings.consumer_max_poll_interval_seconds / 4)

    def _build(self) -> AIOKafkaConsumer:
        kafka = self._settings
        session_ms = int(kafka.consumer_session_timeout_seconds * 1000)
        return AIOKafkaConsumer(
            **client_options(kafka),
            group_id=kafka.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(100, session_ms // 6),
            metadata_max_age_ms=int(kafka.metadata_max_age_seconds * 1000),
            max_poll_interval_ms=int(kafka.consumer_max_poll_interval_seconds * 1000),
        )

    async def start(self, pattern: str, handler: RebalanceHandler) -> ChangesConsumer:
        """Connect, then join the group for every topic matching ``pattern``; answers self."""
        try:
            await start_through_cancel(self._consumer)
        except BaseException as exc:  # a cancelled start (a stop) closes it too
            with contextlib.suppress(AIOKafkaError, OSError):
                await self._consumer.stop()
            if isinstance(exc, AIOKafkaError):
                raise await unavailable(self._settings, exc) from exc
            raise
        self._consumer.subscribe(pattern=pattern, listener=_Listener(handler))
        return self

    async def stop(self, *, within: float) -> None:
        """Leave the group and close, joined or still joining, in at most ``within`` seconds."""
        try:
            async with asyncio.timeout(within):
                await self._leave_group()
                await self._consumer.stop()
        except TimeoutError:
            log.warning("deliver_consumer_stop_timeout", seconds=round(within, 1))
        except AIOKafkaError as exc:
            log.warning("deliver_consumer_stop_failed", reason=str(exc))

    async def _leave_group(self) -> None:
        """Stop joining and leave the group, without waiting for the broker's join answer.

        aiokafka's stop first waits for a join in progress (the embedded broker
        answers a join after half the session timeout), then sends LeaveGroup on
        the same connection, and only from generation 1 on (the embedded broker
        numbers a group's first generation 0). So: cancel the coordination task
        (besides joining it only auto-commits, which is off here), send LeaveGroup
        on both connections (:func:`_first_answer`), and tell aiokafka the member is
        gone. This uses private aiokafka state; without it (another aiokafka), stop
        still stops.
        """
        consumer = self._consumer
        coordinator = getattr(consumer, "_coordinator", None)
        routine = getattr(coordinator, "_coordination_task", None)
        client = getattr(consumer, "_client", None)
        if coordinator is None or routine is None or client is None:
            return
        if not routine.done():
            routine.cancel()
            await asyncio.wait([routine])
        member_id, node_id = coordinator.member_id, coordinator.coordinator_id
        if not member_id or node_id is None:
            return  # the broker knows no member of ours
        request = LeaveGroupRequest(self._settings.consumer_group, member_id)
        await _first_answer(
            [
                client.send(node_id, request, group=group)
                for group in (ConnectionGroup.COORDINATION, ConnectionGroup.DEFAULT)
            ],
            within=_LEAVE_SECONDS,
        )
        coordinator.reset_generation()  # so that aiokafka's stop does not leave once more

    @property
    def member_id(self) -> str:
        """The broker's name for this member; a new one after the group dropped it."""
        return str(getattr(getattr(self._consumer, "_coordinator", None), "member_id", ""))

    async def fetch(
        self, *, timeout_seconds: float, max_records: int, until: asyncio.Event
    ) -> Mapping[Partition, list[Record]]:
        """Whatever arrives within the timeout, by partition; nothing once ``until`` is set."""
        getting = asyncio.ensure_future(
            self._consumer.getmany(timeout_ms=int(timeout_seconds * 1000), max_records=max_records)
        )
        stopping = asyncio.ensure_future(until.wait())
        try:
            await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not getting.done():
                getting.cancel()  # nothing was taken from the fetched records yet
                await asyncio.wait([getting])
        if getting.cancelled():
            return {}
        try:
            batch: dict[Partition, list[Record]] = getting.result()
        except AIOKafkaError as exc:
            raise _translated(exc, "reading the changes topics") from exc
        if batch:
            # aiokafka asks for a partition's next records only once getmany has drained
            # it, from its fetcher task. Let that task send the request before the caller
            # works on the batch (no await for tens of milliseconds): the broker answers
            # meanwhile, where it would otherwise be asked only at the next fetch.
            for _ in range(_FETCHER_TURNS):
                await asyncio.sleep(0)
        return batch

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Keep the partitions (and fetch nothing new) while the body works, however long."""
        keeper = asyncio.ensure_future(self._keep_polling())
        try:
            yield
        finally:
            keeper.cancel()
            await asyncio.wait([keeper])
            if not keeper.cancelled() and keeper.exception() is not None:
                log.error("deliver_hold_failed", reason=repr(keeper.exception()))
            self._consumer.resume(*self._consumer.assignment())

    async def _keep_polling(self) -> None:
        """Poll with every partition paused: the group sees a live member, the pump no records."""
        consumer = self._consumer
        await asyncio.sleep(self._hold_after)
        while True:
            consumer.pause(*consumer.assignment())
            try:
                batch = await consumer.getmany(timeout_ms=int(_HOLD_POLL_SECONDS * 1000))
            except AIOKafkaError as exc:
                log.warning("deliver_hold_poll_failed", reason=str(exc))
                await asyncio.sleep(_HOLD_POLL_SECONDS)
                continue
            for tp, records in batch.items():
                # A partition assigned meanwhile, before it was paused: read it again later.
                if records:
                    consumer.seek(tp, records[0].offset)

    def assignment(self) -> set[Partition]:
        return set(self._consumer.assignment())

    async def commit(self, offsets: Mapping[Partition, int]) -> dict[Partition, int] | None:
        """Commit the offsets of the partitions still assigned and return them.

        None when the group refuses: it is rebalancing, or has moved on without this member.
        """
        assigned = self._consumer.assignment()
        mine = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        try:
            await self._consumer.commit(mine)
        except (CommitFailedError, IllegalStateError) as exc:
            # aiokafka's text advises on poll intervals; what happened is that the group
            # moved on (a rebalance, or this member dropped while Kafka or the flush
            # stalled). The caller commits what it still holds once the group settles.
            log.warning(
                "deliver_commit_refused",
                reason="the consumer group is rebalancing or went on without this member "
                "(Kafka or the flush stalled past the session timeout, or members changed)",
                detail=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            return None
        except AIOKafkaError as exc:
            raise _translated(exc, "committing offsets") from exc
        return mine

    async def rewind(
        self,
        partitions: set[Partition],
        taken: Callable[[], Mapping[Partition, tuple[int, int]]] | None = None,
    ) -> set[Partition]:
        """Read each partition again from its committed offset (or its beginning); the
        partitions of which the caller holds a run that starts elsewhere.

        ``taken`` answers, when asked, the offsets ``(first, next)`` of what the caller
        already holds in memory per partition; a partition whose run starts at the offset
        the rewind goes to continues from ``next`` instead of reading the run twice (a
        fetch can be taken while the rewind waits for the committed offsets). It is asked
        right before each seek, after the waits, so it describes what is held then. A run
        that starts elsewhere (taken from an older position meanwhile, or a flush
        committed past the offset read here) is read again all the same: what the caller
        holds of it would then come before older records, so it must drop it.
        """
        consumer = self._consumer
        elsewhere: set[Partition] = set()
        try:
            for tp in partitions:
                start = await consumer.committed(tp)
                if start is None:
                    start = (await consumer.beginning_offsets([tp]))[tp]
                run = taken().get(tp) if taken is not None else None
                if run is not None and run[0] != start:
                    elsewhere.add(tp)
                consumer.seek(tp, run[1] if run is not None and run[0] == start else start)
        except AIOKafkaError as exc:
            raise _translated(exc, "rewinding to the committed offsets") from exc
        return elsewhere

    def seek(self, offsets: Mapping[Partition, int]) -> None:
        """Move the read positions of assigned partitions (the next fetch starts there)."""
        assigned = self._consumer.assignment()
        for tp, offset in offsets.items():
            if tp in assigned:
                self._consumer.seek(tp, offset)

    def highwater(self, tp: Partition) -> int | None:
        value = self._consumer.highwater(tp)
        return None if value is None else int(value)


def _translated(exc: AIOKafkaError, doing: str) -> KafkaError:
    reason = describe_failure(exc)
    if exc.retriable:
        return KafkaUnavailableError(f"Kafka failed while {doing}: {reason}")
    return KafkaError(f"Kafka failed while {doing}: {reason}")


async def _first_answer(requests: list[Awaitable[Any]], *, within: float) -> None:
    """Wait until one of ``requests`` is answered (or all failed, or ``within`` seconds
    passed), then drop the others.

    Kafka answers a connection's requests in order: a join in progress holds the
    coordination connection, a fetch's long poll (up to its wait, however long the
    flush it was left in lasted) the default one. A LeaveGroup sent on both gets
    through on the free one; the other copy is answered as from an unknown member,
    or never waited for.
    """
    pending = {asyncio.ensure_future(request) for request in requests}
    try:
        async with asyncio.timeout(within):
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(not task.cancelled() and task.exception() is None for task in done):
                    return
    except TimeoutError:
        pass
    finally:
        for task in pending:
            task.cancel()
        # Retrieved, so that no failed copy is reported as never retrieved.
        await asyncio.gather(*pending, return_exceptions=True)
