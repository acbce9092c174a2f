"""A channel's first subscription skips nothing a backfill did not read: not after a
backfill that ended before the service's first start, not for a channel a mapping
revision adds while the service runs (its backfill may end before the subscription)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from structlog.testing import capture_logs

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.config.validation import load_mapping
from pipeline.errors import KafkaUnavailableError
from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.compacted import read_table
from pipeline.kafka.config_topic import publish_mapping
from pipeline.kafka.producer import ChangeProducer
from pipeline.kafka.records import ReplayMark, decode_replay_mark
from pipeline.runtime.backfill import run_backfill
from pipeline.runtime.backfill.stream_start import stream_start_recorded
from pipeline.runtime.ingest import IngestPump
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.replay_start import MarkWriter, Rewind, SkippedObjects, unmarked_start
from pipeline.salesforce.cdc import DurableReplayStorage
from pipeline.salesforce.channels import EARLIEST, LATEST
from pipeline.sandbox_stack import SandboxStack
from tests.runtime.conftest import MAPPING, Org, group, running, settings_for, wait_until
from tests.support.ports import unused_port

PLAN: dict[str, Any] = {
    "sfdc_object": "Plan__c",
    "group_type": "plan",
    "group_name_field": "Id",
    "group_properties": [{"sfdc_field": "Seats__c", "amplitude_property": "seats"}],
}


def test_the_replay_start_setting_holds_until_a_replay_id_is_stored() -> None:
    assert unmarked_start({}, "latest") == LATEST
    assert unmarked_start({}, "earliest") == EARLIEST
    # Any stored mark: the service ran on this org, or a backfill did.
    mark = ReplayMark("/data/AccountChangeEvent", 41, stored_at_ms=1)
    assert unmarked_start({mark.channel: mark}, "latest") == EARLIEST


def test_a_revision_rewinds_a_custom_channel_to_the_first_event_it_skipped() -> None:
    channel, hour = "/data/ChangeEvents", 3600 * 1000
    only_account = MappingConfig.model_validate(MAPPING)
    with_plan = MappingConfig.model_validate({**MAPPING, "mappings": [*MAPPING["mappings"], PLAN]})
    skipped = SkippedObjects()
    assert skipped.rewind_for(with_plan, 0) is None  # nothing skipped: no rewind
    skipped.skip(channel, "Plan__c", (40, 0))
    skipped.skip(channel, "Plan__c", (52, hour))  # the first one counts
    skipped.skip(channel, "Contact", (31, 0))  # not mapped by this revision: kept
    assert skipped.rewind_for(only_account, hour) is None
    rewind = skipped.rewind_for(with_plan, hour)
    assert rewind == Rewind(channel, 40, ("Plan__c",))
    assert skipped.rewind_for(with_plan, hour) == rewind  # kept until Kafka holds it
    skipped.rewound(rewind)
    assert skipped.objects == ["Contact"]
    # Nothing stored before it, or a replay id whose event is near the 72-hour retention
    # (a quiet channel): the retained events, not an id Salesforce may refuse.
    skipped.skip(channel, "Plan__c", (LATEST, hour))
    assert skipped.rewind_for(with_plan, hour) == Rewind(channel, EARLIEST, ("Plan__c",))
    skipped.rewound(Rewind(channel, EARLIEST, ("Plan__c",)))
    skipped.skip(channel, "Plan__c", (60, 0))
    assert skipped.rewind_for(with_plan, 71 * hour) == Rewind(channel, EARLIEST, ("Plan__c",))


async def test_a_change_between_a_backfill_and_the_first_start_is_delivered(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path, tmp_path: Path
) -> None:
    """With ``latest`` for the first start, the backfill's -2 is what keeps it whole."""
    settings = settings_for(stack, topic_prefix, salesforce={"replay_start": "latest"})
    await org.seed("Account", 3)
    summary = await run_backfill(
        settings, load_mapping(mapping_file), checkpoint_path=tmp_path / "backfill.json"
    )
    assert summary.error is None, summary.error
    table, _ = await read_table(settings.kafka, f"{topic_prefix}.replay")
    marks = [decode_replay_mark(key, value) for key, (value, _) in table.items()]
    assert [(m.channel, m.replay_id) for m in marks if m] == [
        ("/data/AccountChangeEvent", EARLIEST)
    ]
    # The service starts later: a change made meanwhile is in no read of the backfill.
    between = await org.create("Account", Name="Made after the backfill")
    async with running(settings, mapping_file):
        await wait_until(
            lambda: (
                (group(stack, "account", between) or {}).get("name") == "Made after the backfill"
            ),
            what="the change made between the backfill and the service's first start",
        )


