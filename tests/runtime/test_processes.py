"""``sfamp run`` as real processes: killed and restarted under faults, and scaled out."""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.sandbox_stack import SandboxStack
from tests.conftest import docker_engine_answers, embedded_broker
from tests.runtime.conftest import Org, groups, wait_until
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def kafka_bootstrap(kafka_bootstrap: str) -> Iterator[str]:
    """A broker of this module's own when the embedded one is used.

    These tests SIGKILL Kafka clients mid-request again and again; the embedded
    broker keeps their half-open sessions, so the modules after this one get a
    fresh broker rather than one that may still be busy with the dead ones.
    """
    if os.environ.get("SFAMP_TEST_KAFKA_BOOTSTRAP") or docker_engine_answers():
        yield kafka_bootstrap
        return
    with embedded_broker() as bootstrap:
        yield bootstrap


SIMPLE_MAPPING = {
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
            ],
        }
    ],
}
INDUSTRIES = ["Banking", "Energy", "Retail", None]


def _environment(stack: SandboxStack, topic_prefix: str, workdir: Path) -> dict[str, str]:
    mapping = workdir / "mapping.json"
    mapping.write_text(json.dumps(SIMPLE_MAPPING))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFAMP_")}
    env.update(stack.environment(topic_prefix))
    env.update(
        {
            "SFAMP_MAPPING_FILE": str(mapping),
            "SFAMP_KAFKA__PARTITIONS": "6",
            "SFAMP_KAFKA__CONSUMER_SESSION_TIMEOUT_SECONDS": "3",
            "SFAMP_KAFKA__METADATA_MAX_AGE_SECONDS": "2",
            "SFAMP_AMPLITUDE__RETRY_DEADLINE_SECONDS": "3",
            "SFAMP_AMPLITUDE__MIN_429_WAIT_SECONDS": "0.05",
            "SFAMP_AMPLITUDE__TIMEOUT_SECONDS": "1",
            "SFAMP_RUNTIME__HEALTH_HOST": "127.0.0.1",
            "SFAMP_RUNTIME__DRAIN_TIMEOUT_SECONDS": "5",
            "SFAMP_RUNTIME__LOG_FORMAT": "json",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        }
    )
    return env


async def _amplitude_fault(stack: SandboxStack, kind: str, count: int, **extra: Any) -> None:
    assert stack.amplitude is not None
    async with httpx.AsyncClient(base_url=stack.amplitude.base_url) as http:
        answer = await http.post("/__sandbox/faults", json={"kind": kind, "count": count, **extra})
    assert answer.status_code < 300, answer.text


async def _salesforce_state(org: Org, ids: list[str]) -> dict[str, dict[str, Any]]:
    expected = {}
    for record_id in ids:
        record = await org.record("Account", record_id)
        properties = {"name": record["Name"]}
        if record.get("Industry") is not None:
            properties["industry"] = record["Industry"]
        expected[record_id] = properties
    return expected


async def _in_step(stack: SandboxStack, org: Org, ids: list[str]) -> None:
    expected = await _salesforce_state(org, ids)

    def matches() -> bool:
        held = groups(stack)
        return all(held.get(("account", rid)) == props for rid, props in expected.items())

    try:
        await wait_until(matches, timeout=90, what="Amplitude to equal Salesforce")
    except AssertionError:
        held = groups(stack)
        wrong = {
            rid: (props, held.get(("account", rid)))
            for rid, props in expected.items()
            if held.get(("account", rid)) != props
        }
        raise AssertionError(
            f"{len(wrong)} groups differ, e.g. {list(wrong.items())[:3]}"
        ) from None


async def test_no_update_is_lost_when_killed_and_faulted(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    env = _environment(stack, topic_prefix, tmp_path)
    service = ServiceProcess(env, tmp_path, "all", "service").start()
    rng = random.Random(7)
    try:
        await service.ready()
        ids = [await org.create("Account", Name=f"Company {n}") for n in range(15)]

        async def churn() -> None:
            for step in range(150):
                record_id = rng.choice(ids)
                await org.update(
                    "Account",
                    record_id,
                    Name=f"Company {record_id[-4:]} v{step}",
                    Industry=rng.choice(INDUSTRIES),
                )
                await asyncio.sleep(0.04)

        changes = asyncio.create_task(churn())
        for round_ in range(3):
            await asyncio.sleep(rng.uniform(0.8, 2.0))
            service.kill()  # SIGKILL: no drain, no goodbye
            if round_ == 0:
                await _amplitude_fault(stack, "429", 3, retry_after=0)
            elif round_ == 1:
                await _amplitude_fault(stack, "503", 3)
                await _amplitude_fault(stack, "timeout", 2, delay_seconds=2)
            else:
                await _amplitude_fault(stack, "500_after_apply", 2)
            service.start()
            await service.ready()
            await org.fault("drop_long_poll", 1)
        await changes
        await _in_step(stack, org, ids)
    finally:
        service.kill()


async def test_three_deliver_processes_share_the_partitions(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    env = _environment(stack, topic_prefix, tmp_path)
    ingest = ServiceProcess(env, tmp_path, "ingest", "ingest").start()
    delivers = [ServiceProcess(env, tmp_path, "deliver", f"deliver-{n}").start() for n in range(3)]
    try:
        for process in [ingest, *delivers]:
            await process.ready()

        async def spread() -> bool:
            owned = [set((await d.status())["partitions"]) for d in delivers]
            every = set().union(*owned)
            return all(owned) and len(every) == 6 and sum(map(len, owned)) == 6

        await wait_until(spread, timeout=60, what="the partitions to spread over three")
        ids = [
            await org.create("Account", Name=f"Spread {n}", Industry="Energy") for n in range(60)
        ]
        await _in_step(stack, org, ids)

        async def all_flushed_ok() -> bool:
            flushed = [(await d.status())["last_flush"] for d in delivers]
            return all(flush and flush["ok"] for flush in flushed)

        # Amplitude holds the groups a moment before each process records its flush.
        await wait_until(all_flushed_ok, what="every deliver process to record a good flush")
    finally:
        everyone = [ingest, *delivers]
        try:
            codes = [await process.terminate() for process in everyone]
        finally:
            for process in everyone:
                process.kill()
    assert codes == [0, 0, 0, 0]
