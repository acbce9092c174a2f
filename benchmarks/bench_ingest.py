"""The ingest pump: Salesforce sandbox CDC over CometD -> ``<prefix>.changes.Account`` in Kafka.

Runs ``sfamp run --role ingest`` in-process against the sandbox stack (the
embedded broker, the Salesforce sandbox in this process too) and prints change
records written to Kafka per second (acknowledged by the broker, acks=all, with
the replay id stored after them), target >= 5,000/s, in three scenarios:

1. backlog: ``--events`` single-record UPDATEs committed before the pump starts,
   replayed from the earliest retained event (the catch-up after a restart);
2. live: the pump follows new events (replay -1) while the org commits
   ``--events`` single-record UPDATEs in bursts of ``--burst``;
3. multi-record: ``--events`` records changed by UPDATE events naming
   ``--ids-per-event`` records each (one CometD message, many envelopes).

The rate runs from the start of the scenario (subscription confirmed for the
backlog, first commit otherwise) to the last acknowledgement; the topic is then
read back to count what it holds.

    .venv/bin/python benchmarks/bench_ingest.py [--events N] [--burst N] [--ids-per-event N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from support import account_mapping, poll

from pipeline.config.settings import Settings
from pipeline.logs import configure_logging
from pipeline.runtime.service import Service, serving
from pipeline.sandbox_stack import SandboxStack
from sfamp_sandbox.salesforce.org import Org, Transaction
from sfamp_sandbox.salesforce.seed import seed

TARGET = 5_000
INDUSTRIES = ("Energy", "Biotechnology", "Mining", "Retail", "Banking")
MAPPING = account_mapping(
    {"Name": "name", "Industry": "industry", "AnnualRevenue": "annual_revenue"},
    {"mode": "interval", "every_seconds": 60},
)


def update_one_by_one(org: Org, ids: list[str], round_no: int) -> None:
    """One transaction, one CDC event per record (what a user or a trigger produces)."""
    for n, record_id in enumerate(ids):
        values = {"Industry": INDUSTRIES[(n + round_no) % 5], "AnnualRevenue": n * 10.0 + round_no}
        org.update("Account", record_id, values, Transaction(org.admin.id))


def update_many_per_event(org: Org, ids: list[str], per_event: int) -> None:
    """Mass updates: one UPDATE event names ``per_event`` records (as a data loader causes)."""
    for start in range(0, len(ids), per_event):
        chunk = ids[start : start + per_event]
        org.multi_update("Account", chunk, {"Rating": "Hot"}, Transaction(org.admin.id))


def ingested(service: Service) -> float:
    """Change records the pump wrote and Kafka acknowledged (``sfamp_events_ingested``)."""
    value = service.metrics.registry.get_sample_value(
        "sfamp_events_ingested_total", {"object": "Account"}
    )
    return value or 0.0


async def read_back(settings: Settings, expected: int) -> int:
    """Records in the changes topic, read from the start.

    Counted by reading rather than by end offsets: the embedded broker answers a
    ListOffsets(latest) with the base offset of the last batch plus one, not the
    log end offset, so end offsets under-count a topic written in batches.
    """
    topic = f"{settings.kafka.topic_prefix}.changes.Account"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(settings.kafka.partitions)])
        await consumer.seek_to_beginning()
        count = 0
        while count < expected:
            batch = await consumer.getmany(timeout_ms=2000, max_records=10_000)
            if not batch:
                break
            count += sum(len(records) for records in batch.values())
        return count
    finally:
        await consumer.stop()


async def until_ingested(service: Service, total: int) -> float:
    """Seconds until Kafka acknowledged ``total`` records."""
    started = time.perf_counter()
    await poll(
        lambda: ingested(service) >= total, 300, f"{total:,} records in Kafka", interval=0.002
    )
    return time.perf_counter() - started


@dataclass(frozen=True)
class Options:
    events: int
    burst: int
    ids_per_event: int


Outcome = tuple[float, str]  # records/s, and a note on what the time includes
Scenario = Callable[[SandboxStack, Settings, Path, list[str], Options], Awaitable[Outcome]]


async def backlog(
    stack: SandboxStack, settings: Settings, mapping: Path, ids: list[str], options: Options
) -> Outcome:
    assert stack.salesforce is not None
    update_one_by_one(stack.salesforce.org, ids, 1)
    replaying = settings.model_copy(
        update={"salesforce": settings.salesforce.model_copy(update={"replay_start": "earliest"})}
    )
    async with serving(replaying, mapping, role="ingest") as service:
        # From the confirmed subscription (the replay starts there) to the last acknowledgement.
        seconds = await until_ingested(service, len(ids))
    return len(ids) / seconds, ""


async def live(
    stack: SandboxStack, settings: Settings, mapping: Path, ids: list[str], options: Options
) -> Outcome:
    assert stack.salesforce is not None
    org = stack.salesforce.org
    committing = 0.0

    async def commit() -> None:
        nonlocal committing
        for start in range(0, len(ids), options.burst):
            began = time.perf_counter()
            update_one_by_one(org, ids[start : start + options.burst], 2)
            committing += time.perf_counter() - began
            await asyncio.sleep(0)

    async with serving(settings, mapping, role="ingest") as service:
        # From the first commit to the last acknowledgement; the org commits in this process.
        publisher = asyncio.create_task(commit())
        seconds = await until_ingested(service, len(ids))
        await publisher
    return len(ids) / seconds, f"the org's own commits took {committing:.2f} s of {seconds:.2f} s"


async def multi(
    stack: SandboxStack, settings: Settings, mapping: Path, ids: list[str], options: Options
) -> Outcome:
    assert stack.salesforce is not None
    async with serving(settings, mapping, role="ingest") as service:
        started = time.perf_counter()
        update_many_per_event(stack.salesforce.org, ids, options.ids_per_event)
        await until_ingested(service, len(ids))
        seconds = time.perf_counter() - started
    events = -(-len(ids) // options.ids_per_event)
    return len(ids) / seconds, f"{events:,} CometD events"


async def run(options: Options) -> None:
    configure_logging("console", "warning")
    async with SandboxStack(salesforce_options={"poll_timeout": 5.0}) as stack:
        assert stack.salesforce is not None
        ids = seed(stack.salesforce.org, "Account", options.events)
        print(
            f"{options.events:,} Account records; change records acknowledged by Kafka per second"
        )
        with tempfile.TemporaryDirectory() as tmp:
            mapping = Path(tmp) / "mapping.json"
            mapping.write_text(json.dumps(MAPPING))
            scenarios: list[tuple[str, Scenario]] = [
                ("backlog replay (-2), 1 record/event", backlog),
                (f"live (-1), bursts of {options.burst}, 1 record/event", live),
                (f"live (-1), {options.ids_per_event} records/event", multi),
            ]
            for name, scenario in scenarios:
                settings = stack.settings(f"bench{uuid.uuid4().hex[:8]}")
                rate, note = await scenario(stack, settings, mapping, ids, options)
                written = await read_back(settings, len(ids))
                verdict = "ok" if rate >= TARGET else "BELOW target"
                print(
                    f"  {name:<40} {rate:>9,.0f} records/s  "
                    f"({written:,} in the topic; {verdict}, target {TARGET:,}/s)"
                )
                if note:
                    print(f"  {'':<40} {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=30_000, help="change records per scenario")
    parser.add_argument("--burst", type=int, default=200, help="live commits between yields")
    parser.add_argument("--ids-per-event", type=int, default=100, help="records per mass update")
    args = parser.parse_args()
    asyncio.run(run(Options(args.events, args.burst, args.ids_per_event)))


if __name__ == "__main__":
    main()
