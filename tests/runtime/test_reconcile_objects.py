"""A reconcile of several objects begins the next objects' reads (their Bulk jobs) while
it still reads the one before, as a backfill does; a run that stops first leaves no job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.runtime.backfill import ReadOptions, StopRequest
from pipeline.runtime.reconcile.run import run_reconcile
from pipeline.salesforce.client import SalesforceClient
from pipeline.sandbox_stack import SandboxStack
from tests.runtime.conftest import Org, settings_for
from tests.runtime.test_reconcile import StopAfterFirstBatch, bulk_jobs
from tests.support.held_pages import HeldPages

ACCOUNTS, CONTACTS, OPPORTUNITIES = 30, 20, 10


def reconciled(sfdc_object: str, group_type: str, sfdc_field: str) -> dict[str, Any]:
    """A mapping of one field change events never carry (a formula, LastActivityDate)."""
    return {
        "sfdc_object": sfdc_object,
        "group_type": group_type,
        "group_name_field": "Id",
        "group_properties": [{"sfdc_field": sfdc_field, "amplitude_property": "reconciled"}],
    }


def reconciling(*mappings: dict[str, Any]) -> MappingConfig:
    return MappingConfig.model_validate(
        {"sync_cadence": {"mode": "hourly"}, "reconcile": {"mode": "off"}, "mappings": mappings}
    )


ACCOUNT = reconciled("Account", "account", "Revenue_Per_Employee__c")
CONTACT = reconciled("Contact", "contact", "LastActivityDate")
CONFIG = reconciling(ACCOUNT, CONTACT)
THREE_OBJECTS = reconciling(
    ACCOUNT, CONTACT, reconciled("Opportunity", "opportunity", "LastActivityDate")
)


async def seeded(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path, *, opportunities: int = 0
) -> Settings:
    """Settings of a run with its state in ``tmp_path``, Accounts and Contacts seeded (and
    ``opportunities`` Opportunities)."""
    await org.seed("Account", ACCOUNTS)
    await org.seed("Contact", CONTACTS)
    if opportunities:
        await org.seed("Opportunity", opportunities)
    return settings_for(stack, topic_prefix, runtime={"state_dir": str(tmp_path)})


@pytest.mark.parametrize("opportunities", [0, OPPORTUNITIES], ids=["2", "3"])
async def test_the_next_objects_jobs_run_while_the_one_before_is_read(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path, opportunities: int
) -> None:
    settings = await seeded(stack, org, topic_prefix, tmp_path, opportunities=opportunities)
    config, last = (THREE_OBJECTS, "Opportunity") if opportunities else (CONFIG, "Contact")
    # Account's pages wait until the last object's job was created.
    transport = HeldPages(last)
    async with SalesforceClient.from_settings(settings.salesforce, transport=transport) as sf:
        summary = await run_reconcile(
            settings, config, options=ReadOptions(api="bulk"), salesforce=sf
        )

    assert summary.completed, summary.error
    assert transport.seen[0] == transport.created, (
        f"Account's first page was read before {last}'s job was created: {transport.seen}"
    )
    read = [ACCOUNTS, CONTACTS, opportunities] if opportunities else [ACCOUNTS, CONTACTS]
    assert [item.records_read for item in summary.objects] == read
    assert not bulk_jobs(stack), "a Bulk job was left behind"


@pytest.mark.parametrize("opportunities", [0, OPPORTUNITIES], ids=["2", "3"])
async def test_a_run_stopped_before_the_next_objects_turn_deletes_its_job(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path, opportunities: int
) -> None:
    settings = await seeded(stack, org, topic_prefix, tmp_path, opportunities=opportunities)
    config, last = (THREE_OBJECTS, "Opportunity") if opportunities else (CONFIG, "Contact")
    # Account's pages wait until the last object's job was created: every later object
    # is open, its job created, when the run stops.
    transport, stop = HeldPages(last), StopRequest()
    async with SalesforceClient.from_settings(settings.salesforce, transport=transport) as sf:
        first = await run_reconcile(
            settings, config, options=ReadOptions(api="bulk"), salesforce=sf,
            progress=StopAfterFirstBatch(stop), stop=stop,
        )  # fmt: skip

    assert first.interrupted == "SIGTERM", first.error
    assert transport.created in transport.seen, transport.seen
    # Account's job stays: the checkpoint names it, and a resume reads on from it.
    left = [job.compiled.obj.name for job in bulk_jobs(stack).values()]
    assert left == ["Account"], f"the stopped run left a later object's Bulk job behind: {left}"
    assert [item.sfdc_object for item in first.objects] == ["Account"]

    second = await run_reconcile(settings, config, options=ReadOptions(api="bulk"))

    assert second.resumed
    assert second.completed, second.error
    read = [0, CONTACTS, opportunities] if opportunities else [0, CONTACTS]
    assert [item.records_read for item in second.objects] == read
    assert not bulk_jobs(stack), "the resumed run left a Bulk job behind"
