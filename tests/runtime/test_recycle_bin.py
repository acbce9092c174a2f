"""Snapshots read the recycle bin: deletes no change event brought still take effect.

A record deleted while sfamp was down past the event retention (72 h), or before a
backfill's catch-up window, reaches no change event and no live read. Under
``on_delete: mark`` or ``unset`` its groups would keep their live values for good.
The recycle bin keeps deleted records for 15 days, and ``queryAll`` reads them.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.config.mapping import MappingConfig
from pipeline.runtime.backfill import StopRequest, run_backfill
from pipeline.runtime.backfill import catch_up as catch_up_module
from pipeline.runtime.backfill.ahead import ReadAhead
from pipeline.runtime.backfill.catch_up import catch_up_for
from pipeline.sandbox_stack import SandboxStack
from pipeline.transform.schema import schema_from_describe
from sfamp_sandbox.salesforce.describe import describe_object
from sfamp_sandbox.salesforce.objects import ACCOUNT
from tests.convergence.oracle import check_convergence
from tests.runtime.conftest import MAPPING, Org, group, running, settings_for, wait_until

SCHEMA = schema_from_describe(describe_object(ACCOUNT, "62.0"))
SINCE = datetime(2026, 1, 2, tzinfo=UTC)


def _ignoring_deletes() -> dict[str, Any]:
    mapping = copy.deepcopy(MAPPING)
    for item in mapping["mappings"]:
        item["on_delete"] = "ignore"
    return mapping


def _catch_up(mapping: dict[str, Any]) -> Any:
    meaning = (MappingConfig.model_validate(mapping), SCHEMA)
    fields = ["Name", "SystemModstamp"]
    return catch_up_for(None, "Account", fields, SINCE, meaning=meaning, recycle_bin=True)  # type: ignore[arg-type]


def test_the_recycle_bin_is_read_only_for_mappings_that_act_on_deletes() -> None:
    assert _catch_up(MAPPING).recycle_bin
    assert not _catch_up(_ignoring_deletes()).recycle_bin
    soql = _catch_up(MAPPING).soql(SINCE, deleted_before=True)
    assert "IsDeleted = true" in soql
    assert "SystemModstamp < 2026-01-02T00:00:00Z" in soql  # the window's deletes too


async def test_a_backfill_applies_a_delete_older_than_its_catch_up_window(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    config = MappingConfig.model_validate(MAPPING)
    doomed = await org.create("Account", Name="Doomed", External_Id__c="EXT-A", Tier__c="Gold")
    await org.create("Account", Name="Kept", External_Id__c="EXT-K", Tier__c="Silver")
    first = await run_backfill(settings, config, checkpoint_path=tmp_path / "first.json")
    assert first.error is None, first.error
    assert (group(stack, "account_ext", "EXT-A") or {}).get("tier") == "Gold"

    await org.delete("Account", doomed)
    await org.advance_clock(3600)  # the delete is older than the next catch-up window
    again = await run_backfill(settings, config, checkpoint_path=tmp_path / "again.json")
    assert again.error is None, again.error

    assert (group(stack, "account", doomed) or {}).get("sfdc_deleted") is True
    assert group(stack, "account_ext", "EXT-A") == {}
    assert stack.salesforce is not None
    assert stack.amplitude is not None
    report = check_convergence(stack.salesforce, stack.amplitude, MAPPING)
    assert report.ok, report.describe()


async def test_a_deleted_record_does_not_wipe_the_live_one_that_took_its_group_value(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    """The recycle bin is sent ahead of the snapshot: a live record read later, naming
    the same group, lands last."""
    settings = settings_for(stack, topic_prefix)
    config = MappingConfig.model_validate(MAPPING)
    old = await org.create("Account", Name="Old", External_Id__c="EXT-A", Tier__c="Gold")
    await org.delete("Account", old)
    await org.create("Account", Name="New", External_Id__c="EXT-A", Tier__c="Silver")
    await org.advance_clock(3600)  # both are older than the backfill's catch-up window
    summary = await run_backfill(settings, config, checkpoint_path=tmp_path / "bf.json")
    assert summary.error is None, summary.error
    assert group(stack, "account_ext", "EXT-A") == {"name": "New", "tier": "Silver"}
    assert (group(stack, "account", old) or {}).get("sfdc_deleted") is True


async def test_a_delete_inside_the_window_does_not_wipe_a_live_record_sharing_its_group(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    """Deleted a minute before the backfill, inside its catch-up window: sent ahead of the
    snapshot as an older delete is, not by a round after the live record's read."""
    settings = settings_for(stack, topic_prefix)
    config = MappingConfig.model_validate(MAPPING)
    live = await org.create("Account", Name="Live", External_Id__c="EXT-A", Tier__c="Silver")
    gone = await org.create("Account", Name="Gone", External_Id__c="EXT-A", Tier__c="Gold")
    await org.advance_clock(3600)
    await org.delete("Account", gone)  # the newest change to the group
    await org.advance_clock(60)
    summary = await run_backfill(settings, config, checkpoint_path=tmp_path / "bf.json")
    assert summary.error is None, summary.error
    assert group(stack, "account_ext", "EXT-A") == {"name": "Live", "tier": "Silver"}
    assert (group(stack, "account", gone) or {}).get("sfdc_deleted") is True
    assert (group(stack, "account", live) or {}).get("name") == "Live"
    # The bin's delete, counted apart; no round sent it again.
    assert (summary.objects[0].recycle_bin, summary.objects[0].caught_up) == (1, 0)
    assert summary.to_json()["recycle_bin"] == 1


