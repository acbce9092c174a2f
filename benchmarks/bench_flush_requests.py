"""Amplitude requests per flush of the deliver pump, against ceil(changed groups / 1024).

Runs ``sfamp run --role deliver`` in-process (the embedded broker, both
sandboxes) with a daily cadence on an injected clock. For each shape of change
and each ``--sizes`` count it writes that many Account changes, one per record,
waits until the pump holds them as pending groups, moves the clock to the slot
and counts the ``/groupidentify`` requests in the Amplitude sandbox's log.

Amplitude allows 1024 identifications and 1024 group property keys per request
(the sandbox reads the key limit as summed over the request, the stricter
reading), so the client packs ``floor(1024 / keys per group)`` groups a request:
the count equals ``ceil(groups / 1024)`` only when each group carries one key.

    .venv/bin/python benchmarks/bench_flush_requests.py [--sizes 1,1024,1025,5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from support import DAILY, account_mapping, poll

from pipeline.amplitude import ChunkLimits
from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.producer import ChangeProducer
from pipeline.logs import configure_logging
from pipeline.runtime.service import Service, serving
from pipeline.sandbox_stack import SandboxStack
from pipeline.transform.apply import PropertyChanges, changes_for_config
from pipeline.transform.envelope import ChangeEnvelope, encode
from pipeline.transform.schema import schema_from_describe
from sfamp_sandbox.salesforce.describe import describe_object
from sfamp_sandbox.salesforce.objects import ACCOUNT

START = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)  # 23 h before the first daily slot
# examples/mapping.json with a daily cadence: six mapped fields.
SIX = [
    ("Name", "name"),
    ("Industry", "industry"),
    ("AnnualRevenue", "annual_revenue"),
    ("NumberOfEmployees", "employees"),
    ("Type", "type"),
    ("BillingCountry", "billing_country"),
]
SCHEMA = schema_from_describe(describe_object(ACCOUNT, "62.0"))
VALUES: dict[str, Any] = {
    "Name": "Acme",
    "Industry": "Energy",
    "AnnualRevenue": 1_250_000.0,
    "NumberOfEmployees": 120,
    "Type": "Partner",
    "BillingAddress": {"Country": "France"},
}


@dataclass(frozen=True)
class Shape:
    """One kind of change: how many mapped fields it touches (``None``: a CREATE)."""

    label: str
    fields: int | None

    def envelope(self, record_id: str, seq: int) -> ChangeEnvelope:
        common: dict[str, Any] = {
            "object": "Account",
            "record_id": record_id,
            "commit_ts": 1_767_225_600_000 + seq,
            "commit_number": 1_100_670_840_000 + seq,
            "sequence_number": 1,
            "channel": "/data/AccountChangeEvent",
        }
        if self.fields is None:
            return ChangeEnvelope(op="create", fields=VALUES, **common)
        names = [name for name, _ in SIX[: self.fields]]
        fields = {
            ("BillingAddress" if n == "BillingCountry" else n): VALUES[
                "BillingAddress" if n == "BillingCountry" else n
            ]
            for n in names
        }
        changed = tuple("BillingAddress.Country" if n == "BillingCountry" else n for n in names)
        return ChangeEnvelope(op="update", changed=changed, fields=fields, **common)


@dataclass(frozen=True)
class Run:
    """One mapping, and the shapes of change flushed under it."""

    label: str
    properties: list[tuple[str, str]]
    on_delete: str
    shapes: list[Shape]

    def mapping(self) -> dict[str, Any]:
        return account_mapping(dict(self.properties), DAILY, on_delete=self.on_delete)

    def keys(self, shape: Shape) -> int:
        """Property keys one group carries after this change: what the client packs by."""
        config = MappingConfig.model_validate(self.mapping())
        outcomes = changes_for_config(shape.envelope("001RQ000000000000A", 0), config, SCHEMA)
        return sum(len(o.set) + len(o.unset) for _, o in outcomes if isinstance(o, PropertyChanges))


RUNS = (
    Run(
        "examples/mapping.json: 6 properties, on_delete=mark",
        SIX,
        "mark",
        [
            Shape("update of 1 mapped field", 1),
            Shape("update of 2 mapped fields", 2),
            Shape("create (+ sfdc_deleted=false)", None),
        ],
    ),
    Run(
        "1 property (Name), on_delete=ignore (the default)",
        SIX[:1],
        "ignore",
        [Shape("update of Name", 1), Shape("create", None)],
    ),
)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def produce(
    producer: ChangeProducer, settings: Settings, envelopes: list[ChangeEnvelope]
) -> None:
    topic = f"{settings.kafka.topic_prefix}.changes.Account"
    await producer.send_all([(topic, e.kafka_key, encode(e)) for e in envelopes])


def expected_requests(groups: int, keys: int, limits: ChunkLimits) -> int:
    per_request = min(limits.max_identifications, limits.max_property_keys // keys)
    return math.ceil(groups / per_request)


async def flush_once(
    stack: SandboxStack, service: Service, clock: FakeClock, groups: int
) -> tuple[int, list[int], int]:
    """Move the clock to the slot; the requests the sandbox logged, and the client's count."""
    assert stack.amplitude is not None
    assert service.deliver is not None
    deliver, state = service.deliver, stack.amplitude.state
    await poll(lambda: service.state.pending_groups == groups, 60, f"{groups} pending groups")
    before, flushes = state.request_count, deliver.flushes
    assert service.state.next_flush_at is not None
    clock.now = service.state.next_flush_at
    await poll(lambda: deliver.flushes > flushes, 60, "the flush")
    logged = state.request_count - before
    sizes = [entry.get("identifications", 0) for entry in state.recent_requests(logged)]
    assert service.state.last_flush is not None
    return logged, sizes, service.state.last_flush.requests


