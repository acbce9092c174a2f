"""A backfill of several objects opens the next ones, and has Salesforce run their Bulk
jobs, while it still reads the one before; a run that stops first leaves no job behind."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import orjson
import pytest

from pipeline.config.mapping import MappingConfig
from pipeline.runtime.backfill import BackfillSummary, ReadOptions, StopRequest, run_backfill
from pipeline.salesforce.client import SalesforceClient
from tests.backfill.conftest import Sandboxes
from tests.backfill.test_backfill_run import StopAtFirstBatch
from tests.support.held_pages import HeldPages

ACCOUNTS, CONTACTS, OPPORTUNITIES = 300, 200, 100
ROWS = {"Account": ACCOUNTS, "Contact": CONTACTS, "Opportunity": OPPORTUNITIES}
MAPPED = {
    "Account": ("account", {"Name": "name", "Industry": "industry"}),
    "Contact": ("contact", {"Email": "email", "Title": "title"}),
    "Opportunity": ("opportunity", {"Name": "name", "StageName": "stage"}),
}


def objects_mapped(*objects: str) -> MappingConfig:
    """Each of ``objects`` (of :data:`MAPPED`) to its group type, named by its Id."""

    def by_id(sfdc_object: str) -> dict[str, object]:
        group_type, fields = MAPPED[sfdc_object]
        properties = [{"sfdc_field": f, "amplitude_property": p} for f, p in fields.items()]
        return {
            "sfdc_object": sfdc_object,
            "group_type": group_type,
            "group_name_field": "Id",
            "group_properties": properties,
        }

    return MappingConfig.model_validate(
        {"sync_cadence": {"mode": "hourly"}, "mappings": [by_id(name) for name in objects]}
    )


async def seeded(sandboxes: Sandboxes, objects: tuple[str, ...]) -> None:
    for sfdc_object in objects:
        await sandboxes.seed(sfdc_object, ROWS[sfdc_object])


async def backfilled(
    sandboxes: Sandboxes,
    tmp_path: Path,
    transport: httpx.AsyncBaseTransport,
    options: ReadOptions,
    objects: tuple[str, ...] = ("Account", "Contact"),
) -> BackfillSummary:
    """``objects`` (of :data:`MAPPED`) seeded and backfilled in one run, Salesforce
    through ``transport``."""
    await seeded(sandboxes, objects)
    settings = sandboxes.settings()
    async with SalesforceClient.from_settings(settings.salesforce, transport=transport) as sf:
        return await run_backfill(
            settings, objects_mapped(*objects), checkpoint_path=tmp_path / "checkpoint.json",
            options=options, salesforce=sf,
        )  # fmt: skip


@pytest.mark.parametrize(
    "objects", [("Account", "Contact"), ("Account", "Contact", "Opportunity")], ids=["2", "3"]
)
async def test_the_next_objects_jobs_run_while_the_one_before_is_read(
    sandboxes: Sandboxes, tmp_path: Path, objects: tuple[str, ...]
) -> None:
    # Account's pages wait until the last object's job was created.
    transport = HeldPages(objects[-1])
    summary = await backfilled(sandboxes, tmp_path, transport, ReadOptions(api="bulk"), objects)

    assert summary.completed, summary.error
    assert transport.seen[0] == transport.created, (
        f"Account's first page was read before {objects[-1]}'s job was created: {transport.seen}"
    )
    assert [item.sfdc_object for item in summary.objects] == list(objects)
    assert [item.rows_read for item in summary.objects] == [ROWS[name] for name in objects]
    types = [group_type for group_type, _ in sandboxes.groups()]
    for name in objects:
        group_type = MAPPED[name][0]
        assert types.count(group_type) == ROWS[name], f"{group_type} groups"
    assert not sandboxes.salesforce.state.jobs.jobs, "a Bulk job was left behind"


@pytest.mark.parametrize(
    "objects", [("Account", "Contact"), ("Account", "Contact", "Opportunity")], ids=["2", "3"]
)
async def test_a_run_stopped_before_the_next_objects_turn_deletes_its_job(
    sandboxes: Sandboxes, tmp_path: Path, objects: tuple[str, ...]
) -> None:
    await seeded(sandboxes, objects)
    config, checkpoint = objects_mapped(*objects), tmp_path / "checkpoint.json"
    # Account's pages wait until the last object's job was created: every later
    # object is open, its job created, when the run stops.
    transport, stop = HeldPages(objects[-1]), StopRequest()
    settings = sandboxes.settings()
    async with SalesforceClient.from_settings(settings.salesforce, transport=transport) as sf:
        first = await run_backfill(
            settings, config, checkpoint_path=checkpoint, options=ReadOptions(api="bulk"),
            salesforce=sf, progress=StopAtFirstBatch(stop), stop=stop,
        )  # fmt: skip

    assert first.interrupted == "stopped for the test"
    assert transport.created in transport.seen, transport.seen
    assert not sandboxes.salesforce.state.jobs.jobs, "the stopped run left a Bulk job behind"
    assert [item.sfdc_object for item in first.objects] == ["Account"]
    saved = orjson.loads(checkpoint.read_bytes())["objects"]
    assert [name for name in objects[1:] if name in saved] == []

    second = await run_backfill(
        settings, config, checkpoint_path=checkpoint, resume=True,
        options=ReadOptions(api="bulk"),
    )  # fmt: skip

    assert second.completed, second.error
    assert [item.rows_read for item in second.objects] == [ROWS[name] for name in objects]
    assert not sandboxes.salesforce.state.jobs.jobs, "the resumed run left a Bulk job behind"


class ReadsSeen(httpx.AsyncBaseTransport):
    """Real HTTP; Account's catch-up query waits up to ``HOLD`` seconds for Contact's
    snapshot query (a REST read ordered by Id); ``seen`` lists both as they happen."""

    HOLD = 5.0

    def __init__(self) -> None:
        self._http = httpx.AsyncHTTPTransport()
        self._contact_read = asyncio.Event()
        self.seen: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        soql = request.url.params.get("q", "")
        if "FROM Account" in soql and "SystemModstamp >=" in soql:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._contact_read.wait(), self.HOLD)
            self.seen.append("Account's catch-up")
        elif "FROM Contact" in soql and "ORDER BY Id" in soql:
            self.seen.append("Contact read")
            self._contact_read.set()
        return await self._http.handle_async_request(request)

    async def aclose(self) -> None:
        await self._http.aclose()


async def test_the_next_object_reads_no_page_before_its_turn(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    transport = ReadsSeen()
    summary = await backfilled(sandboxes, tmp_path, transport, ReadOptions(api="rest"))

    assert summary.completed, summary.error
    # Read ahead, its REST cursor would wait idle for Account's turn to end (and
    # Salesforce drops a cursor idle for 15 minutes).
    assert transport.seen == ["Account's catch-up", "Contact read"], transport.seen
    assert [item.rows_read for item in summary.objects] == [ACCOUNTS, CONTACTS]
