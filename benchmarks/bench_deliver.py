"""The deliver pump in one process: Kafka -> decode -> transform -> coalesce, then one flush.

Pre-fills ``<prefix>.changes.Account`` (6 partitions, the embedded broker) with
``--envelopes`` Account changes over ``--records`` records (70% updates of 2-3
mapped fields, 20% creates, 10% deletes), then runs ``sfamp run --role deliver``
in-process against the sandboxes with the example mapping and a daily cadence
on an injected clock, so nothing flushes while it consumes. Prints:

1. raw consumption: the same messages read by a plain aiokafka consumer from the
   same broker (every partition assigned, ``getmany`` of up to 5,000 records, the
   pump's fetch), messages/s from the first message until the last; read right
   before and right after each deliver run, and the mean of the two taken;
2. consume rate: envelopes/s from the first envelope the pump holds until it
   holds all of them, decoded, transformed and coalesced;
3. the ratio of the two, with the target: deliver >= 1/3 of raw consumption,
   both measured in this run on this broker, so that the load of the machine
   cancels out of it (``--repeat N`` runs both N times, raw first, over the same
   messages; the ratio of each pair is printed);
4. the flush that follows when the clock reaches the slot: groups, Amplitude
   requests, seconds;
5. for reference, the same envelopes through decode, transform and coalesce in a
   plain loop (what the pump adds on top is Kafka fetching and its bookkeeping);
6. with ``--profile``, where the pump spends its time (``pip install pyinstrument``).

    .venv/bin/python benchmarks/bench_deliver.py [--envelopes N] [--records N] [--repeat N]
                                                 [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from support import DAILY, account_mapping, poll

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.gc_tuning import tune_gc
from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.connection import client_options
from pipeline.kafka.producer import ChangeProducer
from pipeline.logs import configure_logging
from pipeline.runtime.service import Service, serving
from pipeline.sandbox_stack import SandboxStack
from pipeline.transform.coalesce import Coalescer, ReadOrders
from pipeline.transform.compiled import compiled
from pipeline.transform.envelope import ChangeEnvelope, decode, encode
from pipeline.transform.schema import schema_from_describe
from sfamp_sandbox.salesforce.describe import describe_object
from sfamp_sandbox.salesforce.objects import ACCOUNT

# deliver's consume rate against a plain aiokafka consumer's on the same messages, same run
TARGET_SHARE = 1 / 3
TARGET_SHARE_TEXT = "1/3"
KAFKA: dict[str, Any] = {"consumer_session_timeout_seconds": 3, "metadata_max_age_seconds": 2}
SLOT = datetime(2026, 1, 2, 0, 0, tzinfo=UTC)  # the daily slot; the run starts 23 h before it
INDUSTRIES = ("Energy", "Biotechnology", "Mining", "Retail", "Banking")
TYPES = ("Prospect", "Customer - Direct", "Partner")
MAPPING = account_mapping(
    {
        "Name": "name",
        "Industry": "industry",
        "AnnualRevenue": "annual_revenue",
        "NumberOfEmployees": "employees",
        "Type": "type",
        "BillingCountry": "billing_country",
    },
    DAILY,
    on_delete="mark",
)


class FakeClock:
    """The pump's clock; the benchmark moves it to the daily slot when it wants the flush."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_envelope(rng: random.Random, seq: int, records: int) -> ChangeEnvelope:
    common: dict[str, Any] = {
        "object": "Account",
        "record_id": f"001RM{rng.randrange(records):013d}",
        "commit_ts": 1_767_225_600_000 + seq,
        "commit_number": 1_100_670_840_000 + seq,
        "transaction_key": f"0000{seq:08x}-a642-11e2-c29b-229c6786473e",
        "sequence_number": 1,
        "channel": "/data/AccountChangeEvent",
        "replay_id": 18_098_167 + seq,
    }
    modified = "2026-01-01T10:43:20.000Z"
    fields: dict[str, Any]
    roll = rng.random()
    if roll < 0.7:
        fields = {
            "Industry": rng.choice(INDUSTRIES),
            "BillingAddress": {"Country": f"Country {seq % 97}"},
            "LastModifiedDate": modified,
        }
        changed = ("Industry", "BillingAddress.Country", "LastModifiedDate")
        return ChangeEnvelope(op="update", changed=changed, fields=fields, **common)
    if roll < 0.9:
        fields = {
            "Name": f"Account {seq}",
            "Type": rng.choice(TYPES),
            "Industry": rng.choice(INDUSTRIES),
            "AnnualRevenue": rng.randrange(10**7) * 1.0,
            "NumberOfEmployees": rng.randrange(10_000),
            "BillingAddress": {"Street": "415 Mission St", "City": "San Francisco"},
            "OwnerId": "005RM000001hv4SYAQ",
            "CreatedDate": modified,
            "LastModifiedDate": modified,
        }
        return ChangeEnvelope(op="create", fields=fields, **common)
    return ChangeEnvelope(op="delete", **common)


