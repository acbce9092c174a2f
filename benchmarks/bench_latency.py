"""End-to-end latency: a Salesforce commit until Amplitude holds it, with a 1-second cadence.

Runs ``sfamp run --role all`` in-process (ingest over the real CometD client,
deliver on the wall clock) against the embedded broker and both sandboxes. A
writer changes ``--changes`` different Accounts through the Salesforce sandbox's
control API, ``--rate`` per second, each to a unique name. A change is committed
when its API call returned (the CDC event is published inside that call); it is
in Amplitude at the time the Amplitude sandbox applied the request that set that
name (its group history keeps the request time).

At each ``--latencies`` round trip (both sandboxes answer every API request that
much later, like a WAN) it measures sfamp, then the naive poller
(``naive_poller.py``: simple-salesforce ``query_all`` of what changed + the
official Amplitude SDK, every ``--every`` seconds) on the same records, and
prints p50, p90, p99 and max of each (target at 50 ms: sfamp p99 < 1.5 s).

    .venv/bin/python benchmarks/bench_latency.py [--changes N] [--rate N] [--every S]
        [--latencies 0,50] [--transport groupidentify|httpapi]
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
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from naive_poller import NaivePoller
from support import account_mapping, poll

from pipeline.config.settings import Settings
from pipeline.logs import configure_logging
from pipeline.runtime.service import serving
from pipeline.sandbox_stack import SandboxStack
from sfamp_sandbox.salesforce.seed import seed

TARGET_P99 = 1.5
TARGET_LATENCY_MS = 50  # the p99 target holds at this round trip
FIELDS = {"Name": "name", "Industry": "industry"}


def mapping(every_seconds: int) -> dict[str, Any]:
    return account_mapping(FIELDS, {"mode": "interval", "every_seconds": every_seconds})


async def write_changes(base_url: str, ids: list[str], rate: float, label: str) -> dict[str, float]:
    """Rename each record once, ``rate`` per second; the wall time each commit returned."""
    committed: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        started = time.monotonic()
        for n, record_id in enumerate(ids):
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            name = f"Latency {label} {n} {record_id}"
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


async def written_to_kafka(settings: Settings, names: set[str]) -> dict[str, float]:
    """Per change (the name it set), when ingest wrote it to Kafka (the producer's record
    timestamp). Matched by name, not by record id: a fresh topic also receives the
    changes of an earlier run (at another latency) that CometD replays to a new
    subscriber, of the same records."""
    topic = f"{settings.kafka.topic_prefix}.changes.Account"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(settings.kafka.partitions)])
        await consumer.seek_to_beginning()
        written: dict[str, float] = {}
        while len(written) < len(names):
            batch = await consumer.getmany(timeout_ms=2000)
            if not batch:
                break
            for record in (r for records in batch.values() for r in records):
                name = orjson.loads(record.value or b"{}").get("fields", {}).get("Name")
                if name in names:
                    written.setdefault(name, record.timestamp / 1000)
        return written
    finally:
        await consumer.stop()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def show(label: str, values: list[float]) -> None:
    p50, p90, p99 = (percentile(values, share) for share in (0.5, 0.9, 0.99))
    print(
        f"  {label:<33} p50 {p50:6.3f} s  p90 {p90:6.3f} s  p99 {p99:6.3f} s  "
        f"max {max(values):6.3f} s  mean {statistics.fmean(values):6.3f} s"
    )


async def set_latency(stack: SandboxStack, ms: int) -> None:
    assert stack.salesforce is not None
    assert stack.amplitude is not None
    async with httpx.AsyncClient(timeout=10) as http:
        for base_url in (stack.salesforce.base_url, stack.amplitude.base_url):
            response = await http.post(f"{base_url}/__sandbox/latency", json={"ms": ms})
            response.raise_for_status()
        (await http.post(f"{stack.amplitude.base_url}/__sandbox/reset")).raise_for_status()


async def measure_sfamp(
    stack: SandboxStack, ids: list[str], rate: float, every: int, transport: str
) -> dict[str, list[float]]:
    """``sfamp run --role all``: commit -> Amplitude, and its two legs through Kafka."""
    assert stack.salesforce is not None
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    settings = stack.settings(
        prefix,
        kafka={"consumer_group": f"{prefix}-deliver", "consumer_session_timeout_seconds": 3},
        amplitude={"transport": transport},
    )
    with tempfile.TemporaryDirectory() as tmp:
        mapping_file = Path(tmp) / "mapping.json"
        mapping_file.write_text(json.dumps(mapping(every)))
        async with serving(settings, mapping_file):
            committed = await write_changes(stack.salesforce.base_url, ids, rate, prefix)
            await poll(
                lambda: committed.keys() <= arrivals(stack, ids).keys(),
                120,
                "every change",
                interval=0.05,
            )
    seen, written = arrivals(stack, ids), await written_to_kafka(settings, set(committed))
    return {
        "commit -> Amplitude": [seen[name] - at for name, at in committed.items()],
        "  commit -> Kafka (ingest)": [written[name] - at for name, at in committed.items()],
        "  Kafka -> Amplitude (deliver)": [seen[name] - written[name] for name in committed],
    }


async def measure_naive(
    stack: SandboxStack, ids: list[str], rate: float, every: int
) -> list[float]:
    """The naive poller (query_all + the SDK every ``every`` s): commit -> Amplitude."""
    assert stack.salesforce is not None
    assert stack.amplitude is not None
    poller = NaivePoller(stack.salesforce.base_url, stack.amplitude.base_url, FIELDS, float(every))
    poller.start()
    try:
        await poll(lambda: poller.polls > 0, 60, "the naive poller's first poll", interval=0.05)
        committed = await write_changes(stack.salesforce.base_url, ids, rate, "naive")
        await poll(
            lambda: committed.keys() <= arrivals(stack, ids).keys(),
            120,
            "every change (naive)",
            interval=0.05,
        )
    finally:
        poller.stopping.set()
        await asyncio.to_thread(poller.join, 30)
    seen = arrivals(stack, ids)
    return [seen[name] - at for name, at in committed.items()]


async def run(changes: int, rate: float, every: int, latencies: list[int], transport: str) -> None:
    configure_logging("console", "warning")
    print(f"{changes} commits at {rate:g}/s, cadence every {every} s, sfamp transport {transport}")
    async with SandboxStack(salesforce_options={"poll_timeout": 5.0}) as stack:
        assert stack.salesforce is not None
        ids = seed(stack.salesforce.org, "Account", changes)
        for ms in latencies:
            print(f"latency {ms} ms")
            await set_latency(stack, ms)
            legs = await measure_sfamp(stack, ids, rate, every, transport)
            for label, values in legs.items():
                show(label if label.startswith(" ") else f"sfamp {label}", values)
            await set_latency(stack, ms)
            naive = await measure_naive(stack, ids, rate, every)
            show("naive commit -> Amplitude", naive)
            ours, theirs = percentile(legs["commit -> Amplitude"], 0.99), percentile(naive, 0.99)
            target = ""
            if ms >= TARGET_LATENCY_MS:
                target = f" (target < {TARGET_P99:g} s: {'PASS' if ours < TARGET_P99 else 'BELOW'})"
            ratio = theirs / ours
            print(
                f"  p99 sfamp {ours:.3f} s{target}; naive {theirs:.3f} s (naive/sfamp {ratio:.1f}x)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--changes", type=int, default=600, help="records renamed, once each")
    parser.add_argument("--rate", type=float, default=100.0, help="commits per second")
    parser.add_argument("--every", type=int, default=1, help="interval cadence, seconds")
    parser.add_argument(
        "--latencies",
        type=lambda text: [int(item) for item in text.split(",")],
        default=[0, 50],
        help="simulated round trips in ms, comma-separated (default 0,50)",
    )
    parser.add_argument(
        "--transport", choices=["groupidentify", "httpapi"], default="httpapi",
        help="SFAMP_AMPLITUDE__TRANSPORT for sfamp",
    )  # fmt: skip
    args = parser.parse_args()
    asyncio.run(run(args.changes, args.rate, args.every, args.latencies, args.transport))


if __name__ == "__main__":
    main()
