"""Fixtures for the service tests: Kafka, both sandboxes, and a service running in-process."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.config.settings import Settings
from pipeline.kafka.records import DlqEntry, decode_dlq_entry
from pipeline.runtime.service import serving
from pipeline.runtime.state import FlushResult, ServiceState
from pipeline.sandbox_stack import SandboxStack
from sfamp_sandbox.amplitude.identify import IdentifyLimits

REJECTED_VALUE = "REJECT-ME"

MAPPING: dict[str, Any] = {
    "version": 1,
    "sync_cadence": {"mode": "interval", "every_seconds": 1},
    "mappings": [
        {
            "sfdc_object": "Account",
            "group_type": "account",
            "group_name_field": "Id",
            "group_properties": [
                {"sfdc_field": "Name", "amplitude_property": "name"},
                {"sfdc_field": "Industry", "amplitude_property": "industry"},
                {"sfdc_field": "AnnualRevenue", "amplitude_property": "annual_revenue"},
                {"sfdc_field": "Regions__c", "amplitude_property": "regions"},
                {"sfdc_field": "BillingCountry", "amplitude_property": "billing_country"},
            ],
            "on_delete": "mark",
        },
        {
            "sfdc_object": "Account",
            "group_type": "account_ext",
            "group_name_field": "External_Id__c",
            "group_properties": [
                {"sfdc_field": "Name", "amplitude_property": "name"},
                {"sfdc_field": "Tier__c", "amplitude_property": "tier"},
            ],
            "on_delete": "unset",
        },
    ],
}


@pytest.fixture
async def stack(kafka_bootstrap: str) -> AsyncIterator[SandboxStack]:
    async with SandboxStack(
        kafka_bootstrap=kafka_bootstrap,
        salesforce_options={"bulk_job_seconds": 0.0, "poll_timeout": 5.0},
        amplitude_options={
            "limits": IdentifyLimits(blocked_group_values=frozenset({REJECTED_VALUE}))
        },
    ) as started:
        yield started


def settings_for(stack: SandboxStack, topic_prefix: str, **sections: dict[str, Any]) -> Settings:
    """Fast timings: short sessions, short retry deadlines, quick drains."""
    defaults: dict[str, dict[str, Any]] = {
        "kafka": {
            "consumer_session_timeout_seconds": 3,
            "metadata_max_age_seconds": 2,
            "partitions": 3,
        },
        "amplitude": {
            "retry_deadline_seconds": 3,
            "min_429_wait_seconds": 0.05,
            "timeout_seconds": 2,
        },
        "runtime": {"drain_timeout_seconds": 5},
    }
    for name, values in sections.items():
        defaults[name] = {**defaults.get(name, {}), **values}
    return stack.settings(topic_prefix, **defaults)


@pytest.fixture
def mapping_file(tmp_path: Path) -> Path:
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(MAPPING))
    return path


# The service in a task of the test's loop, yielded once ready (subscribed and joined).
running = serving


async def wait_until(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool],
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    what: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def flush_mark(state: ServiceState) -> FlushResult | None:
    """The newest of the recent flushes, to find those after it (:func:`flushes_after`)."""
    return state.recent_flushes[-1] if state.recent_flushes else None


def flushes_after(state: ServiceState, mark: FlushResult | None) -> list[FlushResult]:
    """The recent flush results after ``mark`` (:func:`flush_mark` taken before), oldest
    first; all that are kept when ``mark`` is None or no longer among them."""
    recent = list(state.recent_flushes)
    for index in range(len(recent) - 1, -1, -1):
        if recent[index] is mark:
            return recent[index + 1 :]
    return recent


async def deliver_turns(service: Any, turns: int, *, timeout: float = 30.0) -> None:
    """Wait until the deliver loop has begun ``turns`` new turns.

    Each turn starts with a heartbeat and checks the cadence against the clock, so after
    two new turns at least one whole turn has seen whatever the test set before calling:
    the state to wait for before asserting that something did *not* happen.
    """
    seen = service.state.heartbeats.get("deliver")
    counted = 0

    def advanced() -> bool:
        nonlocal seen, counted
        beat = service.state.heartbeats.get("deliver")
        if beat != seen:
            seen, counted = beat, counted + 1
        return counted >= turns

    await wait_until(advanced, timeout=timeout, interval=0.01, what=f"{turns} deliver turns")


class Org:
    """The Salesforce sandbox's control API, as a user making changes in the org would."""

    def __init__(self, stack: SandboxStack) -> None:
        assert stack.salesforce is not None
        self.sandbox = stack.salesforce
        self.http = httpx.AsyncClient(base_url=stack.salesforce.base_url, timeout=10)

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.http.request(method, "/__sandbox" + path, json=body)
        assert response.status_code < 300, response.text
        return response.json()

    async def create(self, obj: str, **fields: Any) -> str:
        return str((await self._call("POST", f"/records/{obj}", fields))["id"])

    async def update(self, obj: str, record_id: str, **fields: Any) -> None:
        await self._call("PATCH", f"/records/{obj}/{record_id}", fields)

    async def delete(self, obj: str, record_id: str) -> None:
        await self._call("DELETE", f"/records/{obj}/{record_id}")

    async def undelete(self, obj: str, record_id: str) -> None:
        await self._call("POST", f"/records/{obj}/{record_id}/undelete")

    async def multi_update(self, obj: str, ids: list[str], **fields: Any) -> None:
        await self._call(
            "POST", "/events", {"type": "multi_update", "object": obj, "ids": ids, "fields": fields}
        )

    async def seed(self, obj: str, count: int) -> list[str]:
        answer = await self._call("POST", "/seed", {"object": obj, "count": count})
        return [str(i) for i in answer["ids"]]

    async def gap(self, obj: str, ids: list[str], change_type: str = "GAP_UPDATE") -> None:
        await self._call(
            "POST",
            "/events",
            {"type": "gap", "object": obj, "ids": ids, "change_type": change_type},
        )

    async def gap_overflow(self, obj: str) -> None:
        await self._call("POST", "/events", {"type": "gap_overflow", "object": obj})

    async def fault(self, kind: str, count: int = 1) -> None:
        await self._call("POST", "/faults", {"kind": kind, "count": count})

    async def advance_clock(self, seconds: float) -> None:
        await self._call("POST", "/clock", {"advance_seconds": seconds})

    async def record(self, obj: str, record_id: str) -> dict[str, Any]:
        return dict(await self._call("GET", f"/records/{obj}/{record_id}"))

    async def close(self) -> None:
        await self.http.aclose()


@pytest.fixture
async def org(stack: SandboxStack) -> AsyncIterator[Org]:
    handle = Org(stack)
    yield handle
    await handle.close()


def groups(stack: SandboxStack) -> dict[tuple[str, str], dict[str, Any]]:
    """Every group the Amplitude sandbox holds, with its properties."""
    assert stack.amplitude is not None
    return dict(stack.amplitude.state.store("us").groups)


def group(stack: SandboxStack, group_type: str, group_value: str) -> dict[str, Any] | None:
    return groups(stack).get((group_type, group_value))


async def read_dlq(settings: Settings) -> list[DlqEntry]:
    """Every entry in the DLQ topic, read without a consumer group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tp = TopicPartition(f"{settings.kafka.topic_prefix}.dlq", 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.seek_to_beginning(tp)
        entries: list[DlqEntry] = []
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            entries += [decode_dlq_entry(record.value) for record in batch.get(tp, [])]
        return entries
    finally:
        await consumer.stop()
