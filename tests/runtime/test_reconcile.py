"""The reconcile against the sandboxes and the real broker, with the service delivering.

The sandbox's ``Revenue_Per_Employee__c`` is a formula of ``AnnualRevenue`` and
``NumberOfEmployees``. Changing ``NumberOfEmployees`` with ``"emit_events": false``
changes the formula the way Salesforce recalculates one (or a ``TODAY()`` formula
moves): no change event, only ``SystemModstamp``. Only a reconcile can see it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.kafka.producer import ChangeProducer
from pipeline.runtime.backfill import ReadOptions, StopRequest
from pipeline.runtime.backfill.checkpoint import CheckpointFile
from pipeline.runtime.reconcile.checkpoint import checkpoint_status
from pipeline.runtime.reconcile.report import ObjectReconcile, ReconcileSummary
from pipeline.runtime.reconcile.run import run_reconcile
from pipeline.salesforce.client import SalesforceClient
from pipeline.sandbox_stack import SandboxStack
from tests.runtime.conftest import Org, group, running, settings_for, wait_until
from tests.support.ports import unused_port

MAPPING: dict[str, Any] = {
    "version": 1,
    "sync_cadence": {"mode": "interval", "every_seconds": 1},
    "reconcile": {"mode": "off"},
    "mappings": [
        {
            "sfdc_object": "Account",
            "group_type": "account",
            "group_name_field": "Id",
            "group_properties": [
                {"sfdc_field": "Name", "amplitude_property": "name"},
                {"sfdc_field": "Revenue_Per_Employee__c", "amplitude_property": "per_employee"},
            ],
        }
    ],
}
CONFIG = MappingConfig.model_validate(MAPPING)


async def amplitude_requests(stack: SandboxStack) -> int:
    """Requests the Amplitude sandbox has answered, from its control API."""
    assert stack.amplitude is not None
    async with httpx.AsyncClient(base_url=stack.amplitude.base_url) as http:
        answer = await http.get("/__sandbox/requests", params={"limit": 1})
    requests = answer.json()["requests"]
    return int(requests[-1]["id"]) if requests else 0


def per_employee(stack: SandboxStack, account: str) -> Any:
    return (group(stack, "account", account) or {}).get("per_employee")


async def everything_delivered(settings: Settings) -> bool:
    """Deliver has committed every message of the changes topic (ends read from messages)."""
    topic = f"{settings.kafka.topic_prefix}.changes.Account"
    partitions = [TopicPartition(topic, n) for n in range(settings.kafka.partitions)]
    reader = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=settings.kafka.consumer_group,
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        committed = {tp.partition: await reader.committed(tp) for tp in partitions}
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        ends: dict[int, int] = {}
        while batch := await reader.getmany(timeout_ms=300):
            for tp, records in batch.items():
                ends[tp.partition] = records[-1].offset + 1
    finally:
        await reader.stop()
    return all(committed.get(p) == end for p, end in ends.items())


class StopAfterFirstBatch:
    """Progress that stops the run once its first batch is written (and checkpointed)."""

    def __init__(self, stop: StopRequest) -> None:
        self.stop = stop

    def start_object(
        self, sfdc_object: str, total: int | None, method: str, *, done: int = 0
    ) -> None:
        return None

    def advance(self, sfdc_object: str, rows: int, properties: int) -> None:
        self.stop.set("SIGTERM")

    def catching_up(self, sfdc_object: str, /) -> None:
        return None

    def finish_object(self, item: ObjectReconcile) -> None:
        return None


class StopAfterBatches(StopAfterFirstBatch):
    """Progress that stops the run once ``batches`` batches are written."""

    def __init__(self, stop: StopRequest, batches: int) -> None:
        super().__init__(stop)
        self.left = batches

    def advance(self, sfdc_object: str, rows: int, properties: int) -> None:
        self.left -= 1
        if self.left == 0:
            self.stop.set("SIGTERM")


def saved_entry(summary: ReconcileSummary) -> dict[str, Any]:
    """The object's entry in the checkpoint the run of ``summary`` left."""
    [saved] = json.loads(Path(summary.checkpoint).read_text())["objects"].values()
    return dict(saved)


def bulk_jobs(stack: SandboxStack) -> dict[str, Any]:
    """The Salesforce sandbox's Bulk jobs by id (a live view)."""
    assert stack.salesforce is not None
    return stack.salesforce.state.jobs.jobs


