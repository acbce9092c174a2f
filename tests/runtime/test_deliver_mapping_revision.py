"""A mapping revision while deliver holds changes: what it holds is read again under it.

Deliver transforms a change when it takes it from Kafka. Held across a revision that
re-points a property, and flushed after the backfill that applies the revision, it
would land the old meaning last, and nothing would correct it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline.config.mapping import MappingConfig
from pipeline.runtime.backfill import run_backfill
from pipeline.runtime.deliver.window import Flushing, FlushWindow
from pipeline.runtime.state import FlushResult
from pipeline.sandbox_stack import SandboxStack
from sfamp_sandbox.amplitude.state import Fault
from tests.convergence.oracle import check_convergence
from tests.runtime.conftest import (
    Org,
    flush_mark,
    flushes_after,
    group,
    running,
    settings_for,
    wait_until,
)


def _mapping(tier_field: str, every_seconds: int) -> dict[str, Any]:
    return {
        "version": 1,
        "sync_cadence": {"mode": "interval", "every_seconds": every_seconds},
        "mappings": [
            {
                "sfdc_object": "Account",
                "group_type": "account",
                "group_name_field": "Id",
                "group_properties": [
                    {"sfdc_field": "Name", "amplitude_property": "name"},
                    {"sfdc_field": tier_field, "amplitude_property": "tier"},
                ],
            }
        ],
    }


def _write(path: Path, mapping: dict[str, Any], seconds_later: int) -> None:
    """The file, stamped ``seconds_later`` than it was (the watcher compares stamps)."""
    path.write_text(json.dumps(mapping))
    stat = path.stat()
    later = stat.st_mtime_ns + seconds_later * 1_000_000_000
    os.utime(path, ns=(stat.st_atime_ns, later))


def test_a_window_means_only_the_mappings_it_was_taken_under() -> None:
    tier, rating = _mapping("Tier__c", 3600), _mapping("Rating", 3600)
    window = FlushWindow(mappings=MappingConfig.model_validate(tier).mappings)
    assert window.means(MappingConfig.model_validate(tier))
    assert window.means(MappingConfig.model_validate(_mapping("Tier__c", 5)))  # cadence only
    assert not window.means(MappingConfig.model_validate(rating))
    assert FlushWindow().means(MappingConfig.model_validate(rating))  # nothing taken yet
    note = Flushing(window, "member").note(stopped=False, committed={}, stale=True)
    assert note is not None
    assert "read again" in note


async def test_changes_held_across_a_revision_are_sent_as_the_revision_means_them(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    mapping_file = tmp_path / "mapping.json"
    first = _mapping("Tier__c", 3600)  # no flush falls due until the third revision
    second = _mapping("Rating", 3600)  # tier now comes from Rating
    third = _mapping("Rating", 1)  # what the second means; brings the flush forward
    _write(mapping_file, first, 0)
    assert stack.salesforce is not None
    assert stack.amplitude is not None
    async with running(settings, mapping_file) as service:
        deliver, holder = service.deliver, service.holder
        assert deliver is not None
        assert holder is not None
        account = await org.create("Account", Name="Acme", Tier__c="Gold", Rating="Hot")
        await org.update("Account", account, Tier__c="Silver")
        await wait_until(
            lambda: deliver._window.changes >= 2,
            what="deliver to hold both changes, transformed under the first revision",
        )
        _write(mapping_file, second, 1)
        await wait_until(
            lambda: holder.current.mappings[0].group_properties[1].sfdc_field == "Rating",
            what="the service to run the second revision",
        )
        summary = await run_backfill(
            settings, MappingConfig.model_validate(second), checkpoint_path=tmp_path / "bf.json"
        )
        assert summary.error is None, summary.error
        assert group(stack, "account", account) == {"name": "Acme", "tier": "Hot"}
        mark = flush_mark(service.state)
        _write(mapping_file, third, 2)
        await wait_until(
            lambda: any(flush.changes for flush in flushes_after(service.state, mark)),
            what="the flush of what deliver holds",
        )
        sent = [flush for flush in flushes_after(service.state, mark) if flush.changes]
        assert sent[0].changes >= 2, sent  # read again, not dropped
    assert group(stack, "account", account) == {"name": "Acme", "tier": "Hot"}
    report = check_convergence(stack.salesforce, stack.amplitude, second)
    assert report.ok, report.describe()


async def test_a_revision_during_a_flush_halts_it_and_the_changes_are_read_again(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    """Amplitude holds the flush's request; the revision arrives meanwhile. The flush stops
    sending and commits nothing, so no old meaning can land after the revision's backfill;
    what it held is read again and flushed at once, not a cadence period later."""
    # Only the revision may end the held flush, not the client's own retry deadline.
    settings = settings_for(stack, topic_prefix, amplitude={"retry_deadline_seconds": 120})
    mapping_file = tmp_path / "mapping.json"
    first, second = _mapping("Tier__c", 1), _mapping("Rating", 3600)
    _write(mapping_file, first, 0)
    assert stack.salesforce is not None
    assert stack.amplitude is not None
    amplitude = stack.amplitude.state
    async with running(settings, mapping_file) as service:
        deliver = service.deliver
        assert deliver is not None
        account = await org.create("Account", Name="Acme", Tier__c="Gold", Rating="Hot")
        await wait_until(
            lambda: (group(stack, "account", account) or {}).get("tier") == "Gold",
            what="the create delivered",
        )
        # Every request held (past any client timeout) until the revision halts the flush.
        amplitude.add_fault(Fault("timeout", remaining=10_000, delay_seconds=60))
        await org.update("Account", account, Tier__c="Silver")
        await wait_until(
            lambda: (
                service.state.flushing_since is not None and amplitude.faults[0].remaining < 10_000
            ),
            what="a flush of the update in flight, held by Amplitude",
        )
        mark = flush_mark(service.state)

        def since() -> list[FlushResult]:
            return flushes_after(service.state, mark)

        _write(mapping_file, second, 1)
        await wait_until(lambda: since(), what="the held flush to stop")
        halted = since()[0]
        assert not halted.ok, halted
        assert "mapping changed" in (halted.error or ""), halted
        amplitude.faults.clear()
        # The next may follow at once (the update means nothing under the revision).
        await wait_until(
            lambda: len(since()) > 1,
            what="the flush of what was read again (the cadence is an hour)",
        )
        again = since()[1]
        assert again.ok, again
        assert again.changes >= 1, again
        summary = await run_backfill(
            settings, MappingConfig.model_validate(second), checkpoint_path=tmp_path / "bf.json"
        )
        assert summary.error is None, summary.error
    assert group(stack, "account", account) == {"name": "Acme", "tier": "Hot"}
    report = check_convergence(stack.salesforce, stack.amplitude, second)
    assert report.ok, report.describe()