async def test_a_run_resumed_during_its_catch_up_does_not_send_the_bin_again(
    stack: SandboxStack,
    org: Org,
    topic_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sent again after the snapshot, the bin's deletes would land over the live reads."""
    settings = settings_for(stack, topic_prefix)
    config = MappingConfig.model_validate(MAPPING)
    old = await org.create("Account", Name="Old", External_Id__c="EXT-A", Tier__c="Gold")
    await org.delete("Account", old)
    await org.create("Account", Name="New", External_Id__c="EXT-A", Tier__c="Silver")
    await org.advance_clock(3600)
    recent = await org.create("Account", Name="Recent", External_Id__c="EXT-B")
    stop = StopRequest()
    rounds, read_ahead = catch_up_module.CatchUp.rounds, catch_up_module.CatchUp.read_ahead

    def changed_then_read(catch_up: Any) -> ReadAhead[list[dict[str, Any]]]:
        # The record changed after the snapshot, before the first round reads: one to send.
        async def pages() -> AsyncIterator[list[dict[str, Any]]]:
            await org.update("Account", recent, Tier__c="Platinum")
            first = read_ahead(catch_up)
            try:
                async for page in first:
                    yield page
            finally:
                await first.aclose()

        return ReadAhead(pages())

    async def stopped_after_a_round(
        catch_up: Any, first: Any = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        # The stop, made certain: right after the first round was delivered and checkpointed.
        async for records in rounds(catch_up, first):
            yield records
            stop.set("SIGTERM")
            await asyncio.Event().wait()  # until the stop cancels the run

    monkeypatch.setattr(catch_up_module.CatchUp, "read_ahead", changed_then_read)
    monkeypatch.setattr(catch_up_module.CatchUp, "rounds", stopped_after_a_round)
    checkpoint = tmp_path / "bf.json"
    first = await run_backfill(settings, config, checkpoint_path=checkpoint, stop=stop)
    assert first.interrupted == "SIGTERM", first
    assert group(stack, "account_ext", "EXT-A") == {"name": "New", "tier": "Silver"}
    monkeypatch.setattr(catch_up_module.CatchUp, "rounds", rounds)
    monkeypatch.setattr(catch_up_module.CatchUp, "read_ahead", read_ahead)
    again = await run_backfill(settings, config, checkpoint_path=checkpoint, resume=True)
    assert again.error is None, again.error
    assert group(stack, "account_ext", "EXT-A") == {"name": "New", "tier": "Silver"}


async def test_a_resync_after_an_outage_applies_the_deletes_it_missed(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    assert stack.salesforce is not None
    assert stack.amplitude is not None
    async with running(settings, mapping_file):
        doomed = await org.create("Account", Name="Doomed", External_Id__c="EXT-A", Tier__c="Gold")
        kept = await org.create("Account", Name="Kept")
        await wait_until(
            lambda: (
                (group(stack, "account_ext", "EXT-A") or {}).get("tier") == "Gold"
                and group(stack, "account", kept) is not None
            ),
            what="both accounts delivered",
        )

    # sfamp is down while the record is deleted, longer than the event retention.
    await org.delete("Account", doomed)
    await org.advance_clock(73 * 3600)

    async with running(settings, mapping_file) as service:
        ingest = service.ingest
        assert ingest is not None
        await wait_until(lambda: ingest.resyncs_done == 1, what="the re-sync")
        await wait_until(
            lambda: (
                (group(stack, "account", doomed) or {}).get("sfdc_deleted") is True
                and group(stack, "account_ext", "EXT-A") == {}
            ),
            what="the missed delete applied to both groups",
        )
    report = check_convergence(stack.salesforce, stack.amplitude, MAPPING)
    assert report.ok, report.describe()


async def test_a_resync_writes_a_delete_inside_its_window_once_ahead_of_the_live_records(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    """The recycle bin's reads are tracked as written: no round writes the delete again,
    after the live record that shares its group. The writes reach no change event (the
    service was down past the retention, say): the re-sync alone brings them."""
    settings = settings_for(stack, topic_prefix)
    quiet = "?emit_events=false"
    live_fields = {"Name": "Live", "External_Id__c": "EXT-A", "Tier__c": "Silver"}
    await org._call("POST", f"/records/Account{quiet}", live_fields)
    gone_fields = {"Name": "Gone", "External_Id__c": "EXT-A", "Tier__c": "Gold"}
    gone = str((await org._call("POST", f"/records/Account{quiet}", gone_fields))["id"])
    await org.advance_clock(3600)
    await org._call("DELETE", f"/records/Account/{gone}{quiet}")
    await org.advance_clock(60)  # inside the re-sync's catch-up window
    async with running(settings, mapping_file) as service:
        ingest = service.ingest
        assert ingest is not None
        await org.gap_overflow("Account")
        await wait_until(lambda: ingest.resyncs_done == 1, what="the re-sync")
        done = [r for r in service.state.resyncs if r.get("status") == "done"]
        assert [r["records"] for r in done] == [2], "the delete once, the live record once"
        await wait_until(
            lambda: group(stack, "account_ext", "EXT-A") == {"name": "Live", "tier": "Silver"},
            what="the live record's values, last",
        )
        assert (group(stack, "account", gone) or {}).get("sfdc_deleted") is True
