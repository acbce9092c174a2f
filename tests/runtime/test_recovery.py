"""Gap events, GAP_OVERFLOW and an expired replay id each lead to the documented recovery."""

from __future__ import annotations

from pathlib import Path

from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.producer import ChangeProducer
from pipeline.kafka.records import ResyncRequest
from pipeline.runtime.backfill import ReadOptions
from pipeline.sandbox_stack import SandboxStack
from tests.runtime.conftest import Org, group, running, settings_for, wait_until


async def test_gap_events_reread_the_named_records(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    async with running(settings, mapping_file) as service:
        # Seeding is silent (no CDC events): only the gap event tells sfamp about these.
        ids = await org.seed("Account", 3)
        await org.gap("Account", ids, "GAP_UPDATE")
        for record_id in ids:
            record = await org.record("Account", record_id)
            await wait_until(
                lambda r=record_id, n=record["Name"]: (
                    (group(stack, "account", r) or {}).get("name") == n
                ),
                what=f"the re-read of {record_id}",
            )
        assert service.ingest is not None
        assert service.ingest.resyncs_done == 0


async def test_gap_overflow_resyncs_the_whole_object(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    async with running(settings, mapping_file) as service:
        ids = await org.seed("Account", 40)
        await org.gap_overflow("Account")
        await wait_until(
            lambda: all(group(stack, "account", r) is not None for r in ids),
            what="every seeded account after the overflow",
        )
        assert service.ingest is not None
        await wait_until(lambda: service.ingest.resyncs_done == 1)  # type: ignore[union-attr]
        resyncs = service.state.to_status()["resyncs"]
        assert [(r["object"], r["cause"], r["status"]) for r in resyncs] == [
            ("Account", "gap_overflow", "done")
        ]
        assert resyncs[0]["records"] >= 40  # the snapshot, plus catch-up reads of the last second
        assert service.metrics.resyncs.labels("Account", "gap_overflow")._value.get() == 1


async def test_a_resync_through_bulk_deletes_its_job(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    async with running(settings, mapping_file) as service:
        assert service.ingest is not None
        service.ingest._resyncs.read_options = ReadOptions(rest_max_records=0)  # Bulk at once
        assert stack.salesforce is not None
        jobs = stack.salesforce.state.jobs
        before, created = set(jobs.jobs), jobs.created_count
        await org.seed("Account", 5)
        await org.gap_overflow("Account")
        await wait_until(lambda: service.ingest.resyncs_done == 1)  # type: ignore[union-attr]
        assert jobs.created_count == created + 1, "the re-sync did not read through Bulk"
        assert set(jobs.jobs) == before, "the re-sync left its Bulk job behind"


async def test_an_expired_replay_id_resubscribes_and_resyncs(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    async with running(settings, mapping_file):
        first = await org.create("Account", Name="Before the outage")
        await wait_until(lambda: group(stack, "account", first) is not None)

    # While sfamp is down a change happens, then Salesforce's retention passes it by.
    missed = await org.create("Account", Name="Missed while down")
    await org.advance_clock(73 * 3600)

    async with running(settings, mapping_file) as service:
        await wait_until(
            lambda: (group(stack, "account", missed) or {}).get("name") == "Missed while down",
            what="the re-sync after the expired replay id",
        )
        resyncs = service.state.to_status()["resyncs"]
        assert [(r["object"], r["cause"]) for r in resyncs] == [("Account", "replay_id_expired")]
        # The stream continues from the newest event afterwards.
        later = await org.create("Account", Name="After recovery")
        await wait_until(lambda: group(stack, "account", later) is not None)


async def test_a_resync_left_unfinished_by_a_crash_runs_at_the_next_start(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    ids = await org.seed("Account", 5)
    # What a process killed in the middle of a re-sync leaves behind in sfamp.replay.
    await ensure_topics(settings.kafka, sfamp_topics(settings.kafka, ["Account"]))
    async with ChangeProducer(settings.kafka) as producer:
        request = ResyncRequest("Account", "gap_overflow", requested_at_ms=1)
        await producer.send(f"{topic_prefix}.replay", *request.encode())
    async with running(settings, mapping_file) as service:
        await wait_until(
            lambda: all(group(stack, "account", r) is not None for r in ids),
            what="the resumed re-sync",
        )
        assert service.ingest is not None
        await wait_until(lambda: service.ingest.resyncs_done == 1)  # type: ignore[union-attr]
    # Finished re-syncs are removed: the next start does not run it again.
    async with running(settings, mapping_file) as service:
        assert service.ingest is not None
        assert not service.state.resyncs


async def test_a_change_made_while_down_on_a_quiet_channel_is_not_skipped(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    async with running(settings, mapping_file):
        pass  # subscribed once; the channel has not seen a single event
    missed = await org.create("Account", Name="Made while sfamp was down")
    async with running(settings, mapping_file):
        await wait_until(
            lambda: group(stack, "account", missed) is not None,
            what="the change made while the service was stopped",
        )