async def prefill(settings: Settings, envelopes: int, records: int) -> float:
    """Write the envelopes; returns the producer's rate (context, not a figure of deliver)."""
    await ensure_topics(settings.kafka, sfamp_topics(settings.kafka, ["Account"]))
    topic = f"{settings.kafka.topic_prefix}.changes.Account"
    rng = random.Random(7)
    started = time.perf_counter()
    async with ChangeProducer(settings.kafka, linger_ms=20) as producer:
        for start in range(0, envelopes, 20_000):
            chunk = [
                make_envelope(rng, seq, records)
                for seq in range(start, min(start + 20_000, envelopes))
            ]
            await producer.send_all([(topic, e.kafka_key, encode(e)) for e in chunk])
    return envelopes / (time.perf_counter() - started)


def _pump_started(service: Service) -> bool:
    # Measure from the first envelope on: do not wait for the group join first.
    return service.deliver is not None


def consumed(service: Service) -> int:
    """Offsets the pump holds past, summed over partitions: envelopes read into its window.

    The topic is new, so every partition starts at offset 0. Counting offsets rather than
    the window's ``changes`` keeps a batch that is read twice (a rebalance mid-batch) from
    counting twice.
    """
    assert service.deliver is not None
    window = service.deliver._window
    return sum(window.offsets.values())


@contextlib.contextmanager
def profiled(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False, show_all=False))


async def run(envelopes: int, records: int, repeat: int, profile: bool) -> None:
    configure_logging("console", "warning")
    tune_gc()  # as every sfamp process does (pipeline/cli)
    async with SandboxStack() as stack:
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        settings = stack.settings(prefix, kafka=KAFKA)
        produce_rate = await prefill(settings, envelopes, records)
        print(
            f"{envelopes:,} Account envelopes over {records:,} records in "
            f"{settings.kafka.partitions} partitions (pre-filled at {produce_rate:,.0f}/s)"
        )
        ratios: list[float] = []
        for turn in range(1, repeat + 1):
            if repeat > 1:
                print(f"run {turn} of {repeat}")
            before = await raw_consume(settings, envelopes)
            # A consumer group of its own per run: each reads the topic from its beginning.
            kafka = {**KAFKA, "consumer_group": f"{prefix}-deliver-{turn}"}
            runtime = {"max_pending_groups": max(envelopes, records) + 1}
            ours = await deliver(
                stack.settings(prefix, kafka=kafka, runtime=runtime), envelopes, profile
            )
            after = await raw_consume(settings, envelopes)
            # Raw consumption right before and right after: the machine's load moves both.
            raw = (before + after) / 2
            print(
                f"  raw aiokafka consumption                 {raw:>10,.0f} messages/s  "
                f"(mean of {before:,.0f} before and {after:,.0f} after)"
            )
            ratios.append(ours / raw)
            print(
                f"  deliver / raw                            {ours / raw:>10.2f}  "
                f"(target >= {TARGET_SHARE_TEXT}: {verdict(ours / raw >= TARGET_SHARE)})"
            )
    if repeat > 1:
        low, high = min(ratios), max(ratios)
        print(
            f"deliver / raw over {repeat} runs: {low:.2f}-{high:.2f} "
            f"(target >= {TARGET_SHARE_TEXT}: {verdict(low >= TARGET_SHARE)} in the worst run)"
        )
    pure_path(envelopes, records)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "BELOW"


