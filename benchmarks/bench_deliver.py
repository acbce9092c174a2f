"""The deliver pump in one process: Kafka -> decode -> transform -> coalesce, then one flush.

Pre-fills ``<prefix>.changes.Account`` (6 partitions, the embedded broker) with
``--envelopes`` Account changes over ``--records`` records (70% updates of 2-3
mapped fields, 20% creates, 10% deletes), then runs ``sfamp run --role deliver``
in-process against the sandboxes with the example mapping and a daily cadence
on an injected clock, so nothing flushes while it consumes. Prints:

1. consume rate: envelopes/s from the first envelope the pump holds until it
   holds all of them, decoded, transformed and coalesced (target >= 50,000/s);
2. the flush that follows when the clock reaches the slot: groups, Amplitude
   requests, seconds;
3. for reference, the same envelopes through decode, transform and coalesce in a
   plain loop (what the pump adds on top is Kafka fetching and its bookkeeping);
4. with ``--profile``, where the pump spends its time (``pip install pyinstrument``).

    .venv/bin/python benchmarks/bench_deliver.py [--envelopes N] [--records N] [--profile]
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

from support import DAILY, account_mapping, poll

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.producer import ChangeProducer
from pipeline.logs import configure_logging
from pipeline.runtime.service import Service, serving
from pipeline.sandbox_stack import SandboxStack
from pipeline.transform.apply import PropertyChanges, changes_for_config
from pipeline.transform.coalesce import Coalescer
from pipeline.transform.envelope import ChangeEnvelope, decode, encode
from pipeline.transform.schema import schema_from_describe
from sfamp_sandbox.salesforce.describe import describe_object
from sfamp_sandbox.salesforce.objects import ACCOUNT

TARGET = 50_000
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


async def run(envelopes: int, records: int, profile: bool) -> None:
    configure_logging("console", "warning")
    async with SandboxStack() as stack:
        settings = stack.settings(
            f"bench{uuid.uuid4().hex[:8]}",
            kafka={"consumer_session_timeout_seconds": 3, "metadata_max_age_seconds": 2},
            runtime={"max_pending_groups": max(envelopes, records) + 1},
        )
        produce_rate = await prefill(settings, envelopes, records)
        print(
            f"{envelopes:,} Account envelopes over {records:,} records in "
            f"{settings.kafka.partitions} partitions (pre-filled at {produce_rate:,.0f}/s)"
        )
        with tempfile.TemporaryDirectory() as tmp:
            mapping = Path(tmp) / "mapping.json"
            mapping.write_text(json.dumps(MAPPING))
            clock = FakeClock(SLOT - timedelta(hours=23))
            async with serving(
                settings, mapping, role="deliver", clock=clock, ready=_pump_started
            ) as service:
                await measure(service, envelopes, clock, profile)
    pure_path(envelopes, records)


async def measure(service: Service, envelopes: int, clock: FakeClock, profile: bool) -> None:
    started_at = time.perf_counter()
    await poll(lambda: consumed(service) > 0, 60, "the first envelope", interval=0.002)
    first, first_at = consumed(service), time.perf_counter()
    with profiled(profile):
        await poll(lambda: consumed(service) >= envelopes, 300, "every envelope", interval=0.002)
    seconds = time.perf_counter() - first_at
    rate = (envelopes - first) / seconds
    verdict = "ok" if rate >= TARGET else "BELOW target"
    print(f"  start-up until the first envelope is held  {first_at - started_at:8.2f} s")
    print(
        f"  consume + decode + transform + coalesce  {rate:>10,.0f} envelopes/s  "
        f"({envelopes - first:,} in {seconds:.2f} s; {verdict}, target {TARGET:,}/s)"
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


def pure_path(envelopes: int, records: int) -> None:
    """The same envelopes through decode, transform and coalesce without Kafka or the pump."""
    rng = random.Random(7)
    raw = [encode(make_envelope(rng, seq, records)) for seq in range(envelopes)]
    config = MappingConfig.model_validate(MAPPING)
    schema = schema_from_describe(describe_object(ACCOUNT, "62.0"))
    coalescer = Coalescer(max_groups=envelopes + 1)
    started = time.perf_counter()
    for item in raw:
        for _, outcome in changes_for_config(decode(item), config, schema):
            if isinstance(outcome, PropertyChanges):
                coalescer.add(outcome)
    rate = envelopes / (time.perf_counter() - started)
    print(f"  the same, pure path (no Kafka, no pump)  {rate:>10,.0f} envelopes/s  (reference)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--envelopes", type=int, default=200_000)
    parser.add_argument("--records", type=int, default=20_000, help="distinct record ids")
    parser.add_argument("--profile", action="store_true", help="profile the consume phase")
    args = parser.parse_args()
    asyncio.run(run(args.envelopes, args.records, args.profile))


if __name__ == "__main__":
    main()
