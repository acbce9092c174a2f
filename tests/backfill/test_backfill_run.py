"""Backfills against both sandboxes over real HTTP: state, resume, dry run, limits, rejects."""

from __future__ import annotations

import asyncio
import collections
import json
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config.mapping import MappingConfig
from pipeline.errors import AmplitudeUnavailableError, RequestLimitError, UnreadableFieldsError
from pipeline.kafka.inspect import KafkaInspector
from pipeline.runtime.backfill import (
    LogProgress,
    ReadOptions,
    StopRequest,
    run_backfill,
)
from pipeline.runtime.backfill.deliver import MAX_IN_FLIGHT
from pipeline.runtime.salesforce_reads import fields_to_read
from pipeline.salesforce.bulk import BulkQuery
from pipeline.salesforce.client import SalesforceClient
from pipeline.transform.schema import schema_from_describe
from sfamp_sandbox.amplitude.state import Fault
from tests.backfill.conftest import (
    BLOCKED_GROUP,
    CliRun,
    Sandboxes,
    expected_groups,
    log_events,
    mapping,
    read_dlq,
)
from tests.runtime.conftest import wait_until

SMALL_PAGES = ReadOptions(max_records=2_000, batch_rows=1_000, rest_max_records=100)


def written(path: Path, config: MappingConfig) -> Path:
    """``config`` as a mapping file at ``path``, for the CLI."""
    path.write_text(json.dumps(config.model_dump(mode="json")))
    return path


async def rest_expectation(
    sandboxes: Sandboxes, config: MappingConfig
) -> dict[tuple[str, str], dict[str, Any]]:
    """The mapped values as the REST API reports them, through the stream's transform."""
    async with SalesforceClient.from_settings(sandboxes.settings().salesforce) as sf:
        schema = schema_from_describe(await sf.rest.describe("Account"))
        fields = ", ".join(fields_to_read(config, "Account", schema))
        records = [r async for r in sf.rest.query(f"SELECT {fields} FROM Account")]
    return expected_groups(records, config, schema, "rest")


class Hook(LogProgress):
    """Progress that runs ``action`` once, after ``after`` batches."""

    def __init__(self, after: int, action: Any) -> None:
        super().__init__(interval_seconds=3600)
        self.batches = 0
        self._after, self._action = after, action

    def advance(self, sfdc_object: str, rows: int, identifications: int) -> None:
        super().advance(sfdc_object, rows, identifications)
        self.batches += 1
        if self.batches == self._after:
            self._action()


async def test_cli_backfills_20000_records_with_progress_lines(
    sandboxes: Sandboxes, mapping_file: Path, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 20_000)
    args = ["--mapping", str(mapping_file), "--json", "--progress-interval", "0"]
    run = await CliRun.start(args, sandboxes.environment(), tmp_path)
    code, out, err = await run.finish()

    assert code == 0, err
    summary = json.loads(out)
    assert summary["completed"]
    assert summary["rows_read"] == 20_000
    assert summary["identifications"] == 20_000
    # The snapshot's job, and the catch-up round's: seeded just now, every record is
    # inside its window, too many for REST pages.
    assert summary["bulk_jobs"] == 2
    assert summary["objects"][0]["method"] == "bulk"
    progress = [e for e in log_events(err) if e["event"] == "backfill_progress"]
    assert len(progress) >= 2
    assert progress[-1]["rows_read"] == 20_000
    assert progress[0]["total"] == 20_000
    expected = await rest_expectation(sandboxes, mapping())
    assert len(expected) == 20_000
    assert sandboxes.groups() == expected
    some_id = next(iter(expected))[1]
    stored = (
        await sandboxes.control.get(
            f"{sandboxes.amplitude.base_url}/__sandbox/groups/account/{some_id}"
        )
    ).json()["properties"]
    assert isinstance(stored["regions"], list)
    assert isinstance(stored["active"], bool)
    assert isinstance(stored["annual_revenue"], int)
    assert stored["modified"].endswith("Z")
    assert "billing.City" in stored
    assert (tmp_path / ".sfamp" / "backfill-checkpoint.json").exists()


