"""A rebalance that lands while a fetch is on its way back to the deliver pump, or
while a flush waits for Amplitude.

aiokafka runs the rebalance callbacks in its coordinator task, so a batch the
pump fetched can reach it after the group gave one of its partitions to another
member, or between a revoke and the next assignment (while aiokafka still reports
the old one). The pump must not take such records: it would send their (older)
values after the new owner had sent newer ones, and never commit them. For the
same reason a flush that loses a partition stops sending that partition's groups.
The consumer here is an in-memory stand-in for :class:`ChangesConsumer` whose
fetch lets the group move partitions before it answers, which a real broker
cannot be made to do on cue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from aiokafka import ConsumerRecord, TopicPartition
from structlog.testing import capture_logs

from pipeline.amplitude import AmplitudeClient
from pipeline.config.settings import Settings
from pipeline.kafka.producer import ChangeProducer
from pipeline.runtime.deliver.pump import DeliverPump
from pipeline.runtime.mapping_file import MappingVersion
from pipeline.runtime.mapping_source import MappingHolder
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.state import FlushResult, ServiceState
from pipeline.transform.envelope import ChangeEnvelope, encode
from tests.transform.fixtures import ACCOUNT_DESCRIBE, account_config

TOPIC = "sfamp.changes.Account"
MOVED = TopicPartition(TOPIC, 0)
KEPT = TopicPartition(TOPIC, 1)
NOON = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # far from the daily flush at 00:00


class MemoryDescribes:
    """The Salesforce reads the pump needs here: the Account describe."""

    async def describe(self, sfdc_object: str) -> dict[str, Any]:
        assert sfdc_object == "Account"
        return ACCOUNT_DESCRIBE

    def query(self, soql: str, *, all_rows: bool = False) -> AsyncIterator[dict[str, Any]]:
        raise AssertionError("no query is expected")


class MemoryChangesConsumer:
    """Answers one fetch with ``batch`` after the group revokes every partition and, unless
    ``after`` is None, assigns ``after``."""

    def __init__(self, pump: DeliverPump, batch: dict[TopicPartition, list[Any]]) -> None:
        self.pump = pump
        self.batch = batch
        self.assigned = set(batch)
        self.rewound: list[set[TopicPartition]] = []
        self.after: set[TopicPartition] | None = set()
        self.member_id = "member-1"
        self.committed: dict[TopicPartition, int] = {}
        # What the next rewinds answer: the partitions whose held run starts elsewhere.
        self.elsewhere: list[set[TopicPartition]] = []

    async def fetch(self, **_: Any) -> Mapping[TopicPartition, list[Any]]:
        # The rebalance runs while the fetched records wait to be handed over.
        await self.pump.partitions_revoked(self.assigned)
        if self.after is not None:  # else still joining: aiokafka reports the old assignment
            self.assigned = set(self.after)
            await self.pump.partitions_assigned(self.assigned)
        return self.batch

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        yield

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def rewind(
        self,
        partitions: set[TopicPartition],
        taken: Callable[[], Mapping[TopicPartition, tuple[int, int]]] | None = None,
    ) -> set[TopicPartition]:
        self.rewound.append(set(partitions))
        return self.elsewhere.pop(0) if self.elsewhere else set()

    def highwater(self, tp: TopicPartition) -> int | None:
        return None

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        mine = {tp: offset for tp, offset in offsets.items() if tp in self.assigned}
        self.committed.update(mine)
        return mine

    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        pass


def changes(tp: TopicPartition, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    records = []
    for offset in range(count):
        record_id = f"001RM{tp.partition:04d}{offset:09d}"
        envelope = ChangeEnvelope(
            "Account", record_id, "update", 1000 + offset, fields={"Industry": f"I{offset}"}
        )
        value = encode(envelope)
        key = record_id.encode()
        records.append(
            ConsumerRecord(TOPIC, tp.partition, offset, 0, 0, key, value, None, 18, len(value), [])
        )
    return records


def pump(amplitude: AmplitudeClient | None = None) -> DeliverPump:
    settings = Settings()
    holder = MappingHolder(MappingVersion(account_config({"Industry": "industry"}), "test"))
    return DeliverPump(
        settings,
        holder,
        amplitude or AmplitudeClient(settings.amplitude),
        ChangeProducer(settings.kafka),  # never started: nothing is flushed here
        MemoryDescribes(),
        ServiceState(role="deliver"),
        Metrics(),
        clock=lambda: NOON,
    )


async def test_records_of_a_partition_given_away_during_the_fetch_are_not_taken() -> None:
    deliver = pump()
    consumer = MemoryChangesConsumer(deliver, {MOVED: changes(MOVED, 3), KEPT: changes(KEPT, 2)})
    consumer.after = {KEPT}
    deliver._consumer = consumer  # type: ignore[assignment]

    await deliver._step(consumer)  # type: ignore[arg-type]

    window = deliver._window
    assert MOVED not in window.offsets, "records of a partition now owned elsewhere were taken"
    assert window.offsets == {KEPT: 2}, window.offsets
    assert window.pending_groups == 2
    assert consumer.rewound == [{KEPT}]


async def test_records_of_partitions_kept_through_the_rebalance_are_taken() -> None:
    # What a fetch returns once the new assignment is installed was fetched under it:
    # aiokafka's fetcher drops records of the old one, and starts at the committed offsets.
    deliver = pump()
    consumer = MemoryChangesConsumer(deliver, {MOVED: changes(MOVED, 3), KEPT: changes(KEPT, 2)})
    consumer.after = {MOVED, KEPT}
    deliver._consumer = consumer  # type: ignore[assignment]

    await deliver._step(consumer)  # type: ignore[arg-type]

    assert deliver._window.offsets == {MOVED: 3, KEPT: 2}
    assert deliver._window.pending_groups == 5


async def test_nothing_fetched_is_taken_between_a_revoke_and_the_next_assignment() -> None:
    deliver = pump()
    consumer = MemoryChangesConsumer(deliver, {MOVED: changes(MOVED, 3), KEPT: changes(KEPT, 2)})
    consumer.after = None
    deliver._consumer = consumer  # type: ignore[assignment]

    await deliver._step(consumer)  # type: ignore[arg-type]

    assert deliver._window.empty, "records were taken before the group assigned partitions"
    assert deliver._window.pending_groups == 0


async def test_a_rewind_that_meets_a_run_taken_from_elsewhere_drops_the_window() -> None:
    """A flush committed past the offset the rewind read, and the window took what came
    after it: read again behind it, an older read would land over its newer changes."""
    deliver = pump()
    consumer = MemoryChangesConsumer(deliver, {KEPT: changes(KEPT, 2)})
    consumer.after = {KEPT}
    deliver._consumer = consumer  # type: ignore[assignment]
    await deliver._step(consumer)  # type: ignore[arg-type]
    assert deliver._window.offsets == {KEPT: 2}

    consumer.elsewhere = [{KEPT}]  # the next rewind finds the held run elsewhere, once
    await deliver.rewind({KEPT})
    assert deliver._window.empty, "a run held ahead of the offset read again was kept"
    assert consumer.rewound[-2:] == [{KEPT}, {KEPT}]  # and every partition went back again


async def turns(count: int) -> None:
    """Let the event loop run ``count`` times (no time passes)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def flush_meeting_a_rebalance(
    kept_after: set[TopicPartition], moved: list[ConsumerRecord[bytes, bytes]] | None = None
) -> tuple[FlushResult, list[list[str]], MemoryChangesConsumer]:
    """Flush changes of MOVED (``moved``, by default three Account updates) and KEPT. The
    first request meets a 429; while it is answered, the group keeps only ``kept_after``.
    Returns the flush's result, per request the record ids (group values) it carried,
    and the consumer."""
    sent: list[list[str]] = []
    deliver: DeliverPump

    async def answer(request: httpx.Request) -> httpx.Response:
        events = orjson.loads(request.content)["events"]
        sent.append([event["groups"]["account"] for event in events])
        if len(sent) > 1:
            return httpx.Response(200, json={"code": 200, "events_ingested": len(events)})
        await deliver.partitions_revoked({MOVED, KEPT})
        consumer.assigned = set(kept_after)
        await deliver.partitions_assigned(set(kept_after))
        return httpx.Response(429, json={"code": 429, "error": "Too many requests"})

    async def backoff(seconds: float) -> None:
        await turns(10)  # time passes: the loop turns, as during the 15 s after a 429

    settings = Settings(amplitude={"api_key": "key", "transport": "httpapi"})
    client = AmplitudeClient(
        settings.amplitude, transport=httpx.MockTransport(answer), sleep=backoff
    )
    deliver = pump(client)
    moved = changes(MOVED, 3) if moved is None else moved
    consumer = MemoryChangesConsumer(deliver, {MOVED: moved, KEPT: changes(KEPT, 2)})
    consumer.after = {MOVED, KEPT}
    deliver._consumer = consumer  # type: ignore[assignment]
    await deliver._step(consumer)  # type: ignore[arg-type]
    assert deliver._window.offsets == {MOVED: len(moved), KEPT: 2}
    return await deliver.flush(), sent, consumer


