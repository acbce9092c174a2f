"""Newest wins: a backfill's snapshot ends with catch-up reads, so a value read before a
change never lands over it, whatever the interleaving with the stream."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from structlog.testing import capture_logs

from pipeline.config.validation import load_mapping
from pipeline.runtime.backfill import CatchUp, ReadOptions, run_backfill
from pipeline.runtime.backfill.catch_up import MAX_ROUNDS, catch_up_for, snapshot_start
from pipeline.runtime.service import serving
from pipeline.salesforce.bulk_csv import RowColumns
from pipeline.salesforce.client import SalesforceClient
from pipeline.sandbox_stack import SandboxStack
from tests.runtime.conftest import Org, group, settings_for, wait_until

START = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
QUERY_MORE = re.compile(r"/query/[^/]+$")


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


class PageGate(httpx.AsyncBaseTransport):
    """Real HTTP, except that the first query-more request (a snapshot's second page)
    waits until :meth:`release`: the snapshot's query has run by then, so every row it
    returns is read as it was at that moment."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.holding = asyncio.Event()
        self._released = asyncio.Event()

    def release(self) -> None:
        self._released.set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.holding.is_set() and QUERY_MORE.search(request.url.path):
            self.holding.set()
            await self._released.wait()
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def industry(stack: SandboxStack, record_id: str) -> Any:
    return (group(stack, "account", record_id) or {}).get("industry")


async def _unlike(org: Org, ids: list[str], industries: set[str]) -> str:
    """The last of ``ids`` whose seeded Industry is none of ``industries`` (so that
    setting one of them is a change that emits an event)."""
    for record_id in reversed(ids):
        if (await org.record("Account", record_id))["Industry"] not in industries:
            return record_id
    raise AssertionError("every record has one of the industries")


SERVICE_MAPPING: dict[str, Any] = {
    "version": 1,
    "sync_cadence": {"mode": "interval", "every_seconds": 2},
    "mappings": [
        {
            "sfdc_object": "Account",
            "group_type": "account",
            "group_name_field": "Id",
            "group_properties": [
                {"sfdc_field": "Name", "amplitude_property": "name"},
                {"sfdc_field": "Industry", "amplitude_property": "industry"},
            ],
        }
    ],
}


@pytest.fixture
async def stack(kafka_bootstrap: str) -> AsyncIterator[SandboxStack]:
    async with SandboxStack(
        kafka_bootstrap=kafka_bootstrap,
        salesforce_options={"bulk_job_seconds": 0.0, "poll_timeout": 5.0},
    ) as started:
        yield started


@pytest.mark.integration
async def test_a_page_read_before_a_change_never_lands_over_the_stream(
    stack: SandboxStack, topic_prefix: str, tmp_path: Path
) -> None:
    """The service runs; a record is Energy; a backfill reads it; it becomes Media and
    the stream delivers that. Rather than slow REST calls and wait seconds, the
    snapshot's second page is held until then: the interleaving that left Energy."""
    org = Org(stack)
    ids = sorted(await org.seed("Account", 2_500))
    last = await _unlike(org, ids[2_000:], {"Energy", "Media"})  # REST's second page
    mapping_file = tmp_path / "mapping.json"
    mapping_file.write_text(json.dumps(SERVICE_MAPPING))
    settings = settings_for(stack, topic_prefix)
    gate = PageGate()
    try:
        async with serving(settings, mapping_file):
            await org.update("Account", last, Industry="Energy")
            await wait_until(lambda: industry(stack, last) == "Energy", what="Energy by stream")
            async with SalesforceClient.from_settings(settings.salesforce, transport=gate) as sf:
                backfill = asyncio.create_task(
                    run_backfill(
                        settings,
                        load_mapping(mapping_file),
                        checkpoint_path=tmp_path / "checkpoint.json",
                        options=ReadOptions(api="rest"),
                        salesforce=sf,
                    )
                )
                await wait_until(gate.holding.is_set, what="the snapshot's query")
                await org.update("Account", last, Industry="Media")
                await wait_until(lambda: industry(stack, last) == "Media", what="Media by stream")
                gate.release()  # the second page, read while Industry was Energy, goes out now
                summary = await backfill
    finally:
        await org.close()

    assert summary.completed
    assert industry(stack, last) == "Media"
    (item,) = summary.objects
    assert item.rows_read == 2_500
    assert item.caught_up == 1  # only the record that changed is read and sent again
    assert item.quiescent
    saved = orjson.loads((tmp_path / "checkpoint.json").read_bytes())["objects"]["Account"]
    assert saved["complete"]
    assert saved["catch_up"]["since"]


class ChangingOrg:
    """A Salesforce stand-in for catch-up alone: one record, changed before each of the
    first ``changes`` reads; the server's clock answers ``START``."""

    def __init__(self, changes: int, *, server_time: datetime | None = START) -> None:
        self.changes = changes
        self.moment = START
        self.queries: list[str] = []
        self._server_time = server_time

    async def server_time(self) -> datetime | None:
        return self._server_time

    def query(self, soql: str, *, all_rows: bool = False) -> AsyncIterator[dict[str, Any]]:
        self.queries.append(soql)
        if self.changes > 0:
            self.changes -= 1
            self.moment += timedelta(seconds=1)
        return self._records()

    async def _records(self) -> AsyncIterator[dict[str, Any]]:
        yield {"Id": "001A", "Industry": "Energy", "SystemModstamp": stamp(self.moment)}


async def test_rounds_repeat_until_one_finds_nothing_new() -> None:
    org = ChangingOrg(changes=2)
    catch_up = CatchUp(org, "Account", ["Id", "Industry"], START)
    catch_up.track([{"Id": "001A", "SystemModstamp": stamp(START)}])  # what the snapshot sent

    sent = []
    async for records in catch_up.rounds():
        sent.append([r["SystemModstamp"] for r in records])
        catch_up.track(records)

    assert sent == [[stamp(START + timedelta(seconds=1))], [stamp(START + timedelta(seconds=2))]]
    assert catch_up.quiescent
    assert catch_up.rounds_done == 3
    # Looks back the margin from the snapshot's start, then from the newest stamp seen.
    assert "SystemModstamp >= 2024-05-10T11:55:00Z" in org.queries[0]
    assert "SystemModstamp >= 2024-05-10T11:55:01Z" in org.queries[1]


async def test_a_record_that_never_settles_is_reported_loudly() -> None:
    org = ChangingOrg(changes=MAX_ROUNDS + 1)
    catch_up = CatchUp(org, "Account", ["Id"], START)

    with capture_logs() as logs:
        async for records in catch_up.rounds():
            catch_up.track(records)

    assert not catch_up.quiescent
    assert catch_up.rounds_done == MAX_ROUNDS
    (warning,) = [e for e in logs if e["event"] == "snapshot_catch_up_not_quiescent"]
    assert warning["log_level"] == "error"
    assert warning["object"] == "Account"


async def test_untouched_records_are_not_sent_again() -> None:
    org = ChangingOrg(changes=0)
    catch_up = CatchUp(org, "Account", ["Id"], START, where="Type = 'Customer'")
    catch_up.track([{"Id": "001A", "SystemModstamp": stamp(START)}])

    rounds = [records async for records in catch_up.rounds()]

    assert rounds == []
    assert catch_up.quiescent
    assert org.queries == [
        "SELECT Id, SystemModstamp FROM Account "
        "WHERE (Type = 'Customer') AND SystemModstamp >= 2024-05-10T11:55:00Z"
    ]


def test_only_stamps_a_round_can_find_again_are_remembered() -> None:
    catch_up = CatchUp(ChangingOrg(changes=0), "Account", ["Id"], START)
    catch_up.track(
        [
            {"Id": "001OLD", "SystemModstamp": stamp(START - timedelta(minutes=10))},
            {"Id": "001NEW", "SystemModstamp": stamp(START - timedelta(minutes=1))},
        ]
    )
    new = {"Id": "001NEW", "SystemModstamp": stamp(START - timedelta(minutes=1))}
    assert catch_up.seen == {catch_up.read_key(new)}


def test_a_block_of_bulk_rows_is_put_in_the_window_by_its_stamp_column() -> None:
    catch_up = CatchUp(ChangingOrg(changes=0), "Account", ["Id"], START)
    stamps = [stamp(START - timedelta(minutes=m)) for m in (10, 1, 20, 0)]
    rows = [{"Id": f"001{n}", "SystemModstamp": s} for n, s in enumerate(stamps)]
    block = RowColumns(["Id", "SystemModstamp"], [[r["Id"] for r in rows], stamps])
    no_stamp = RowColumns(["Id"], [["001A", "001B"]])

    assert catch_up.in_window_at(block) == catch_up.in_window_at(rows) == [1, 3]
    assert catch_up.in_window_at(no_stamp) == []
    catch_up.track(block)
    assert catch_up.seen == {catch_up.read_key(rows[1]), catch_up.read_key(rows[3])}


async def test_the_snapshot_starts_on_salesforces_clock() -> None:
    assert await snapshot_start(ChangingOrg(changes=0), "Account") == START
    # Without a Date header: the newest SystemModstamp, still Salesforce's own time.
    org = ChangingOrg(changes=0, server_time=None)
    assert await snapshot_start(org, "Account") == START
    assert org.queries == [
        "SELECT SystemModstamp FROM Account ORDER BY SystemModstamp DESC LIMIT 1"
    ]


class BulkLoadedOrg(ChangingOrg):
    """Many records, all stamped inside the window (a bulk load just before the snapshot),
    none of them changing again."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        super().__init__(changes=0)
        self.records = records

    async def _records(self) -> AsyncIterator[dict[str, Any]]:
        for record in self.records:
            yield record


async def test_a_bulk_loaded_window_ends_after_one_quiet_round() -> None:
    records = [
        {"Id": f"001B{n:014d}", "Industry": "Energy", "SystemModstamp": stamp(START)}
        for n in range(150_000)
    ]
    catch_up = CatchUp(BulkLoadedOrg(records), "Account", ["Id", "Industry"], START)
    catch_up.track(records)  # what the snapshot sent

    rounds = [len(found) async for found in catch_up.rounds()]

    # Every delivered read is remembered: nothing is sent again, the first round is quiet.
    assert rounds == []
    assert catch_up.quiescent
    assert catch_up.rounds_done == 1


def test_a_checkpoint_keeps_what_was_delivered() -> None:
    record = {"Id": "001A", "Industry": "Energy", "SystemModstamp": stamp(START)}
    catch_up = CatchUp(ChangingOrg(changes=0), "Account", ["Id", "Industry"], START)
    catch_up.track([record])

    saved = json.loads(json.dumps(catch_up.to_json()))
    resumed = catch_up_for(
        ChangingOrg(changes=0), "Account", ["Id", "Industry"], START, seen=saved["seen"]
    )

    assert resumed.seen == catch_up.seen
    assert resumed.changed([record]) == []
    # A checkpoint written after the resume still holds what it resumed from, plus the new.
    later = {"Id": "001B", "Industry": "Retail", "SystemModstamp": stamp(START)}
    resumed.track([later])
    again = catch_up_for(
        ChangingOrg(changes=0), "Account", ["Id", "Industry"], START,
        seen=json.loads(json.dumps(resumed.to_json()))["seen"],
    )  # fmt: skip
    assert again.seen == catch_up.seen | {catch_up.read_key(later)}
    # An older checkpoint's layout is forgotten, not an error.
    assert (
        catch_up_for(ChangingOrg(changes=0), "Account", ["Id"], START, seen={"001A": "x"}).seen
        == set()
    )


@pytest.mark.parametrize(
    "stamps",
    [
        ["2024-05-10T11:54:59.999Z", None, "", "2024-05-10T11:55"],  # all before the window
        ["2024-05-10T11:54:59.999Z", 5, None],  # all before, one not text
        ["2024-05-10T11:55:00", None],  # the window's first second itself
        ["2024-05-10T11:55:00.000+0000", "2024-05-10T11:54:59.999Z", "2024-05-10T11:55:00"],
        ["2024-05-10T11:55:00.001Z", 5, None, "", "2024-05-11", "2024-05-10T11:55"],
        [None, None],
        [],
    ],
)
def test_a_stamp_is_in_the_window_when_its_first_second_is(stamps: list[Any]) -> None:
    catch_up = CatchUp(ChangingOrg(changes=0), "Account", ["Id"], START)
    floor = "2024-05-10T11:55:00"  # START less the margin, to the second
    assert catch_up.floor == floor
    block = RowColumns(["Id", "SystemModstamp"], [[f"001{n}" for n in range(len(stamps))], stamps])

    expected = [i for i, s in enumerate(stamps) if isinstance(s, str) and s[:19] >= floor]
    assert catch_up.in_window_at(block) == expected
    assert CatchUp(ChangingOrg(changes=0), "Account", ["Id"], None).in_window_at(block) == [
        i for i, s in enumerate(stamps) if isinstance(s, str)
    ]
