"""read_object (the re-sync reader) and the Bulk query client, against the Salesforce sandbox."""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from pipeline.errors import SalesforceRequestError
from pipeline.runtime.backfill import ReadOptions, ReadPosition, read_object, run_backfill
from pipeline.salesforce.bulk import BulkQuery
from pipeline.salesforce.bulk_csv import parse_csv, rest_converters
from pipeline.salesforce.client import SalesforceClient
from tests.backfill.conftest import Sandboxes, mapping


class NoBulk(httpx.AsyncBaseTransport):
    """The real sandbox, except that Bulk API 2.0 answers as in an org without it."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.bulk_calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "/jobs/query" in request.url.path:
            self.bulk_calls += 1
            body = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
            return httpx.Response(404, json=body)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_read_object_yields_typed_rest_shaped_pages_from_bulk(sandboxes: Sandboxes) -> None:
    await sandboxes.seed("Account", 3_000)
    pages: list[Sequence[dict[str, object]]] = []
    seen: list[tuple[int, int | None]] = []
    options = ReadOptions(rest_max_records=100, max_records=1_000, batch_rows=1_000)
    async with SalesforceClient.from_settings(sandboxes.settings().salesforce) as sf:
        async for page in read_object(
            sf, mapping().mappings[0], progress=lambda n, t: seen.append((n, t)), options=options
        ):
            pages.append(page)
        rest = [r async for r in sf.rest.query("SELECT Id, NumberOfEmployees FROM Account")]

    assert [len(p) for p in pages] == [1_000, 1_000, 1_000]
    assert seen == [(1_000, 3_000)] * 3
    first = pages[0][0]
    assert {"Id", "Name", "BillingCity", "Is_Active__c", "SystemModstamp"} <= set(first)
    assert isinstance(first["Is_Active__c"], bool)
    assert isinstance(first["AnnualRevenue"], float)
    assert str(first["SystemModstamp"]).endswith("+0000")
    by_id = {r["Id"]: r["NumberOfEmployees"] for r in rest}
    assert all(by_id[r["Id"]] == r["NumberOfEmployees"] for p in pages for r in p)


async def test_small_object_is_read_through_rest(sandboxes: Sandboxes, tmp_path: Path) -> None:
    await sandboxes.seed("Account", 300)
    summary = await run_backfill(
        sandboxes.settings(), mapping(), checkpoint_path=tmp_path / "c.json"
    )
    assert summary.objects[0].method == "rest"
    assert summary.bulk_jobs == 0
    assert len(sandboxes.groups()) == 300


async def test_falls_back_to_rest_when_bulk_is_unavailable(sandboxes: Sandboxes) -> None:
    ids = await sandboxes.seed("Account", 4_500)
    transport = NoBulk()
    options = ReadOptions(rest_max_records=0, batch_rows=2_000)  # a batch per REST page
    settings = sandboxes.settings().salesforce
    async with SalesforceClient.from_settings(settings, transport=transport) as sf:
        pages = [p async for p in read_object(sf, mapping().mappings[0], options=options)]
    assert transport.bulk_calls == 1
    assert [len(p) for p in pages] == [2_000, 2_000, 500]  # REST query pages
    assert [r["Id"] for p in pages for r in p] == sorted(ids)


class PageSizes(httpx.AsyncBaseTransport):
    """The real sandbox; remembers the maxRecords of each Bulk result page asked for."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.asked: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/results"):
            self.asked.append(int(request.url.params["maxRecords"]))
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_a_bulk_read_starts_with_a_short_page_and_resumes_inside_it(
    sandboxes: Sandboxes,
) -> None:
    ids = sorted(await sandboxes.seed("Account", 2_500))
    transport = PageSizes()
    options = ReadOptions(rest_max_records=0, max_records=1_000, batch_rows=100)
    account, checkpoint = mapping().mappings[0], ReadPosition()
    settings = sandboxes.settings().salesforce
    async with SalesforceClient.from_settings(settings, transport=transport) as sf:
        first = [p async for p in read_object(sf, account, options=options)]
        # Work on the first page starts once 3 batches arrived, not a whole page.
        assert transport.asked == [300, 1_000, 1_000, 1_000]
        order = [str(r["Id"]) for p in first for r in p]
        assert sorted(order) == ids
        async for _page in read_object(sf, account, checkpoint=checkpoint, options=options):
            if checkpoint.rows_done == 200:
                break  # two batches done, inside the short first page
        assert (checkpoint.locator, checkpoint.rows_done) == (None, 200)
        assert checkpoint.rows_read == 200
        transport.asked.clear()
        rest = [
            str(r["Id"])
            async for page in read_object(sf, account, checkpoint=checkpoint, options=options)
            for r in page
        ]
    assert transport.asked == [1_000, 1_000, 1_000]  # resumed in a page of the usual size
    assert rest == order[200:]
    assert checkpoint.rows_read == 2_500  # counted on from the stopped read's 200


