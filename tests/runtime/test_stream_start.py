"""A channel's first subscription skips nothing a backfill did not read: not after a
backfill that ended before the service's first start, not for a channel a mapping
revision adds while the service runs (its backfill may end before the subscription)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from pipeline.config.mapping import MappingConfig
from pipeline.config.validation import load_mapping
from pipeline.kafka.compacted import read_table
from pipeline.kafka.config_topic import publish_mapping
from pipeline.kafka.records import ReplayMark, decode_replay_mark
from pipeline.runtime.backfill import run_backfill
from pipeline.runtime.replay_start import SkippedObjects, unmarked_start
from pipeline.salesforce.cdc import EARLIEST, LATEST
from pipeline.sandbox_stack import SandboxStack
from sfamp_sandbox.kafka import free_port
from tests.runtime.conftest import MAPPING, Org, group, running, settings_for, wait_until

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
    only_account = MappingConfig.model_validate(MAPPING)
    with_plan = MappingConfig.model_validate({**MAPPING, "mappings": [*MAPPING["mappings"], PLAN]})
    skipped = SkippedObjects()
    assert skipped.replay_from(only_account, with_plan) is None  # nothing skipped: no rewind
    skipped.skip("Plan__c", 40)
    skipped.skip("Plan__c", 52)  # the first one counts
    skipped.skip("Contact", 31)  # not added by this revision: kept for a later one
    assert skipped.replay_from(only_account, with_plan) == 40
    assert skipped.objects == ["Contact"]
    skipped.skip("Plan__c", LATEST)  # stored nothing yet: the retained events
    assert skipped.replay_from(only_account, with_plan) == EARLIEST


async def test_a_change_between_a_backfill_and_the_first_start_is_delivered(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path, tmp_path: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
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
    # The service starts later (SFAMP_SALESFORCE__REPLAY_START is "latest"): a change made
    # meanwhile is in no read of the backfill.
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
    closed = {"bootstrap_servers": f"127.0.0.1:{free_port()}"}
    settings = settings_for(stack, topic_prefix, kafka=closed)
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
        "start 'sfamp run' before this backfill ends, or set "
        "SFAMP_SALESFORCE__REPLAY_START=earliest for its first start"
    )


async def test_a_channel_a_revision_adds_replays_what_changed_before_its_subscription(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    async with running(settings, mapping_file):
        # Made before the service follows Plan__c: a backfill of Plan__c that ended before
        # the new subscription would not hold it either.
        plan = await org.create("Plan__c", Name="Team", Seats__c=12)
        added = MappingConfig.model_validate({**MAPPING, "mappings": [*MAPPING["mappings"], PLAN]})
        await publish_mapping(settings.kafka, added, now_ms=int(time.time() * 1000))
        await wait_until(
            lambda: group(stack, "plan", plan) == {"seats": 12},
            timeout=60,
            what="the change made before the new channel was subscribed",
        )


async def test_a_custom_channel_reads_again_what_it_skipped_for_an_object_a_revision_adds(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    """One channel for every object: events of an object no mapping names are skipped, so
    a revision that maps it rewinds the channel to the first one skipped."""
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
        added = MappingConfig.model_validate({**MAPPING, "mappings": [*MAPPING["mappings"], PLAN]})
        await publish_mapping(settings.kafka, added, now_ms=int(time.time() * 1000))
        await wait_until(
            lambda: group(stack, "plan", plan) == {"seats": 7},
            timeout=60,
            what="the skipped Plan__c change, read again once a revision maps Plan__c",
        )