async def test_a_run_resumed_after_its_snapshot_deletes_the_snapshot_job(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(stack, topic_prefix, runtime={"state_dir": str(tmp_path)})
    for n in range(4):
        await org.create("Account", Name=f"A{n}", AnnualRevenue=1000, NumberOfEmployees=10)
    pages = ReadOptions(api="bulk", max_records=2, batch_rows=2)
    stop = StopRequest()
    # Stopped once the snapshot's second and last batch is written: before its catch-up.
    first = await run_reconcile(settings, CONFIG, options=pages, stop=stop,
                                progress=StopAfterBatches(stop, 2))  # fmt: skip
    assert first.interrupted == "SIGTERM"
    assert first.objects[0].records_read == 4
    saved = saved_entry(first)
    assert saved["position"]["finished"], saved
    assert not saved["complete"], saved
    jobs = bulk_jobs(stack)
    snapshot_job = saved["position"]["job_id"]
    assert snapshot_job in jobs

    second = await run_reconcile(settings, CONFIG, options=pages)

    assert second.resumed
    assert second.completed, second.error
    assert snapshot_job not in jobs, "the resumed run left the snapshot's Bulk job behind"


async def test_a_snapshot_resumed_another_way_deletes_the_stopped_runs_job(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(stack, topic_prefix, runtime={"state_dir": str(tmp_path)})
    for n in range(4):
        await org.create("Account", Name=f"A{n}", AnnualRevenue=1000, NumberOfEmployees=10)
    stop = StopRequest()
    first = await run_reconcile(
        settings, CONFIG, options=ReadOptions(api="bulk", max_records=2, batch_rows=2),
        stop=stop, progress=StopAfterFirstBatch(stop),
    )  # fmt: skip
    assert first.interrupted == "SIGTERM"
    jobs = bulk_jobs(stack)
    stopped_job = saved_entry(first)["position"]["job_id"]
    assert stopped_job in jobs

    # Read again through REST (as when the old job can no longer be read).
    second = await run_reconcile(settings, CONFIG, options=ReadOptions(api="rest"))

    assert second.completed, second.error
    assert stopped_job not in jobs, "the resumed run left the stopped run's Bulk job behind"


async def test_a_run_stopped_while_its_job_runs_aborts_and_deletes_it(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(stack, topic_prefix, runtime={"state_dir": str(tmp_path)})
    await org.create("Account", Name="A", AnnualRevenue=1000, NumberOfEmployees=10)
    assert stack.salesforce is not None
    jobs = stack.salesforce.state.jobs
    jobs.job_seconds = 600.0  # the job stays in progress
    before = set(jobs.jobs)
    stop = StopRequest()
    run = asyncio.create_task(
        run_reconcile(settings, CONFIG, options=ReadOptions(api="bulk"), stop=stop)
    )
    await wait_until(lambda: set(jobs.jobs) != before or run.done(), what="the Bulk job")
    stop.set("SIGTERM")
    first = await run

    assert first.interrupted == "SIGTERM", first.error
    assert set(jobs.jobs) == before, "the stopped run left its running Bulk job behind"


class ChangeInFirstRound(httpx.AsyncBaseTransport):
    """Real HTTP; the catch-up's first round finds ``record_id`` changed (through the
    control API); with ``stop``, its second read sets it and waits to be cancelled."""

    def __init__(self, org: Org, record_id: str, stop: StopRequest | None = None) -> None:
        self._http = httpx.AsyncHTTPTransport()
        self._org, self._record_id, self._stop = org, record_id, stop
        self.rounds = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "SystemModstamp >=" in request.url.params.get("q", ""):
            self.rounds += 1
            if self.rounds == 1:
                await self._org.update("Account", self._record_id, NumberOfEmployees=20)
            elif self._stop is not None:
                await stopped(self._stop)
        return await self._http.handle_async_request(request)

    async def aclose(self) -> None:
        await self._http.aclose()


class StopInWrite(ChangeProducer):
    """The real producer, but a write made while ``when()`` holds sets ``stop`` and waits
    to be cancelled instead."""

    def __init__(self, settings: Settings, stop: StopRequest, when: Callable[[], bool]):
        super().__init__(settings.kafka)
        self._stop, self._when = stop, when

    async def send_all(self, messages: Any) -> None:
        if self._when():
            await stopped(self._stop)
        await super().send_all(messages)


async def stopped(stop: StopRequest) -> None:
    stop.set("SIGTERM")
    await asyncio.Event().wait()  # until the run is cancelled


async def test_a_run_resumed_during_its_catch_up_neither_reads_again_nor_leaves_the_job(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(stack, topic_prefix, runtime={"state_dir": str(tmp_path)})
    accounts = [
        await org.create("Account", Name=f"A{n}", AnnualRevenue=1000, NumberOfEmployees=10)
        for n in range(4)
    ]
    pages = ReadOptions(api="bulk", max_records=2, batch_rows=2)
    stop = StopRequest()
    transport = ChangeInFirstRound(org, accounts[0], stop)
    async with SalesforceClient.from_settings(settings.salesforce, transport=transport) as sf:
        first = await run_reconcile(settings, CONFIG, options=pages, stop=stop, salesforce=sf)
    assert first.interrupted == "SIGTERM", first.error
    assert first.objects[0].caught_up == 1, "the first round should have written the change"
    saved = saved_entry(first)
    assert saved["position"]["method"] == "bulk", saved
    jobs = bulk_jobs(stack)
    snapshot_job = saved["position"]["job_id"]
    assert snapshot_job in jobs

    second = await run_reconcile(settings, CONFIG, options=pages)

    assert second.resumed
    assert second.completed, second.error
    assert second.objects[0].records_read == 0, "the resumed run read the snapshot again"
    assert snapshot_job not in jobs, "the resumed run left the snapshot's Bulk job behind"


async def test_a_round_is_checkpointed_as_being_written_before_it_is_written(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(stack, topic_prefix, runtime={"state_dir": str(tmp_path)})
    accounts = [
        await org.create("Account", Name=f"A{n}", AnnualRevenue=1000, NumberOfEmployees=10)
        for n in range(2)
    ]
    stop = StopRequest()
    transport = ChangeInFirstRound(org, accounts[0])
    async with (
        SalesforceClient.from_settings(settings.salesforce, transport=transport) as sf,
        StopInWrite(settings, stop, lambda: transport.rounds > 0) as producer,
    ):
        first = await run_reconcile(settings, CONFIG, stop=stop, salesforce=sf, producer=producer)

    assert first.interrupted == "SIGTERM", first.error
    file = CheckpointFile.load(Path(first.checkpoint))
    saved = file.entry("Account", file.objects["Account"]["fingerprint"])
    assert saved is not None
    # The round's record is marked as being sent: a resumed run writes it again.
    assert any(chunk.startswith("latest:") for chunk in saved.catch_up["seen"]), saved


async def test_a_run_stopped_before_its_checkpoint_names_the_job_deletes_it(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(stack, topic_prefix, runtime={"state_dir": str(tmp_path)})
    await org.create("Account", Name="A", AnnualRevenue=1000, NumberOfEmployees=10)
    jobs = bulk_jobs(stack)
    before = set(jobs)
    stop = StopRequest()
    # The snapshot's first write (before its checkpoint) is where the run stops.
    async with StopInWrite(settings, stop, lambda: True) as producer:
        first = await run_reconcile(
            settings, CONFIG, options=ReadOptions(api="bulk"), stop=stop, producer=producer
        )

    assert first.interrupted == "SIGTERM", first.error
    assert first.bulk_jobs == 1
    assert set(jobs) == before, "the stopped run left its Bulk job behind"


async def test_silent_changes_are_refreshed_nothing_else_is_sent_and_the_stream_wins(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(stack, topic_prefix, runtime={"state_dir": str(tmp_path)})
    mapping_file = tmp_path / "mapping.json"
    mapping_file.write_text(json.dumps(MAPPING))
    async with running(settings, mapping_file):
        accounts = [
            await org.create("Account", Name=f"A{n}", AnnualRevenue=1000, NumberOfEmployees=10)
            for n in range(4)
        ]
        await wait_until(
            lambda: all(per_employee(stack, a) == 100 for a in accounts),
            what="the creates and their formula values",
        )
        await wait_until(lambda: everything_delivered(settings), what="the creates committed")
        await _nothing_differs_nothing_is_sent(stack, settings, records=4)
        await _a_silent_change_is_refreshed(stack, org, settings, accounts)
        await _a_read_older_than_the_stream_does_not_land_last(stack, org, settings, accounts)


async def _nothing_differs_nothing_is_sent(
    stack: SandboxStack, settings: Settings, *, records: int
) -> None:
    """Everything was sent and recorded (by the stream or a reconcile): nothing goes out."""
    before = await amplitude_requests(stack)
    quiet = await run_reconcile(settings, CONFIG)
    assert quiet.completed, quiet.error
    [account] = quiet.objects
    assert (account.records_read, account.properties_differing) == (records, 0)
    assert account.records_written == 0
    assert quiet.digests_known == records
    assert await amplitude_requests(stack) == before


async def _a_silent_change_is_refreshed(
    stack: SandboxStack, org: Org, settings: Settings, accounts: list[str]
) -> None:
    """What the formula reads changes without a change event: only the reconcile sees it."""
    await org.update("Account", accounts[1], NumberOfEmployees=20, emit_events=False)
    dry = await run_reconcile(settings, CONFIG, dry_run=True)
    assert dry.objects[0].properties == {"per_employee": 1}
    assert dry.objects[0].groups == 1
    assert dry.objects[0].records_written == 0

    sent = await run_reconcile(settings, CONFIG)
    assert sent.objects[0].records_written == 1
    await wait_until(lambda: per_employee(stack, accounts[1]) == 50, what="the refresh")
    assert per_employee(stack, accounts[0]) == 100
    await wait_until(lambda: everything_delivered(settings), what="the refresh committed")
    # What the refresh sent was recorded too: the next reconcile sends nothing.
    await _nothing_differs_nothing_is_sent(stack, settings, records=len(accounts))


async def _a_read_older_than_the_stream_does_not_land_last(
    stack: SandboxStack, org: Org, settings: Settings, accounts: list[str]
) -> None:
    """A resumed run reads the rest of its Bulk job: rows read before a change the stream
    delivered since. Its catch-up rounds write the record again, so the stream's value stays."""
    pages = ReadOptions(api="bulk", max_records=2, batch_rows=2)
    late = accounts[-1]  # on the job's second page
    await org.update("Account", late, NumberOfEmployees=20, emit_events=False)  # 50
    stop = StopRequest()
    first = await run_reconcile(settings, CONFIG, options=pages, stop=stop,
                                progress=StopAfterFirstBatch(stop))  # fmt: skip
    assert first.interrupted == "SIGTERM"
    assert first.objects[0].records_read == 2  # the job's rows were all read at once

    # The stream delivers a newer value before the rest of the job is written.
    await org.update("Account", late, AnnualRevenue=3000)  # with a change event: 150
    await wait_until(lambda: per_employee(stack, late) == 150, what="the stream's value")

    second = await run_reconcile(settings, CONFIG, options=pages)
    assert second.resumed
    assert second.completed
    assert second.bulk_jobs == 0  # the first run's job, read before the change
    assert second.objects[0].caught_up == 1
    await wait_until(lambda: everything_delivered(settings), what="the reconcile delivered")
    assert per_employee(stack, late) == 150


async def _a_finished_run(
    org: Org, settings: Settings, tmp_path: Path
) -> tuple[Path, bytes, datetime]:
    """A reconcile run to its end: its checkpoint, the file's bytes and its finish time."""
    await org.seed("Account", 2)
    checkpoint = tmp_path / "reconcile-checkpoint.json"
    finished = await run_reconcile(settings, CONFIG, checkpoint_path=checkpoint)
    assert finished.completed, finished.error
    finished_at, unfinished = checkpoint_status(checkpoint)
    assert finished_at is not None
    assert not unfinished
    return checkpoint, checkpoint.read_bytes(), finished_at


async def test_a_run_kafka_refuses_leaves_the_last_finished_run_as_it_was(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    # The service's schedule reads when the last run finished from this file: a refused
    # run that marked it unfinished started a whole reconcile at the service's next start.
    settings = settings_for(stack, topic_prefix)
    checkpoint, before, finished_at = await _a_finished_run(org, settings, tmp_path)

    port = unused_port()  # nothing listens on it
    kafka = settings.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{port}"})
    refused = await run_reconcile(
        settings.model_copy(update={"kafka": kafka}), CONFIG, checkpoint_path=checkpoint
    )
    assert refused.error is not None
    assert "Kafka" in str(refused.error), refused.error
    assert checkpoint.read_bytes() == before
    assert checkpoint_status(checkpoint) == (finished_at, False)


class StopAtFirstObject(StopAfterFirstBatch):
    """Progress that stops the run when its first object starts, before a batch is saved."""

    def start_object(
        self, sfdc_object: str, total: int | None, method: str, *, done: int = 0
    ) -> None:
        self.stop.set("SIGTERM")


async def test_a_run_stopped_before_its_first_batch_leaves_the_last_finished_run(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    # Salesforce refusing the catch-up or the Bulk job stops a run at the same point.
    settings = settings_for(stack, topic_prefix)
    checkpoint, before, finished_at = await _a_finished_run(org, settings, tmp_path)

    stop = StopRequest()
    stopped = await run_reconcile(
        settings, CONFIG, checkpoint_path=checkpoint, progress=StopAtFirstObject(stop), stop=stop
    )
    assert stopped.interrupted == "SIGTERM"
    assert checkpoint.read_bytes() == before
    assert checkpoint_status(checkpoint) == (finished_at, False)  # nothing to resume