async def test_a_backfill_without_kafka_says_what_the_first_start_needs(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path, tmp_path: Path
) -> None:
    """A backfill runs without Kafka: it cannot store where the stream starts, so it says
    what makes the service's first start skip nothing."""
    closed = {"bootstrap_servers": f"127.0.0.1:{unused_port()}"}
    settings = settings_for(
        stack, topic_prefix, kafka=closed, salesforce={"replay_start": "latest"}
    )
    await org.seed("Account", 2)
    with capture_logs() as logs:
        summary = await run_backfill(
            settings, load_mapping(mapping_file), checkpoint_path=tmp_path / "backfill.json"
        )
    assert summary.completed, summary.error
    [said] = [e for e in logs if e["event"] == "stream_start_not_recorded"]
    assert said["log_level"] == "warning"
    assert said["reason"] == (
        f"cannot read {topic_prefix}.replay: Kafka at {closed['bootstrap_servers']} is not "
        "answering (connection refused); check SFAMP_KAFKA__BOOTSTRAP_SERVERS"
    )
    assert said["hint"] == (
        "for the service's first start on this org, set "
        "SFAMP_SALESFORCE__REPLAY_START=earliest (the default): it then reads the changes "
        "made since this backfill from the retained events"
    )


async def test_the_end_of_a_backfill_waits_for_a_silent_kafka_a_bounded_time_only() -> None:
    async def silent() -> list[str]:
        await asyncio.Event().wait()  # a broker that never answers
        return []

    stalled = asyncio.create_task(silent())
    with capture_logs() as logs:
        await stream_start_recorded(stalled, seconds=0.05)
    assert stalled.cancelled()
    [said] = [e for e in logs if e["event"] == "stream_start_not_recorded"]
    assert said["reason"] == "Kafka did not answer within 0.05 s"


async def map_plans_and_wait(
    stack: SandboxStack, settings: Settings, plan: str, seats: int, what: str
) -> None:
    """Publish a revision that adds Plan__c, then wait for ``plan``'s group to hold ``seats``."""
    added = MappingConfig.model_validate({**MAPPING, "mappings": [*MAPPING["mappings"], PLAN]})
    await publish_mapping(settings.kafka, added, now_ms=int(time.time() * 1000))
    await wait_until(lambda: group(stack, "plan", plan) == {"seats": seats}, timeout=60, what=what)