async def raw_consume(settings: Settings, envelopes: int) -> float:
    """Messages/s of a plain aiokafka consumer reading every partition of the changes topic.

    Counted the way the pump is: from the first message on, the first batch excluded.
    """
    topic = f"{settings.kafka.topic_prefix}.changes.Account"
    consumer = AIOKafkaConsumer(
        **client_options(settings.kafka), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign(
            [TopicPartition(topic, partition) for partition in range(settings.kafka.partitions)]
        )
        await consumer.seek_to_beginning()
        count = first = 0
        first_at = 0.0
        while count < envelopes:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batch.values():
                count += len(records)
            if count and not first:
                first, first_at = count, time.perf_counter()
        if count == first:
            raise SystemExit(
                f"{envelopes:,} envelopes all came in the first fetch: too few to measure "
                "raw consumption; use more --envelopes (the default is 200,000)"
            )
        return (count - first) / (time.perf_counter() - first_at)
    finally:
        await consumer.stop()


async def deliver(settings: Settings, envelopes: int, profile: bool) -> float:
    """Runs the deliver pump over the pre-filled topic; returns its envelopes/s."""
    with tempfile.TemporaryDirectory() as tmp:
        mapping = Path(tmp) / "mapping.json"
        mapping.write_text(json.dumps(MAPPING))
        clock = FakeClock(SLOT - timedelta(hours=23))
        async with serving(
            settings, mapping, role="deliver", clock=clock, ready=_pump_started
        ) as service:
            return await measure(service, envelopes, clock, profile)


async def measure(service: Service, envelopes: int, clock: FakeClock, profile: bool) -> float:
    started_at = time.perf_counter()
    await poll(lambda: consumed(service) > 0, 60, "the first envelope", interval=0.002)
    first, first_at = consumed(service), time.perf_counter()
    with profiled(profile):
        await poll(lambda: consumed(service) >= envelopes, 300, "every envelope", interval=0.002)
    seconds = time.perf_counter() - first_at
    rate = (envelopes - first) / seconds
    print(f"  start-up until the first envelope is held  {first_at - started_at:6.2f} s")
    print(
        f"  consume + decode + transform + coalesce  {rate:>10,.0f} envelopes/s  "
        f"({envelopes - first:,} in {seconds:.2f} s)"
    )
    deliver = service.deliver
    assert deliver is not None
    clock.now = SLOT
    await poll(lambda: deliver.flushes > 0, 120, "the flush", interval=0.002)
    result = service.state.last_flush
    assert result is not None
    print(
        f"  flush at the slot: {result.groups:,} groups from {result.changes:,} changes, "
        f"{result.requests} Amplitude requests, {result.duration_seconds:.2f} s"
    )
    if result.changes > envelopes:
        # The first fetch of each partition can be handed out before the assignment's rewind
        # (seek to the committed offset) lands; those envelopes are then read again.
        print(f"  ({result.changes - envelopes:,} envelopes were read twice at start-up)")
    return rate


def pure_path(envelopes: int, records: int) -> None:
    """The same envelopes through the pump's decode, transform and coalesce, without Kafka."""
    rng = random.Random(7)
    raw = [encode(make_envelope(rng, seq, records)) for seq in range(envelopes)]
    table = compiled(MappingConfig.model_validate(MAPPING))
    schema = schema_from_describe(describe_object(ACCOUNT, "62.0"))
    coalescer, reads = Coalescer(max_groups=envelopes + 1), ReadOrders()
    started = time.perf_counter()
    for item in raw:
        table.fold(reads.place(decode(item)), schema, coalescer)
    rate = envelopes / (time.perf_counter() - started)
    print(f"  the same, pure path (no Kafka, no pump)  {rate:>10,.0f} envelopes/s  (reference)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--envelopes", type=int, default=200_000)
    parser.add_argument("--records", type=int, default=20_000, help="distinct record ids")
    parser.add_argument("--repeat", type=int, default=1, help="raw and deliver runs, in pairs")
    parser.add_argument("--profile", action="store_true", help="profile the consume phase")
    args = parser.parse_args()
    asyncio.run(run(args.envelopes, args.records, max(1, args.repeat), args.profile))


if __name__ == "__main__":
    main()