async def test_rest_read_resumes_after_the_last_id(sandboxes: Sandboxes) -> None:
    ids = sorted(await sandboxes.seed("Account", 5_000))
    checkpoint = ReadPosition()
    options = ReadOptions(api="rest", batch_rows=2_000)  # a batch per REST page
    account = mapping().mappings[0]
    seen: list[list[str]] = []
    async with SalesforceClient.from_settings(sandboxes.settings().salesforce) as sf:
        async for page in read_object(sf, account, checkpoint=checkpoint, options=options):
            seen.append([str(r["Id"]) for r in page])
            if len(seen) == 2:
                break  # the second page was never finished with
        assert checkpoint.method == "rest"
        assert checkpoint.last_id == ids[1_999]
        assert checkpoint.rows_read == 2_000
        rest = [
            str(r["Id"])
            async for page in read_object(sf, account, checkpoint=checkpoint, options=options)
            for r in page
        ]

    assert seen[0] == ids[:2_000]
    assert rest == ids[2_000:]
    assert checkpoint.finished
    assert checkpoint.rows_read == 5_000


@pytest.mark.parametrize(
    "stored", [{}, {"rows_read": -3}, {"rows_read": "many"}, {"rows_read": 1.5}]
)
def test_a_checkpoint_without_a_usable_row_count_resumes_counting_from_0(
    stored: dict[str, object],
) -> None:
    """Only progress reads it: a checkpoint from before it was kept, or a hand-edited one,
    is not refused for it."""
    position = ReadPosition.from_json({"method": "rest", "last_id": "001A", **stored})
    assert (position.last_id, position.rows_read) == ("001A", 0)


async def test_bulk_query_pages_abort_and_delete(sandboxes: Sandboxes) -> None:
    await sandboxes.seed("Account", 2_500)
    async with SalesforceClient.from_settings(sandboxes.settings().salesforce) as sf:
        bulk = BulkQuery(sf.rest, poll_first=0.01)
        job = await bulk.wait((await bulk.create("SELECT Id, Name FROM Account")).id)
        pages = [p async for p in bulk.pages(job.id, max_records=1_000)]
        again = await bulk.page(job.id, pages[1].locator, max_records=1_000)
        await bulk.delete(job.id)
        sandboxes.salesforce.state.jobs.job_seconds = 60.0
        pending = await bulk.create("SELECT Id FROM Account")
        await bulk.abort(pending.id)
        with pytest.raises(SalesforceRequestError) as aborted:
            await bulk.wait(pending.id)

    assert job.records_processed == 2_500
    assert [p.number_of_records for p in pages] == [1_000, 1_000, 500]
    assert pages[-1].next_locator is None
    assert again.content == pages[1].content
    assert sum(1 for p in pages for _ in p.rows()) == 2_500
    assert aborted.value.error_code == "BULK_JOB_ABORTED"
    assert bulk.jobs_created == 2


def test_parse_csv_handles_quotes_newlines_and_empty_cells() -> None:
    content = (
        b'"Id","Name","Is_Active__c","Seats","Score","Modified","Tags"\n'
        b'"001A","Say ""hi"", then\nleave","true","12","1.5","2024-04-09T20:26:27.000Z",""\n'
        b'"001B","","false","","","",""\n'
    )
    types = {"Is_Active__c": "boolean", "Seats": "int", "Score": "double", "Modified": "datetime"}
    rows = list(parse_csv(content, rest_converters(types)))

    assert rows[0] == {
        "Id": "001A",
        "Name": 'Say "hi", then\nleave',
        "Is_Active__c": True,
        "Seats": 12,
        "Score": 1.5,
        "Modified": "2024-04-09T20:26:27.000+0000",
        "Tags": None,
    }
    assert rows[1]["Is_Active__c"] is False
    assert rows[1]["Name"] is None
    assert rows[1]["Seats"] is None
    assert list(parse_csv(b"")) == []


def test_parse_csv_converts_repeated_texts_alike_and_names_ragged_rows() -> None:
    content = (
        b'"Id","Seats","Score"\n'
        + b'"001A","12","1.0"\n' * 3
        + b'"001B","7"\n"001C","5","2.5","x"\n'
    )
    rows = list(parse_csv(content, rest_converters({"Seats": "int", "Score": "double"})))

    assert rows[:3] == [{"Id": "001A", "Seats": 12, "Score": 1.0}] * 3
    assert rows[3] == {"Id": "001B", "Seats": 7}  # a short row has the columns it has
    assert rows[4] == {"Id": "001C", "Seats": 5, "Score": 2.5}


async def test_result_pages_are_freed_page_by_page_whatever_the_collector_thresholds(
    sandboxes: Sandboxes,
) -> None:
    # httpx keeps each response in a reference cycle: without the collection per page,
    # every page's body would stay until the cyclic collector ran (here: never).
    await sandboxes.seed("Account", 6_000)
    options = ReadOptions(rest_max_records=0, max_records=500, batch_rows=500)
    alive: list[int] = []
    gc.disable()
    try:
        async with SalesforceClient.from_settings(sandboxes.settings().salesforce) as sf:
            async for _page in read_object(sf, mapping().mappings[0], options=options):
                alive.append(sum(isinstance(o, httpx.Response) for o in gc.get_objects()))
    finally:
        gc.enable()
    assert len(alive) == 12
    assert max(alive) <= 4, alive  # the page in use, the one downloading, and few others