def ids_of(tp: TopicPartition) -> set[str]:
    return {record.key.decode() for record in changes(tp, 3 if tp == MOVED else 2)}


async def test_a_flush_that_loses_a_partition_stops_sending_its_groups() -> None:
    # The retry must not carry MOVED's values: the new owner sends them, maybe newer.
    result, sent, consumer = await flush_meeting_a_rebalance({KEPT})

    assert set(sent[0]) == ids_of(MOVED) | ids_of(KEPT), "the first request carried every group"
    assert [ids for ids in sent[1:] if ids_of(MOVED) & set(ids)] == [], (
        f"a request after the group took {MOVED} still carried its groups: {sent[1:]}"
    )
    assert sorted(id_ for ids in sent[1:] for id_ in ids) == sorted(ids_of(KEPT))
    assert consumer.committed == {KEPT: 2}
    assert result.ok, result
    assert result.groups == 2, result


async def test_a_flush_that_loses_every_partition_stops_early() -> None:
    result, sent, consumer = await flush_meeting_a_rebalance(set())

    assert len(sent) == 1, f"a request after the group took every partition: {sent[1:]}"
    assert consumer.committed == {}
    assert not result.ok, result
    assert (result.error or "").startswith("stopped early"), result


async def test_losing_a_partition_that_fed_no_group_does_not_restart_the_flush() -> None:
    unmapped = [  # changes of an object no mapping names: read, and nothing to send
        ConsumerRecord(TOPIC, 0, n, 0, 0, b"003", value, None, 3, len(value), [])
        for n, value in enumerate(
            encode(ChangeEnvelope("Contact", f"003RM{n:013d}", "update", 1000)) for n in range(3)
        )
    ]
    with capture_logs() as logs:
        result, sent, consumer = await flush_meeting_a_rebalance({KEPT}, unmapped)

    assert [e for e in logs if e["event"] == "flush_restarted"] == []
    assert sent == [sorted(ids_of(KEPT))] * 2, "the retry of the same request"
    assert consumer.committed == {KEPT: 2}
    assert result.ok, result


