"""Newest wins at the end of a backfill: its catch-up rounds re-send a record whose read
differs from the one delivered, even within the second that read it (``SystemModstamp``
has whole seconds), and a record deleted after its page was read gets its ``on_delete``
outcome instead of keeping the live values delivered last."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.config.validation import load_mapping
from pipeline.runtime.backfill import ReadOptions, run_backfill
from pipeline.runtime.backfill.catch_up import CatchUp
from pipeline.runtime.backfill.report import BackfillSummary
from pipeline.runtime.service import serving
from pipeline.salesforce.client import SalesforceClient
from pipeline.sandbox_stack import SandboxStack
from tests.runtime.conftest import Org, group, settings_for, wait_until

START = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
SECOND = "2024-05-10T12:00:00.000+0000"
QUERY = re.compile(r"/query/?$")
QUERY_MORE = re.compile(r"/query/[^/]+$")

MAPPING: dict[str, Any] = {
    "version": 1,
    "sync_cadence": {"mode": "interval", "every_seconds": 1},
    "mappings": [
        {
            "sfdc_object": "Account",
            "group_type": "account",
            "group_name_field": "Id",
            "group_properties": [{"sfdc_field": "Industry", "amplitude_property": "industry"}],
            "on_delete": "mark",
        }
    ],
}


class Gate:
    """Holds the first request that ``matches`` until :meth:`release`."""

    def __init__(self, matches: Callable[[httpx.Request], bool]) -> None:
        self.matches = matches
        self.holding = asyncio.Event()
        self.passed = asyncio.Event()  # the held request was answered
        self._released = asyncio.Event()

    def release(self) -> None:
        self._released.set()


class GatedTransport(httpx.AsyncBaseTransport):
    """Real HTTP to the sandbox, with :class:`Gate`\\ s on chosen requests."""

    def __init__(self, *gates: Gate) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._gates = gates

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        gate = next((g for g in self._gates if not g.holding.is_set() and g.matches(request)), None)
        if gate is not None:
            gate.holding.set()
            await gate._released.wait()
        response = await self._inner.handle_async_request(request)
        if gate is not None:
            gate.passed.set()
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def snapshot_query(request: httpx.Request) -> bool:
    soql = request.url.params.get("q", "")
    return bool(QUERY.search(request.url.path)) and "SystemModstamp >=" not in soql


def second_page(request: httpx.Request) -> bool:
    return bool(QUERY_MORE.search(request.url.path))


def account(stack: SandboxStack, record_id: str) -> dict[str, Any]:
    return group(stack, "account", record_id) or {}


@pytest.fixture
async def stack(kafka_bootstrap: str) -> AsyncIterator[SandboxStack]:
    async with SandboxStack(
        kafka_bootstrap=kafka_bootstrap,
        salesforce_options={"bulk_job_seconds": 0.0, "poll_timeout": 5.0},
    ) as started:
        yield started


async def _backfill(
    stack: SandboxStack, topic_prefix: str, tmp_path: Path, transport: GatedTransport
) -> tuple[asyncio.Task[BackfillSummary], Any]:
    mapping_file = tmp_path / "mapping.json"
    settings = settings_for(stack, topic_prefix)
    client = SalesforceClient.from_settings(settings.salesforce, transport=transport)
    sf = await client.__aenter__()
    task = asyncio.create_task(
        run_backfill(
            settings,
            load_mapping(mapping_file),
            checkpoint_path=tmp_path / "checkpoint.json",
            options=ReadOptions(api="rest"),
            salesforce=sf,
        )
    )
    return task, client


async def _start_of_a_second(org: Org) -> None:
    now = float((await org._call("GET", "/clock"))["epoch_seconds"])
    await org.advance_clock(1 - now % 1 + 0.01)


@pytest.mark.integration
async def test_a_record_deleted_after_its_page_was_read_ends_deleted(
    stack: SandboxStack, topic_prefix: str, tmp_path: Path
) -> None:
    org = Org(stack)
    mapping_file = tmp_path / "mapping.json"
    mapping_file.write_text(json.dumps(MAPPING))
    page = Gate(second_page)
    try:
        ids = sorted(await org.seed("Account", 2_500))
        last = ids[-1]  # on REST's second page
        async with serving(settings_for(stack, topic_prefix), mapping_file):
            backfill, client = await _backfill(stack, topic_prefix, tmp_path, GatedTransport(page))
            try:
                await wait_until(page.holding.is_set, what="the snapshot's second page")
                await org.delete("Account", last)
                await wait_until(
                    lambda: account(stack, last).get("sfdc_deleted") is True,
                    what="the stream's delete mark",
                )
                page.release()  # read while the record was live: it lands after the mark
                summary = await backfill
            finally:
                await client.__aexit__(None, None, None)
    finally:
        await org.close()

    assert summary.completed, summary.error
    assert account(stack, last).get("sfdc_deleted") is True, account(stack, last)


@pytest.mark.integration
async def test_a_second_change_within_the_second_of_the_read_is_sent_again(
    stack: SandboxStack, topic_prefix: str, tmp_path: Path
) -> None:
    org = Org(stack)
    mapping_file = tmp_path / "mapping.json"
    mapping_file.write_text(json.dumps(MAPPING))
    query, page = Gate(snapshot_query), Gate(second_page)
    try:
        ids = sorted(await org.seed("Account", 2_500))
        last = ids[-1]  # on REST's second page
        async with serving(settings_for(stack, topic_prefix), mapping_file):
            transport = GatedTransport(query, page)
            backfill, client = await _backfill(stack, topic_prefix, tmp_path, transport)
            try:
                await wait_until(query.holding.is_set, what="the snapshot's query")
                await _start_of_a_second(org)
                await org.update("Account", last, Industry="Media")
                query.release()  # the query reads Media
                await wait_until(query.passed.is_set, interval=0.01, what="the query's answer")
                await org.update("Account", last, Industry="Retail")
                read_at = (await org.record("Account", last))["SystemModstamp"]
                await wait_until(
                    lambda: account(stack, last).get("industry") == "Retail",
                    what="Retail by stream",
                )
                page.release()  # Media, read in the same second as Retail, lands after it
                summary = await backfill
            finally:
                await client.__aexit__(None, None, None)
    finally:
        await org.close()

    assert summary.completed, summary.error
    assert account(stack, last).get("industry") == "Retail", (account(stack, last), read_at)
    (item,) = summary.objects
    assert item.quiescent


class OneRecord:
    """A Salesforce stand-in for catch-up alone: one record whose stamp never moves."""

    def __init__(self, industry: str) -> None:
        self.industry = industry
        self.queries: list[tuple[str, bool]] = []

    async def server_time(self) -> datetime | None:
        return START

    def query(self, soql: str, *, all_rows: bool = False) -> AsyncIterator[dict[str, Any]]:
        self.queries.append((soql, all_rows))
        return self._records()

    async def _records(self) -> AsyncIterator[dict[str, Any]]:
        yield {"Id": "001A", "Industry": self.industry, "SystemModstamp": SECOND}


async def test_a_round_compares_what_was_read_not_only_the_stamp() -> None:
    org = OneRecord("Retail")
    catch_up = CatchUp(org, "Account", ["Id", "Industry"], START)
    catch_up.track([{"Id": "001A", "Industry": "Media", "SystemModstamp": SECOND}])

    sent = []
    async for records in catch_up.rounds():
        sent.append(records)
        catch_up.track(records)

    assert [[r["Industry"] for r in records] for records in sent] == [["Retail"]]
    assert catch_up.quiescent
