"""The deliver pump keeps its cadence: interval flushes on time, daily and hourly never early."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.producer import ChangeProducer
from pipeline.sandbox_stack import SandboxStack
from pipeline.transform.envelope import ChangeEnvelope, encode
from tests.runtime.conftest import (
    MAPPING,
    deliver_turns,
    group,
    running,
    settings_for,
    wait_until,
)
from tests.support.clock import FakeClock


def _mapping(tmp_path: Path, cadence: dict[str, Any]) -> Path:
    path = tmp_path / "mapping.json"
    # Only the Id-named mapping: these made-up records need no lookup in Salesforce.
    only_by_id = {**MAPPING, "sync_cadence": cadence, "mappings": MAPPING["mappings"][:1]}
    path.write_text(json.dumps(only_by_id))
    return path


async def _produce_changes(settings: Any, count: int) -> list[str]:
    await ensure_topics(settings.kafka, sfamp_topics(settings.kafka, ["Account"]))
    ids = [f"001C{n:014d}" for n in range(count)]
    async with ChangeProducer(settings.kafka) as producer:
        await producer.send_all(
            [
                (
                    f"{settings.kafka.topic_prefix}.changes.Account",
                    record_id.encode(),
                    encode(
                        ChangeEnvelope(
                            object="Account",
                            record_id=record_id,
                            op="update",
                            commit_ts=1_700_000_000_000,
                            changed=("Name",),
                            fields={"Name": f"Company {record_id}"},
                        )
                    ),
                )
                for record_id in ids
            ]
        )
    return ids


@pytest.mark.parametrize(
    ("cadence", "start", "due"),
    [
        ({"mode": "daily", "at": "06:30"}, "2026-11-29T10:00:00", "2026-11-30T06:30:00"),
        ({"mode": "hourly"}, "2026-11-29T10:15:00", "2026-11-29T11:00:00"),
    ],
)
async def test_daily_and_hourly_cadences_wait_for_their_slot(
    stack: SandboxStack,
    topic_prefix: str,
    tmp_path: Path,
    cadence: dict[str, Any],
    start: str,
    due: str,
) -> None:
    settings = settings_for(stack, topic_prefix)
    clock = FakeClock(datetime.fromisoformat(start).replace(tzinfo=UTC))
    ids = await _produce_changes(settings, 20)
    mapping = _mapping(tmp_path, cadence)
    async with running(settings, mapping, role="deliver", clock=clock) as service:
        assert service.deliver is not None
        due_at = datetime.fromisoformat(due).replace(tzinfo=UTC)
        assert service.state.next_flush_at == due_at
        # Consumed and coalesced, but not sent: one second before the slot, still nothing.
        await wait_until(lambda: service.state.pending_groups == 20, what="the coalesced window")
        clock.now = due_at - timedelta(seconds=1)
        await deliver_turns(service, 3)
        assert service.deliver.flushes == 0
        assert group(stack, "account", ids[0]) is None

        clock.now = due_at
        await wait_until(lambda: all(group(stack, "account", r) for r in ids), what="the flush")
        await wait_until(lambda: service.state.last_flush is not None, what="the flush recorded")
        assert service.deliver.flushes == 1
        assert service.state.last_flush is not None
        assert service.state.last_flush.groups == 20
        assert service.state.last_flush.requests == 1


async def test_an_interval_cadence_flushes_every_n_seconds(
    stack: SandboxStack, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    start = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    clock = FakeClock(start)
    mapping = _mapping(tmp_path, {"mode": "interval", "every_seconds": 30})
    ids = await _produce_changes(settings, 5)
    async with running(settings, mapping, role="deliver", clock=clock) as service:
        assert service.deliver is not None
        await wait_until(lambda: service.state.pending_groups == 5)
        clock.now = start + timedelta(seconds=29)
        await deliver_turns(service, 3)
        assert service.deliver.flushes == 0
        clock.now = start + timedelta(seconds=30)
        await wait_until(lambda: all(group(stack, "account", r) for r in ids))
        # The next slot is published once the flush is recorded, a moment after Amplitude has it.
        await wait_until(
            lambda: service.state.next_flush_at == start + timedelta(seconds=60),
            what=f"the next slot at +60s (published: {service.state.next_flush_at})",
        )
