"""End-to-end latency: a Salesforce commit until Amplitude holds it, with a 1-second cadence.

Runs ``sfamp run --role all`` in-process (ingest over the real CometD client,
deliver on the wall clock) against the embedded broker and both sandboxes. A
writer changes ``--changes`` different Accounts through the Salesforce sandbox's
control API, ``--rate`` per second, each to a unique name. A change is committed
when its API call returned (the CDC event is published inside that call); it is
in Amplitude at the time the Amplitude sandbox logged the ``/groupidentify``
request that set that name (its group history keeps the request time). Prints
p50, p90, p99 and max (target p99 < 3 s).

    .venv/bin/python benchmarks/bench_latency.py [--changes N] [--rate N] [--every S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from support import account_mapping, poll

from pipeline.config.settings import Settings
from pipeline.logs import configure_logging
from pipeline.runtime.service import serving
from pipeline.sandbox.salesforce.seed import seed
from pipeline.sandbox.stack import SandboxStack

TARGET_P99 = 3.0


def mapping(every_seconds: int) -> dict[str, Any]:
    properties = {"Name": "name", "Industry": "industry"}
    return account_mapping(properties, {"mode": "interval", "every_seconds": every_seconds})


async def write_changes(base_url: str, ids: list[str], rate: float) -> dict[str, float]:
    """Rename each record once, ``rate`` per second; the wall time each commit returned."""
    committed: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        started = time.monotonic()
        for n, record_id in enumerate(ids):
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            name = f"Latency {n} {record_id}"
            response = await http.patch(
                f"/__sandbox/records/Account/{record_id}", json={"Name": name}
            )
            response.raise_for_status()
            committed[name] = time.time()
    return committed


def arrivals(stack: SandboxStack, ids: list[str]) -> dict[str, float]:
    """For every name Amplitude was sent, when the sandbox received the request that set it."""
    assert stack.amplitude is not None
    history = stack.amplitude.state.store("us").history
    seen: dict[str, float] = {}
    for record_id in ids:
        for entry in history.get(("account", record_id), ()):
            name = entry["operations"].get("$set", {}).get("name")
            if isinstance(name, str):
                seen.setdefault(name, entry["at"])
    return seen


async def written_to_kafka(settings: Settings, expected: int) -> dict[str, float]:
    """Per record id, when ingest wrote its change to Kafka (the producer's record timestamp)."""
    topic = f"{settings.kafka.topic_prefix}.changes.Account"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(settings.kafka.partitions)])
        await consumer.seek_to_beginning()
        written: dict[str, float] = {}
        while len(written) < expected:
            batch = await consumer.getmany(timeout_ms=2000)
            if not batch:
                break
            for record in (r for records in batch.values() for r in records):
                written.setdefault(record.key.decode(), record.timestamp / 1000)
        return written
    finally:
        await consumer.stop()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def run(changes: int, rate: float, every: int) -> None:
    configure_logging("console", "warning")
    async with SandboxStack(salesforce_options={"poll_timeout": 5.0}) as stack:
        assert stack.salesforce is not None
        ids = seed(stack.salesforce.org, "Account", changes)
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        settings = stack.settings(
            prefix,
            kafka={"consumer_group": f"{prefix}-deliver", "consumer_session_timeout_seconds": 3},
        )
        with tempfile.TemporaryDirectory() as tmp:
            mapping_file = Path(tmp) / "mapping.json"
            mapping_file.write_text(json.dumps(mapping(every)))
            async with serving(settings, mapping_file) as service:
                committed = await write_changes(stack.salesforce.base_url, ids, rate)
                await poll(
                    lambda: len(arrivals(stack, ids)) >= len(committed),
                    60,
                    "every change",
                    interval=0.05,
                )
                flushes = service.deliver.flushes if service.deliver else 0
        seen, written = arrivals(stack, ids), await written_to_kafka(settings, len(ids))
    record_of = {name: name.rsplit(" ", 1)[1] for name in committed}
    legs = {
        "commit -> Amplitude": [seen[name] - at for name, at in committed.items()],
        "  commit -> Kafka (ingest)": [
            written[record_of[name]] - at for name, at in committed.items()
        ],
        "  Kafka -> Amplitude (deliver)": [
            seen[name] - written[record_of[name]] for name in committed
        ],
    }
    print(f"{changes} commits at {rate:g}/s, cadence every {every} s, {flushes} flushes")
    for label, values in legs.items():
        p50, p90, p99 = (percentile(values, share) for share in (0.5, 0.9, 0.99))
        print(
            f"  {label:<31} p50 {p50:6.3f} s  p90 {p90:6.3f} s  p99 {p99:6.3f} s  "
            f"max {max(values):6.3f} s  mean {statistics.fmean(values):6.3f} s"
        )
    p99 = percentile(legs["commit -> Amplitude"], 0.99)
    verdict = "ok" if p99 < TARGET_P99 else "ABOVE target"
    print(f"  end to end p99 {p99:.3f} s: {verdict} (target < {TARGET_P99:g} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--changes", type=int, default=600, help="records renamed, once each")
    parser.add_argument("--rate", type=float, default=100.0, help="commits per second")
    parser.add_argument("--every", type=int, default=1, help="interval cadence, seconds")
    args = parser.parse_args()
    asyncio.run(run(args.changes, args.rate, args.every))


if __name__ == "__main__":
    main()