async def run_mapping(stack: SandboxStack, run: Run, sizes: list[int], tmp: Path) -> None:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    settings = stack.settings(
        prefix,
        # A consumer group of its own per run; a short session makes the join quick.
        kafka={
            "consumer_group": f"{prefix}-deliver",
            "consumer_session_timeout_seconds": 3,
            "metadata_max_age_seconds": 2,
        },
        # What this script counts: /groupidentify requests (SFAMP_AMPLITUDE__TRANSPORT).
        amplitude={"transport": "groupidentify"},
    )
    await ensure_topics(settings.kafka, sfamp_topics(settings.kafka, ["Account"]))
    mapping = tmp / f"{uuid.uuid4().hex}.json"
    mapping.write_text(json.dumps(run.mapping()))
    clock, limits, seq = FakeClock(START), ChunkLimits(), 0
    print(f"{run.label}")
    async with (
        ChangeProducer(settings.kafka) as producer,
        serving(settings, mapping, role="deliver", clock=clock) as service,
    ):
        for shape in run.shapes:
            keys = run.keys(shape)
            for groups in sizes:
                ids = [f"001RQ{seq + n:013d}" for n in range(groups)]
                envelopes = [shape.envelope(r, seq + n) for n, r in enumerate(ids)]
                await produce(producer, settings, envelopes)
                seq += groups
                logged, per_request, client = await flush_once(stack, service, clock, groups)
                formula = math.ceil(groups / limits.max_identifications)
                packed = expected_requests(groups, keys, limits)
                if logged == formula:
                    verdict = "= ceil(groups/1024)"
                elif logged == packed:
                    verdict = f"key-bound: ceil(groups/{limits.max_property_keys // keys})"
                else:
                    verdict = f"UNEXPECTED: {packed} expected"
                shown = ",".join(str(n) for n in sorted(set(per_request), reverse=True))
                print(
                    f"  {shape.label:<30} {keys:>4} {groups:>6,} {logged:>5} {client:>6} "
                    f"{formula:>9} {shown:>12}  {verdict}"
                )


async def run(sizes: list[int]) -> None:
    configure_logging("console", "warning")
    started = time.perf_counter()
    async with SandboxStack() as stack:
        header = (
            f"  {'change':<30} {'keys':>4} {'groups':>6} {'reqs':>5} {'client':>6} "
            f"{'ceil/1024':>9} {'ids/request':>12}"
        )
        print("requests per flush: logged by the Amplitude sandbox (reqs), reported by the client")
        with tempfile.TemporaryDirectory() as tmp:
            for index, mapping_run in enumerate(RUNS):
                if index == 0:
                    print(header)
                await run_mapping(stack, mapping_run, sizes, Path(tmp))
    print(f"({time.perf_counter() - started:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--sizes", default="1,1024,1025,5000", help="changed groups per flush, comma-separated"
    )
    args = parser.parse_args()
    asyncio.run(run([int(size) for size in args.sizes.split(",")]))


if __name__ == "__main__":
    main()