async def test_killed_run_resumes_with_same_state_and_fewer_requests(
    sandboxes: Sandboxes, mapping_file: Path, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 20_000)
    fresh = await run_backfill(
        sandboxes.settings(),
        mapping(),
        checkpoint_path=tmp_path / "fresh.json",
        options=SMALL_PAGES,
    )
    fresh_state, fresh_requests = sandboxes.groups(), sandboxes.requests
    sandboxes.amplitude.state.reset()

    args = ["--mapping", str(mapping_file), "--progress-interval", "0"]
    args += ["--max-records", "2000", "--batch-rows", "1000"]
    killed = await CliRun.start(args, sandboxes.environment(), tmp_path)
    await killed.wait_for_lines("backfill_progress", 6)
    killed.process.send_signal(signal.SIGKILL)
    assert await killed.process.wait() == -signal.SIGKILL
    partial, killed_requests = len(sandboxes.groups()), sandboxes.requests
    assert 0 < partial < 20_000

    resumed = await CliRun.start([*args, "--resume", "--json"], sandboxes.environment(), tmp_path)
    code, out, err = await resumed.finish()

    assert code == 0, err
    summary = json.loads(out)
    assert summary["resumed"]
    assert summary["completed"]
    assert summary["rows_read"] < 20_000
    # The interrupted run's job is reused; the one job is the catch-up round's (the
    # 20,000 records seeded just now are all inside its window).
    assert summary["bulk_jobs"] == 1
    assert sandboxes.groups() == fresh_state
    assert fresh.completed
    assert 0 < sandboxes.requests - killed_requests < fresh_requests
    assert summary["requests"] == sandboxes.requests - killed_requests
    # Progress goes on from where the killed run's checkpoint was, not from 0.
    events = log_events(err)
    [started] = [e for e in events if e["event"] == "backfill_object_started"]
    assert started["already_read"] == 20_000 - summary["rows_read"]
    assert started["total"] == 20_000
    progress = [e for e in events if e["event"] == "backfill_progress"]
    assert progress[-1]["rows_read"] == 20_000