async def test_a_flush_stopped_early_returns_once_its_request_has_ended() -> None:
    """Every partition goes while a request waits for its answer: the flush returns only
    after the request's own clean-up, so the next flush never overlaps it."""
    in_flight, cleaned_up = asyncio.Event(), []

    async def answer(request: httpx.Request) -> httpx.Response:
        in_flight.set()
        try:
            await asyncio.Event().wait()  # no answer: the flush is stopped meanwhile
        finally:
            await turns(5)  # closing takes the loop a few turns, as a socket's does
            cleaned_up.append(True)
        raise AssertionError("unreachable")

    settings = Settings(amplitude={"api_key": "key", "transport": "httpapi"})
    deliver = pump(AmplitudeClient(settings.amplitude, transport=httpx.MockTransport(answer)))
    consumer = MemoryChangesConsumer(deliver, {MOVED: changes(MOVED, 3), KEPT: changes(KEPT, 2)})
    consumer.after = {MOVED, KEPT}
    deliver._consumer = consumer  # type: ignore[assignment]
    await deliver._step(consumer)  # type: ignore[arg-type]

    async def rebalance() -> None:  # aiokafka's coordinator task
        await in_flight.wait()
        await deliver.partitions_revoked({MOVED, KEPT})
        consumer.assigned = set()
        await deliver.partitions_assigned(set())

    coordinator = asyncio.create_task(rebalance())
    result = await asyncio.wait_for(deliver.flush(), timeout=10)
    await coordinator

    assert cleaned_up == [True], "the flush returned before its request had ended"
    assert not result.ok, result
