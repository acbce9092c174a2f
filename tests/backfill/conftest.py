"""Both sandboxes on free ports, settings that point at them, and the mappings the tests use."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.kafka.records import DlqEntry, decode_dlq_entry
from pipeline.transform.apply import PropertyChanges, changes_for
from pipeline.transform.envelope import Source
from pipeline.transform.reads import envelope_from_record
from pipeline.transform.schema import ObjectSchema
from sfamp_sandbox.amplitude import US_API_KEY, AmplitudeSandbox
from sfamp_sandbox.amplitude.identify import IdentifyLimits
from sfamp_sandbox.salesforce import SalesforceSandbox

# Seeding is deterministic: the second Account always has this external id.
BLOCKED_GROUP = "EXT-0000002"
PROPERTIES = {
    "Name": "name",
    "Industry": "industry",
    "AnnualRevenue": "annual_revenue",
    "NumberOfEmployees": "employees",
    "Regions__c": "regions",
    "Is_Active__c": "active",
    "Health_Score__c": "health",
    "Renewal_Date__c": "renewal",
    "LastModifiedDate": "modified",
    "BillingAddress": "billing",
}


def mapping(
    group_name_field: str = "Id",
    properties: dict[str, str] | None = None,
    group_type: str = "account",
    sfdc_object: str = "Account",
) -> MappingConfig:
    return MappingConfig.model_validate(
        {
            "sync_cadence": {"mode": "hourly"},
            "mappings": [
                {
                    "sfdc_object": sfdc_object,
                    "group_type": group_type,
                    "group_name_field": group_name_field,
                    "group_properties": [
                        {"sfdc_field": field, "amplitude_property": prop}
                        for field, prop in (properties or PROPERTIES).items()
                    ],
                }
            ],
        }
    )


@dataclass
class Sandboxes:
    salesforce: SalesforceSandbox
    amplitude: AmplitudeSandbox
    control: httpx.AsyncClient

    def settings(self, **sections: dict[str, Any]) -> Settings:
        salesforce = {
            "login_url": self.salesforce.base_url,
            "client_id": "sandbox-client",
            "client_secret": "sandbox-secret",
            "username": "admin@sandbox.example",
            "password": "sandbox",
            "timeout_seconds": 10,
            **sections.get("salesforce", {}),
        }
        amplitude = {
            "api_key": US_API_KEY,
            "base_url": self.amplitude.base_url,
            "retry_deadline_seconds": 2,
            "min_429_wait_seconds": 0.05,
            "timeout_seconds": 5,
            **sections.get("amplitude", {}),
        }
        kafka = sections.get("kafka", {})
        return Settings(_env_file=None, salesforce=salesforce, amplitude=amplitude, kafka=kafka)

    def environment(self, **extra: str) -> dict[str, str]:
        """SFAMP_* variables for a CLI subprocess; Kafka points at a closed port."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SFAMP_")}
        env.update(
            SFAMP_SALESFORCE__LOGIN_URL=self.salesforce.base_url,
            SFAMP_SALESFORCE__CLIENT_ID="sandbox-client",
            SFAMP_SALESFORCE__CLIENT_SECRET="sandbox-secret",
            SFAMP_SALESFORCE__USERNAME="admin@sandbox.example",
            SFAMP_SALESFORCE__PASSWORD="sandbox",
            SFAMP_AMPLITUDE__API_KEY=US_API_KEY,
            SFAMP_AMPLITUDE__BASE_URL=self.amplitude.base_url,
            SFAMP_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:9",
            **extra,
        )
        return env

    async def seed(self, sfdc_object: str, count: int) -> list[str]:
        response = await self.control.post(
            f"{self.salesforce.base_url}/__sandbox/seed",
            json={"object": sfdc_object, "count": count},
        )
        response.raise_for_status()
        return [str(i) for i in response.json()["ids"]]

    def groups(self) -> dict[tuple[str, str], dict[str, Any]]:
        return dict(self.amplitude.state.store("us").groups)

    @property
    def requests(self) -> int:
        return self.amplitude.state.request_count


@pytest.fixture
async def sandboxes() -> AsyncIterator[Sandboxes]:
    limits = IdentifyLimits(blocked_group_values=frozenset({BLOCKED_GROUP}))
    async with (
        SalesforceSandbox(bulk_job_seconds=0.0, api_max=1_000_000) as salesforce,
        AmplitudeSandbox(limits=limits) as amplitude,
        httpx.AsyncClient(timeout=10) as control,
    ):
        yield Sandboxes(salesforce, amplitude, control)


@pytest.fixture
def mapping_file(tmp_path: Path) -> Path:
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(mapping().model_dump(mode="json")))
    return path


def expected_groups(
    records: list[dict[str, Any]], config: MappingConfig, schema: ObjectSchema, source: Source
) -> dict[tuple[str, str], dict[str, Any]]:
    """What Amplitude should hold: the records through the stream's own transform."""
    expected: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        envelope = envelope_from_record("Account", record, source=source, now_ms=1)
        outcome = changes_for(envelope, config.mappings[0], schema)
        assert isinstance(outcome, PropertyChanges)
        expected.setdefault(outcome.key, {}).update(outcome.set)
    return expected


class CliRun:
    """``sfamp backfill`` in a subprocess, the way a user runs it (no TTY)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stderr_lines: list[str] = []

    @classmethod
    async def start(cls, args: list[str], env: dict[str, str], cwd: Path) -> CliRun:
        code = "import typer; from pipeline.cli.backfill_cmd import backfill; typer.run(backfill)"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            *args,
            env={**env, "PYTHONPATH": str(Path(__file__).parents[2])},
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def wait_for_lines(self, event: str, count: int) -> None:
        """Read stderr until ``count`` log lines with ``event`` have appeared."""
        assert self.process.stderr is not None
        seen = 0
        while seen < count:
            line = (await asyncio.wait_for(self.process.stderr.readline(), 30)).decode()
            if not line:
                raise AssertionError("process ended early:\n" + "".join(self.stderr_lines))
            self.stderr_lines.append(line)
            seen += f'"event": "{event}"' in line

    async def finish(self) -> tuple[int, str, str]:
        out, err = await asyncio.wait_for(self.process.communicate(), 60)
        stderr = "".join(self.stderr_lines) + err.decode()
        return int(self.process.returncode or 0), out.decode(), stderr


def log_events(stderr: str) -> list[dict[str, Any]]:
    events = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


async def read_dlq(settings: Settings) -> list[DlqEntry]:
    """Every entry of the DLQ topic (all partitions), read without a consumer group."""
    topic = f"{settings.kafka.topic_prefix}.dlq"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            await consumer.force_metadata_update()
            found = consumer.partitions_for_topic(topic) or ()
            partitions = [TopicPartition(topic, p) for p in found]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        entries: list[DlqEntry] = []
        for partition in partitions:
            while await consumer.position(partition) < ends[partition]:
                batch = await consumer.getmany(partition, timeout_ms=1000)
                entries += [decode_dlq_entry(r.value) for r in batch.get(partition, [])]
        return entries
    finally:
        await consumer.stop()