async def test_amplitude_outage_stops_and_resume_finishes(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    # Twelve batches: once two were delivered, at most MAX_IN_FLIGHT more were sent.
    await sandboxes.seed("Account", 12_000)
    checkpoint = tmp_path / "checkpoint.json"
    plan = await run_backfill(
        sandboxes.settings(), mapping(), dry_run=True, checkpoint_path=checkpoint,
        options=SMALL_PAGES,
    )  # fmt: skip
    outage = Fault("503", remaining=10_000, path="/2/httpapi")
    hook = Hook(after=2, action=lambda: sandboxes.amplitude.state.add_fault(outage))
    first = await run_backfill(
        sandboxes.settings(), mapping(), checkpoint_path=checkpoint, progress=hook,
        options=SMALL_PAGES,
    )  # fmt: skip
    assert isinstance(first.error, AmplitudeUnavailableError)
    delivered = hook.batches * 1_000  # each delivered batch was checkpointed
    assert 2_000 <= delivered <= 2_000 + MAX_IN_FLIGHT * 1_000
    saved = orjson.loads(checkpoint.read_bytes())["objects"]["Account"]["position"]
    assert saved["method"] == "bulk"
    assert not saved["finished"]
    assert saved["locator"] is not None
    assert saved["rows_done"] == delivered % 2_000  # within a page of two batches

    sandboxes.amplitude.state.faults.clear()
    second = await run_backfill(
        sandboxes.settings(), mapping(), checkpoint_path=checkpoint, resume=True,
        options=SMALL_PAGES,
    )  # fmt: skip

    assert second.completed
    assert second.total("rows_read") == 12_000 - delivered
    assert sandboxes.groups() == await rest_expectation(sandboxes, mapping())
    assert 0 < second.total("requests") < plan.total("requests")
    again = await run_backfill(
        sandboxes.settings(), mapping(), checkpoint_path=checkpoint, resume=True
    )
    assert again.objects[0].already_done
    assert again.total("rows_read") == 0


async def test_resuming_a_new_run_stopped_before_any_batch_does_not_skip_it_as_done(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "checkpoint.json"
    await sandboxes.seed("Account", 100)
    done = await run_backfill(sandboxes.settings(), mapping(), checkpoint_path=checkpoint)
    assert done.completed  # a finished run's checkpoint
    await sandboxes.seed("Account", 200)  # seeded records emit no change events

    stop = StopRequest()
    stop.set("SIGINT")  # the new run stops before anything is delivered
    stopped = await run_backfill(
        sandboxes.settings(), mapping(), checkpoint_path=checkpoint, stop=stop
    )
    assert stopped.interrupted == "SIGINT"
    assert not stopped.checkpoint_saved  # "no batch was confirmed delivered yet"

    resumed = await run_backfill(
        sandboxes.settings(), mapping(), checkpoint_path=checkpoint, resume=True
    )
    assert resumed.completed
    assert not resumed.objects[0].already_done  # the finished run's checkpoint is gone
    assert resumed.total("rows_read") == 300
    assert sandboxes.groups() == await rest_expectation(sandboxes, mapping())


async def stopped_after(sandboxes: Sandboxes, checkpoint: Path, *, batches: int) -> str:
    """A backfill in ``SMALL_PAGES`` stopped once ``batches`` batches were delivered; the
    Bulk job its checkpoint names."""
    stop = StopRequest()
    hook = Hook(after=batches, action=lambda: stop.set("stopped for the test"))
    first = await run_backfill(
        sandboxes.settings(), mapping(), checkpoint_path=checkpoint, progress=hook,
        options=SMALL_PAGES, stop=stop,
    )  # fmt: skip
    assert first.interrupted == "stopped for the test"
    return str(orjson.loads(checkpoint.read_bytes())["objects"]["Account"]["position"]["job_id"])


async def test_a_run_resumed_after_its_snapshot_deletes_the_snapshot_job(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 3_000)
    checkpoint = tmp_path / "checkpoint.json"
    # Stopped once the snapshot's third and last batch is delivered: before its catch-up.
    await stopped_after(sandboxes, checkpoint, batches=3)
    document = orjson.loads(checkpoint.read_bytes())
    saved = document["objects"]["Account"]
    assert saved["position"]["finished"], saved
    assert not saved["complete"], saved
    # The stopped run deletes its job during the catch-up it was stopped in, or not, as
    # the stop falls: the checkpoint is made to name a job that is surely still there.
    async with SalesforceClient.from_settings(sandboxes.settings().salesforce) as sf:
        snapshot_job = (await BulkQuery(sf.rest).create("SELECT Id FROM Account")).id
    saved["position"]["job_id"] = snapshot_job
    checkpoint.write_bytes(orjson.dumps(document))
    jobs = sandboxes.salesforce.state.jobs.jobs
    assert snapshot_job in jobs

    second = await run_backfill(
        sandboxes.settings(), mapping(), checkpoint_path=checkpoint, resume=True,
        options=SMALL_PAGES,
    )  # fmt: skip

    assert second.completed, second.error
    assert second.total("rows_read") == 0  # the snapshot was done
    assert snapshot_job not in jobs, "the resumed run left the snapshot's Bulk job behind"


async def test_a_run_resumed_in_a_new_job_deletes_the_stopped_runs_job(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 3_000)
    checkpoint = tmp_path / "checkpoint.json"
    stopped_job = await stopped_after(sandboxes, checkpoint, batches=1)
    jobs = sandboxes.salesforce.state.jobs.jobs
    jobs[stopped_job].final_state = "Aborted"  # its results can no longer be read

    second = await run_backfill(
        sandboxes.settings(), mapping(), checkpoint_path=checkpoint, resume=True,
        options=SMALL_PAGES,
    )  # fmt: skip

    assert second.completed, second.error
    assert second.total("rows_read") == 3_000  # read again, in a new job
    assert not jobs, "the resumed run left a Bulk job behind"


class StopAtFirstBatch(LogProgress):
    """Progress that stops the run once its first batch is read (before it is delivered)."""

    def __init__(self, stop: StopRequest) -> None:
        super().__init__(interval_seconds=3600)
        self._stop = stop

    def start_object(
        self, sfdc_object: str, total: int | None, method: str, *, done: int = 0
    ) -> None:
        super().start_object(sfdc_object, total, method, done=done)
        self._stop.set("stopped for the test")


class Started(LogProgress):
    """Progress that remembers what each object started from: ``(total, done)``."""

    def __init__(self) -> None:
        super().__init__(interval_seconds=3600)
        self.started: dict[str, tuple[int | None, int]] = {}

    def start_object(
        self, sfdc_object: str, total: int | None, method: str, *, done: int = 0
    ) -> None:
        super().start_object(sfdc_object, total, method, done=done)
        self.started[sfdc_object] = (total, done)


# Enough batches that some are still in flight when the first one lands (REST pages are
# of 2,000 records, six batches are in flight at most).
@pytest.mark.parametrize(("api", "records"), [("rest", 16_000), ("bulk", 12_000)])
async def test_a_resumed_read_starts_its_progress_where_the_stopped_one_was(
    sandboxes: Sandboxes, tmp_path: Path, api: str, records: int
) -> None:
    """At the rows its checkpoint counted, of the whole object's count (a resumed REST
    read counts it too)."""
    await sandboxes.seed("Account", records)
    checkpoint, stop = tmp_path / "checkpoint.json", StopRequest()
    options = ReadOptions(api=api, max_records=2_000, batch_rows=1_000)  # type: ignore[arg-type]
    hook = Hook(after=1, action=lambda: stop.set("stopped for the test"))
    # Batches after the first are still in flight when it lands, however slow the
    # machine: the last of them could land only after several round trips.
    sandboxes.amplitude.state.latency.ms = 2_000
    first = await run_backfill(
        sandboxes.settings(), mapping(), checkpoint_path=checkpoint, progress=hook,
        options=options, stop=stop,
    )  # fmt: skip
    assert first.interrupted == "stopped for the test"
    saved = orjson.loads(checkpoint.read_bytes())["objects"]["Account"]["position"]
    done = saved["rows_read"]
    assert 0 < done < records, saved
    sandboxes.amplitude.state.latency.ms = 0

    progress = Started()
    resumed = await run_backfill(
        sandboxes.settings(), mapping(), checkpoint_path=checkpoint, resume=True,
        progress=progress, options=options,
    )  # fmt: skip
    assert resumed.completed
    assert progress.started["Account"] == (records, done)
    assert resumed.objects[0].rows_read == records - done


async def test_a_run_stopped_before_its_checkpoint_names_the_job_deletes_it(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 3_000)
    sandboxes.amplitude.state.latency.ms = 20_000  # the first batch stays in flight
    stop = StopRequest()
    first = await run_backfill(
        sandboxes.settings(), mapping(), checkpoint_path=tmp_path / "checkpoint.json",
        progress=StopAtFirstBatch(stop), options=SMALL_PAGES, stop=stop,
    )  # fmt: skip

    assert first.interrupted == "stopped for the test"
    assert first.bulk_jobs == 1
    assert not sandboxes.salesforce.state.jobs.jobs, "the stopped run left its Bulk job behind"


async def test_a_resumed_run_stopped_again_keeps_the_job_its_checkpoint_names(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 3_000)
    checkpoint = tmp_path / "checkpoint.json"
    named = await stopped_after(sandboxes, checkpoint, batches=1)
    sandboxes.amplitude.state.latency.ms = 20_000  # the next batch stays in flight
    stop = StopRequest()
    again = await run_backfill(
        sandboxes.settings(), mapping(), checkpoint_path=checkpoint, resume=True,
        progress=StopAtFirstBatch(stop), options=SMALL_PAGES, stop=stop,
    )  # fmt: skip

    assert again.interrupted == "stopped for the test"
    assert named in sandboxes.salesforce.state.jobs.jobs, "a job a resume reads on was deleted"


async def test_a_run_stopped_while_it_deletes_the_old_job_deletes_its_new_one(
    sandboxes: Sandboxes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sandboxes.seed("Account", 3_000)
    checkpoint = tmp_path / "checkpoint.json"
    old = await stopped_after(sandboxes, checkpoint, batches=1)
    jobs = sandboxes.salesforce.state.jobs.jobs
    jobs[old].final_state = "Aborted"  # read again in a new job, the old one deleted
    stop, delete = StopRequest(), BulkQuery.delete

    async def stopped_in_the_old_jobs_delete(bulk: BulkQuery, job_id: str) -> None:
        if job_id == old:
            stop.set("stopped for the test")
            await asyncio.Event().wait()  # until the run is cancelled
        await delete(bulk, job_id)

    monkeypatch.setattr(BulkQuery, "delete", stopped_in_the_old_jobs_delete)
    again = await run_backfill(
        sandboxes.settings(), mapping(), checkpoint_path=checkpoint, resume=True,
        options=SMALL_PAGES, stop=stop,
    )  # fmt: skip

    assert again.interrupted == "stopped for the test"
    assert set(jobs) == {old}, "the run left its new Bulk job behind"


async def test_a_run_stopped_while_its_job_runs_aborts_and_deletes_it(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 3_000)
    jobs = sandboxes.salesforce.state.jobs
    jobs.job_seconds = 600.0  # the job stays in progress
    stop = StopRequest()
    checkpoint = tmp_path / "checkpoint.json"
    backfill = run_backfill(
        sandboxes.settings(), mapping(), checkpoint_path=checkpoint, options=SMALL_PAGES, stop=stop
    )
    run = asyncio.create_task(backfill)
    await wait_until(lambda: bool(jobs.jobs) or run.done(), what="the Bulk job's creation")
    stop.set("stopped for the test")
    first = await run

    assert first.interrupted == "stopped for the test"
    assert jobs.created_count == 1
    assert not jobs.jobs, "the stopped run left its running Bulk job behind"


async def test_a_run_deletes_its_snapshot_job(sandboxes: Sandboxes, tmp_path: Path) -> None:
    await sandboxes.seed("Account", 3_000)
    summary = await run_backfill(
        sandboxes.settings(), mapping(), checkpoint_path=tmp_path / "checkpoint.json",
        options=SMALL_PAGES,
    )  # fmt: skip

    assert summary.completed, summary.error
    assert summary.bulk_jobs == 1
    assert not sandboxes.salesforce.state.jobs.jobs, "the run left its Bulk job behind"


async def test_a_field_hidden_since_the_check_stops_the_run_and_names_it(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    """A read leaves out fields the describe omits (field-level security); a backfill must
    not, or its snapshot would pass for a whole one and say nothing of them."""
    await sandboxes.seed("Account", 30)
    hide = {"object": "Account", "field": "Industry", "readable": False}
    url = f"{sandboxes.salesforce.base_url}/__sandbox/field-security"
    (await sandboxes.control.post(url, json=hide)).raise_for_status()
    summary = await run_backfill(
        sandboxes.settings(), mapping(), checkpoint_path=tmp_path / "checkpoint.json"
    )

    assert not summary.completed
    assert "cannot read Account.Industry" in str(summary.error)
    assert "field-level security" in str(summary.error)
    assert summary.bulk_jobs == 0
    assert sandboxes.groups() == {}


async def test_a_run_refused_before_it_confirmed_a_batch_puts_the_earlier_checkpoint_back(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    """A run refused for its Amplitude key (as a Salesforce login refused before it) leaves
    the checkpoint it replaced as it was: the earlier run can still be resumed."""
    await sandboxes.seed("Account", 30)
    path = tmp_path / "checkpoint.json"
    earlier = await run_backfill(sandboxes.settings(), mapping(), checkpoint_path=path)
    assert earlier.completed, earlier.error
    before = path.read_bytes()

    refused = await run_backfill(
        sandboxes.settings(amplitude={"api_key": "not-the-key"}), mapping(), checkpoint_path=path
    )
    assert not refused.completed
    assert refused.checkpoint_put_back
    assert path.read_bytes() == before
    assert "the earlier run's checkpoint is kept" in str(refused.next_step())


async def test_a_field_hidden_during_the_run_is_named_as_the_start_check_names_it(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    """Hidden after the run read its first page: the next page (or the catch-up read) is
    refused in raw SOQL terms, which the run says as "cannot read Account.Industry"."""
    await sandboxes.seed("Account", 6_000)
    org = sandboxes.salesforce.state.org
    account = org.store("Account").obj
    hook = Hook(after=1, action=lambda: org.security.set_readable(account, "Industry", False))
    summary = await run_backfill(
        sandboxes.settings(), mapping(), checkpoint_path=tmp_path / "checkpoint.json",
        progress=hook, options=SMALL_PAGES,
    )  # fmt: skip
    assert isinstance(summary.error, UnreadableFieldsError), summary.error
    assert str(summary.error).startswith("cannot read Account.Industry: ")
    assert "No such column" not in str(summary.error)
    assert summary.next_step() == (
        "once the field can be read (or is out of the mapping), rerun with --resume"
    )


async def test_dry_run_sends_nothing_and_plans(sandboxes: Sandboxes, tmp_path: Path) -> None:
    await sandboxes.seed("Account", 3_000)
    checkpoint = tmp_path / "checkpoint.json"
    summary = await run_backfill(
        sandboxes.settings(), mapping(), dry_run=True, checkpoint_path=checkpoint
    )

    assert summary.completed
    assert summary.dry_run
    assert summary.total("identifications") == 3_000
    assert summary.total("requests") > 1
    assert summary.total("bytes") > 100_000
    assert len(summary.sample) == 3
    assert "$set" in summary.sample[0]["group_properties"]
    assert sandboxes.requests == 0
    assert sandboxes.groups() == {}
    answer = await sandboxes.control.get(f"{sandboxes.amplitude.base_url}/__sandbox/requests")
    assert answer.json()["requests"] == []
    assert not checkpoint.exists()


async def test_a_dry_run_through_bulk_deletes_its_job(sandboxes: Sandboxes, tmp_path: Path) -> None:
    await sandboxes.seed("Account", 3_000)
    summary = await run_backfill(
        sandboxes.settings(), mapping(), dry_run=True, checkpoint_path=tmp_path / "c.json",
        options=SMALL_PAGES,
    )  # fmt: skip

    assert summary.completed, summary.error
    assert summary.bulk_jobs == 1
    assert not sandboxes.salesforce.state.jobs.jobs, "the dry run left its Bulk job behind"


async def test_a_resumed_dry_run_keeps_the_job_the_checkpoint_names(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 3_000)
    checkpoint = tmp_path / "checkpoint.json"
    named = await stopped_after(sandboxes, checkpoint, batches=1)
    summary = await run_backfill(
        sandboxes.settings(), mapping(), dry_run=True, resume=True, checkpoint_path=checkpoint,
        options=SMALL_PAGES,
    )  # fmt: skip

    assert summary.completed, summary.error
    assert named in sandboxes.salesforce.state.jobs.jobs, "a job a resume reads on was deleted"


async def test_duplicate_group_values_are_reported_with_counts(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 500)
    config = mapping("Tier__c", {"Name": "name"}, group_type="tier")
    summary = await run_backfill(sandboxes.settings(), config, checkpoint_path=tmp_path / "c.json")
    async with SalesforceClient.from_settings(sandboxes.settings().salesforce) as sf:
        tiers = collections.Counter(
            [r["Tier__c"] async for r in sf.rest.query("SELECT Id, Tier__c FROM Account")]
        )

    found = summary.duplicates["tier"]
    assert found["top"] == {tier: n for tier, n in tiers.items() if n > 1}
    assert found["values"] == len(tiers)
    assert found["records"] == 500
    assert summary.total("identifications") == len(tiers)
    assert "account" not in summary.duplicates


async def test_request_limit_stops_with_checkpoint_kept(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    # Enough pages that the limit comes while pages are still read (the next page is
    # always downloading while one is transformed).
    await sandboxes.seed("Account", 10_000)
    checkpoint = tmp_path / "checkpoint.json"
    faults = sandboxes.salesforce.state.faults
    hook = Hook(after=1, action=lambda: faults.add("request_limit", 1, 0.0))
    summary = await run_backfill(
        sandboxes.settings(), mapping(), checkpoint_path=checkpoint, progress=hook,
        options=SMALL_PAGES,
    )  # fmt: skip

    assert isinstance(summary.error, RequestLimitError)
    assert "request limit" in str(summary.error).lower()
    assert 0 < summary.total("rows_read") < 10_000
    assert orjson.loads(checkpoint.read_bytes())["objects"]["Account"]["position"]["job_id"]


async def test_cli_progress_lines_come_on_time_while_amplitude_is_slow(
    sandboxes: Sandboxes, mapping_file: Path, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 500)
    sandboxes.amplitude.state.latency.ms = 4_000  # each batch stays in flight for 4 s
    args = ["--mapping", str(mapping_file), "--api", "rest", "--progress-interval", "1"]
    run = await CliRun.start(args, sandboxes.environment(), tmp_path)
    code, _, err = await run.finish()

    assert code == 0, err
    progress = [e for e in log_events(err) if e["event"] == "backfill_progress"]
    assert progress, err
    # A line came while the first batch was still in flight: nothing was delivered yet.
    assert (progress[0]["rows_read"], progress[0]["identifications"]) == (0, 0), progress[0]
    assert progress[0]["total"] == 500
    [done] = [e for e in log_events(err) if e["event"] == "backfill_object_done"]
    assert done["rows_read"] == 500


async def test_cli_request_limit_exits_non_zero_with_one_line(
    sandboxes: Sandboxes, mapping_file: Path, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 100)
    await sandboxes.control.post(
        f"{sandboxes.salesforce.base_url}/__sandbox/limits", json={"max": 1, "used": 1}
    )
    run = await CliRun.start(["--mapping", str(mapping_file)], sandboxes.environment(), tmp_path)
    code, _, err = await run.finish()

    assert code == 1
    assert "error: Salesforce API request limit reached" in err
    assert "Traceback" not in err
    assert sandboxes.requests == 0


async def test_rejected_identification_goes_to_report_file(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 50)
    config = mapping("External_Id__c", {"Name": "name"}, group_type="account_ext")
    summary = await run_backfill(
        sandboxes.settings(), config, checkpoint_path=tmp_path / "c.json", dlq="file"
    )

    assert summary.completed
    assert summary.total("rejected") == 1
    report = tmp_path / "backfill-rejected.jsonl"
    assert summary.rejected_to == f"file:{report}"
    entries = [json.loads(line) for line in report.read_text().splitlines()]
    assert [e["reason"] for e in entries] == ["rejected"]
    assert entries[0]["payload"]["group_value"] == BLOCKED_GROUP
    assert len(sandboxes.groups()) == 49


async def test_cli_with_rejected_identifications_exits_3_saying_where_they_are(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 50)
    path = written(
        tmp_path / "ext.json", mapping("External_Id__c", {"Name": "name"}, "account_ext")
    )
    environment = sandboxes.environment(COLUMNS="200")
    run = await CliRun.start(["--mapping", str(path)], environment, tmp_path)
    code, out, err = await run.finish()

    assert code == 3, err  # a script or a cron job sees that something is left to do
    assert err.strip().splitlines()[-1] == (
        "error: Amplitude rejected 1 identification; .sfamp/backfill-rejected.jsonl holds it "
        "with the reason; once fixed, 'sfamp backfill --object Account' sends them again"
    )
    assert "complete, 1 rejected" in out
    assert len(sandboxes.groups()) == 49  # its neighbours were delivered

    run = await CliRun.start(["--mapping", str(path), "--json"], environment, tmp_path)
    code, out, err = await run.finish()
    assert code == 3, err
    summary = json.loads(out)
    assert (summary["completed"], summary["rejected"]) == (True, 1)


async def test_rejected_identification_goes_to_kafka_dlq(
    sandboxes: Sandboxes, tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    await sandboxes.seed("Account", 20)
    config = mapping("External_Id__c", {"Name": "name"}, group_type="account_ext")
    kafka = {"bootstrap_servers": kafka_bootstrap, "topic_prefix": topic_prefix}
    settings = sandboxes.settings(kafka=kafka)
    summary = await run_backfill(settings, config, checkpoint_path=tmp_path / "c.json")

    assert summary.rejected_to == f"kafka:{topic_prefix}.dlq"
    assert summary.rejections() == (
        f"Amplitude rejected 1 identification; {topic_prefix}.dlq holds it with the reason "
        "(see 'sfamp dlq list')"
    )
    entries = await read_dlq(settings)
    assert [(e.reason, e.payload["group_value"]) for e in entries] == [("rejected", BLOCKED_GROUP)]
    assert not (tmp_path / "backfill-rejected.jsonl").exists()
    async with KafkaInspector(settings.kafka) as inspector:
        # Made as the service makes it (one partition), not by the broker's defaults.
        assert len(await inspector.partitions(f"{topic_prefix}.dlq")) == 1
    # Run again, the same identification is refused again: one entry, not two.
    again = await run_backfill(settings, config, checkpoint_path=tmp_path / "again.json")
    assert again.total("rejected") == 1
    entries = await read_dlq(settings)
    assert len(entries) == 2
    assert entries[0].id == entries[1].id  # 'sfamp dlq list' shows the later write alone


async def test_cli_dry_run_prints_the_plan_and_duplicates(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 400)
    config = mapping("Tier__c", {"Name": "name"}, group_type="tier")
    path = written(tmp_path / "tiers.json", config)
    run = await CliRun.start(
        ["--mapping", str(path), "--dry-run"], sandboxes.environment(COLUMNS="200"), tmp_path
    )
    code, out, err = await run.finish()

    assert code == 0, err
    assert "identifications would send" in out
    assert "sample identifications" in out
    assert "group values shared by several records" in out
    assert "Enterprise" in out
    assert sandboxes.requests == 0
    assert not (tmp_path / ".sfamp").exists()


async def test_records_without_a_group_name_are_counted_and_not_sent(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    ids = await sandboxes.seed("Account", 300)
    for record_id in ids[:70]:  # no group name: Billing_Email__c emptied
        response = await sandboxes.control.patch(
            f"{sandboxes.salesforce.base_url}/__sandbox/records/Account/{record_id}",
            json={"Billing_Email__c": None},
        )
        response.raise_for_status()
    config = mapping("Billing_Email__c", {"Name": "name"}, group_type="billing")

    summary = await run_backfill(sandboxes.settings(), config, checkpoint_path=tmp_path / "c.json")

    assert summary.completed, summary.error
    assert summary.total("rows_read") == 300
    assert summary.total("without_group") == 70
    assert summary.total("identifications") == 230
    assert len([key for key in sandboxes.groups() if key[0] == "billing"]) == 230


async def test_a_rest_read_fills_each_request_across_its_pages(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    """REST pages hold 2,000 records, a request 1,999 small events: batched per page, every
    page cost a request of 1,999 and one of 1."""
    await sandboxes.seed("Account", 4_000)
    names = mapping(properties={"Name": "name"})
    summary = await run_backfill(
        sandboxes.settings(), names, checkpoint_path=tmp_path / "cp.json",
        options=ReadOptions(api="rest"),
    )  # fmt: skip
    assert summary.completed, summary.error
    assert summary.total("rows_read") == 4_000
    assert summary.total("requests") == 3  # 1,999 + 1,999 + 2
    assert sandboxes.groups() == await rest_expectation(sandboxes, names)
