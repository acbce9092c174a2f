"""Newest wins between change events and reads of the same second.

Salesforce keeps ``SystemModstamp`` to the whole second while a change event's
``commitTimestamp`` has milliseconds. A gap re-read (or an overflow's re-sync) that read a
silent write must not lose to the change event committed earlier in the same second.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.sandbox_stack import SandboxStack
from tests.runtime.conftest import Org, group, running, settings_for, wait_until


async def _start_of_a_second(org: Org) -> None:
    """Move the sandbox clock just past the start of a second, so that the writes that
    follow share it."""
    answer = await org._call("GET", "/clock")
    now = float(answer["epoch_seconds"])
    await org.advance_clock(1 - now % 1 + 0.05)


@pytest.mark.parametrize("recovery", ["gap_update", "gap_overflow"])
async def test_a_read_of_a_silent_write_wins_over_an_event_of_the_same_second(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path, recovery: str
) -> None:
    await _start_of_a_second(org)
    record_id = await org.create("Account", Name="Acme", Industry="Energy", emit_events=False)
    await org.update("Account", record_id, Industry="Media")  # an UPDATE event at X.05x
    await org.update("Account", record_id, Industry="Retail", emit_events=False)
    if recovery == "gap_update":
        await org.gap("Account", [record_id], "GAP_UPDATE")
    else:
        await org.gap_overflow("Account")
    stamp = (await org.record("Account", record_id))["SystemModstamp"]
    assert stamp.endswith(".000Z") or ".000+" in stamp, stamp  # whole seconds

    settings = settings_for(stack, topic_prefix, salesforce={"replay_start": "earliest"})
    async with running(settings, mapping_file):
        # One flush window holds the event and the read: the read reflects both writes.
        await wait_until(
            lambda: (group(stack, "account", record_id) or {}).get("industry") == "Retail",
            what=f"Salesforce's Industry of {record_id} (Retail) after the {recovery}",
        )