async def test_a_channel_a_revision_adds_replays_what_changed_before_its_subscription(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    async with running(settings, mapping_file):
        # Made before the service follows Plan__c: a backfill of Plan__c that ended before
        # the new subscription would not hold it either.
        plan = await org.create("Plan__c", Name="Team", Seats__c=12)
        await map_plans_and_wait(
            stack, settings, plan, 12, "the change made before the new channel was subscribed"
        )


@pytest.mark.parametrize("first_rewind", ["stored", "refused by Kafka"])
async def test_a_custom_channel_reads_again_what_it_skipped_for_an_object_a_revision_adds(
    stack: SandboxStack,
    org: Org,
    topic_prefix: str,
    mapping_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    first_rewind: str,
) -> None:
    """One channel for every object: events of an object no mapping names are skipped, so
    a revision that maps it rewinds the channel to the first one skipped; a rewind Kafka
    refuses is tried again at the next turn."""
    refused: list[Rewind] = []
    if first_rewind == "refused by Kafka":
        rewind = IngestPump._rewind

        async def refused_once(pump: IngestPump, to: Rewind) -> None:
            if not refused:
                refused.append(to)
                raise KafkaUnavailableError("Kafka at 127.0.0.1:9 is not answering")
            await rewind(pump, to)

        monkeypatch.setattr(IngestPump, "_rewind", refused_once)
    settings = settings_for(stack, topic_prefix, salesforce={"cdc_channel": "/data/ChangeEvents"})
    async with running(settings, mapping_file) as service:
        account = await org.create("Account", Name="Followed")
        await wait_until(lambda: group(stack, "account", account) is not None)
        plan = await org.create("Plan__c", Name="Skipped", Seats__c=7)
        assert service.ingest is not None
        await wait_until(
            lambda: service.ingest is not None and service.ingest.skipped_objects == ["Plan__c"],
            what="the Plan__c event to be skipped",
        )
        await map_plans_and_wait(
            stack, settings, plan, 7, "the skipped change, read again once Plan__c is mapped"
        )
    assert len(refused) == (first_rewind == "refused by Kafka")


async def test_a_retained_events_mark_older_than_the_retention_resyncs_the_object(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    """-2 never expires as a replay id does, so a service down for days would replay what is
    left and skip, silently, what is not: the object is re-synced instead."""
    settings = settings_for(stack, topic_prefix)
    ids = await org.seed("Account", 3)  # silently: only a read finds them
    four_days_ago = int(time.time() * 1000) - 4 * 24 * 3600 * 1000
    await ensure_topics(settings.kafka, sfamp_topics(settings.kafka, ["Account"]))
    async with ChangeProducer(settings.kafka) as producer:
        mark = ReplayMark("/data/AccountChangeEvent", EARLIEST, four_days_ago)
        await producer.send(f"{topic_prefix}.replay", *mark.encode())
    async with running(settings, mapping_file) as service:
        await wait_until(
            lambda: all(group(stack, "account", r) is not None for r in ids),
            what="the re-sync of the object last followed four days ago",
        )
        assert [(r["object"], r["cause"]) for r in service.state.resyncs] == [
            ("Account", "replay_id_expired")
        ]


async def test_a_quiet_channel_has_its_retained_events_mark_stored_again() -> None:
    """Hourly: its age then says when sfamp last followed the channel, not when it first
    subscribed, and a restart after a quiet week replays instead of re-syncing."""
    sent: list[ReplayMark] = []

    class Producer:
        async def send_all(self, records: list[tuple[str, bytes, bytes]]) -> None:
            sent.extend(decode_replay_mark(key, value) for _, key, value in records)  # type: ignore[misc]

    quiet, busy = "/data/AccountChangeEvent", "/data/Plan__ChangeEvent"
    storage = DurableReplayStorage({quiet: EARLIEST, busy: 41})
    hour = 3600 * 1000
    known = {quiet: ReplayMark(quiet, EARLIEST, 0), busy: ReplayMark(busy, 41, 0, event_ts_ms=0)}
    marks = MarkWriter(Producer(), "p.replay", storage, Metrics(), known)  # type: ignore[arg-type]
    assert marks.last(busy, hour) == (41, 0)  # its event's commit: the retention counts from it
    await marks.refresh_quiet([quiet, busy], hour)
    assert sent == []  # stored at the subscription, an hour ago at most
    await marks.refresh_quiet([quiet, busy], hour + 1)
    assert sent == [ReplayMark(quiet, EARLIEST, hour + 1)]
    await marks.store([ReplayMark(quiet, 57, hour + 2, event_ts_ms=hour)])  # an event came
    await marks.refresh_quiet([quiet, busy], 5 * hour)
    assert [m.replay_id for m in sent] == [EARLIEST, 57]
    assert storage.marks == {quiet: 57, busy: 41}


async def test_an_object_a_file_revision_adds_on_a_custom_channel_gets_its_own_topic(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    """The channel stays the same, yet the object's changes topic is made as sfamp makes
    them (partitions, retention), not left for the broker to create on the first write."""
    settings = settings_for(stack, topic_prefix, salesforce={"cdc_channel": "/data/ChangeEvents"})
    async with running(settings, mapping_file) as service:
        mapping_file.write_text(json.dumps({**MAPPING, "mappings": [*MAPPING["mappings"], PLAN]}))
        await wait_until(
            lambda: "Plan__c" in service.state.mapping_objects, what="the file's revision"
        )
        plan = await org.create("Plan__c", Name="Team", Seats__c=3)
        await wait_until(lambda: group(stack, "plan", plan) == {"seats": 3}, timeout=60)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await consumer.start()
    try:
        await consumer.topics()
        topic = f"{topic_prefix}.changes.Plan__c"
        assert consumer.partitions_for_topic(topic) == set(range(settings.kafka.partitions))
    finally:
        await consumer.stop()


async def test_a_stop_names_the_objects_whose_skipped_events_it_forgets(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(stack, topic_prefix, salesforce={"cdc_channel": "/data/ChangeEvents"})
    with capture_logs() as logs:
        async with running(settings, mapping_file) as service:
            await org.create("Plan__c", Name="Skipped", Seats__c=1)
            await wait_until(
                lambda: (
                    service.ingest is not None and service.ingest.skipped_objects == ["Plan__c"]
                ),
                what="the Plan__c event to be skipped",
            )
    [said] = [e for e in logs if e["event"] == "ingest_skipped_objects_forgotten"]
    assert (said["log_level"], said["objects"]) == ("warning", ["Plan__c"])


async def test_a_first_start_replays_the_retained_events_by_default(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    """Whatever a backfill begun at the same time read before ingest subscribed, and
    whether or not it could store anything first, the first start skips no change."""
    settings = settings_for(stack, topic_prefix)
    assert settings.salesforce.replay_start == "earliest"
    before = await org.create("Account", Name="Made before the first start")
    async with running(settings, mapping_file):
        await wait_until(
            lambda: group(stack, "account", before) is not None,
            what="the change made before sfamp's first start on the org",
        )
