"""A record changed A, then B, then back to A within one Salesforce second: its stamp
and values are those of a read delivered before, yet B landed since, so the catch-up
compares a record's read with the read delivered for it last, not with every one."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from pipeline.runtime.backfill import run_backfill
from pipeline.runtime.backfill.catch_up import CatchUp, catch_up_for
from pipeline.runtime.backfill.checkpoint import CheckpointFile
from pipeline.runtime.backfill.meaning import MODSTAMP
from pipeline.runtime.backfill.read import ReadPosition
from pipeline.salesforce.client import SalesforceClient
from tests.backfill.conftest import Sandboxes, mapping

START = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
FIELDS = ["Id", "Industry", MODSTAMP]


def read(industry: str) -> dict[str, Any]:
    """Record 001A as read at any moment of the same second."""
    return {"Id": "001A", "Industry": industry, MODSTAMP: "2024-05-10T12:00:00.000+0000"}


class FlippingOrg:
    """Salesforce for the catch-up alone: each round reads the next of ``reads``."""

    def __init__(self, *reads: str) -> None:
        self.reads = list(reads)

    async def server_time(self) -> datetime | None:
        return START

    def query(self, soql: str, *, all_rows: bool = False) -> AsyncIterator[dict[str, Any]]:
        return self._records(self.reads.pop(0) if self.reads else None)

    async def _records(self, industry: str | None) -> AsyncIterator[dict[str, Any]]:
        if industry is not None:
            yield read(industry)


async def delivered(catch_up: CatchUp) -> list[list[str]]:
    """The Industry of each round's records, each round tracked as delivered."""
    rounds = []
    async for records in catch_up.rounds():
        rounds.append([record["Industry"] for record in records])
        catch_up.track(records)
    return rounds


async def test_a_record_changed_back_within_the_second_is_sent_again() -> None:
    catch_up = CatchUp(FlippingOrg("Retail", "Energy", "Energy"), "Account", FIELDS, START)
    catch_up.track([read("Energy")])  # what the snapshot sent

    # Energy is sent again: B (Retail) landed after the snapshot's Energy.
    assert await delivered(catch_up) == [["Retail"], ["Energy"]]
    assert catch_up.quiescent


async def test_a_read_like_the_last_delivered_is_not_sent_again() -> None:
    catch_up = CatchUp(FlippingOrg("Retail", "Retail"), "Account", FIELDS, START)
    catch_up.track([read("Energy")])

    assert await delivered(catch_up) == [["Retail"]]
    assert catch_up.latest == {"001A": catch_up.read_key(read("Retail"))}


async def test_a_resumed_catch_up_knows_what_a_round_delivered_last(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    catch_up = CatchUp(FlippingOrg("Retail"), "Account", FIELDS, START)
    catch_up.track([read("Energy")])
    async for records in catch_up.rounds():  # the run stops once B was delivered
        catch_up.track(records)
        CheckpointFile(path).save(
            "Account", "f", ReadPosition(finished=True), catch_up=catch_up.to_json()
        )
        break

    saved = CheckpointFile.load(path).entry("Account", "f")
    assert saved is not None
    resumed = catch_up_for(
        FlippingOrg("Energy", "Energy"), "Account", FIELDS, START, seen=saved.catch_up["seen"]
    )

    assert resumed.seen == catch_up.seen
    assert await delivered(resumed) == [["Energy"]]
    # Written again, it is read back whole: the older layout's chunks and the newer.
    again = json.loads(json.dumps(resumed.to_json()))["seen"]
    assert catch_up_for(FlippingOrg(), "Account", FIELDS, START, seen=again).latest == {
        "001A": catch_up.read_key(read("Energy"))
    }


class Flipping(httpx.AsyncBaseTransport):
    """Real HTTP; before each of the first catch-up rounds is read, record ``record_id``
    is changed to the next of ``industries`` (through the sandbox's control API)."""

    def __init__(self, sandboxes: Sandboxes, record_id: str, *industries: str) -> None:
        self._http = httpx.AsyncHTTPTransport()
        self._sandboxes, self._record_id = sandboxes, record_id
        self.industries = list(industries)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if f"{MODSTAMP} >=" in request.url.params.get("q", "") and self.industries:
            await self._sandboxes.control.patch(
                f"{self._sandboxes.salesforce.base_url}/__sandbox/records/Account/"
                f"{self._record_id}",
                json={"Industry": self.industries.pop(0)},
            )
        return await self._http.handle_async_request(request)

    async def aclose(self) -> None:
        await self._http.aclose()


async def test_a_backfill_ends_on_the_value_read_last(sandboxes: Sandboxes, tmp_path: Path) -> None:
    # Every write lands in one Salesforce second, as a quick A, B, A would.
    frozen = time.time()
    sandboxes.salesforce.state.org.clock = lambda: frozen
    record_id = (await sandboxes.seed("Account", 300))[0]
    url = f"{sandboxes.salesforce.base_url}/__sandbox/records/Account/{record_id}"
    (await sandboxes.control.patch(url, json={"Industry": "Energy"})).raise_for_status()
    transport = Flipping(sandboxes, record_id, "Retail", "Energy")
    settings = sandboxes.settings()

    async with SalesforceClient.from_settings(settings.salesforce, transport=transport) as sf:
        summary = await run_backfill(
            settings, mapping(), checkpoint_path=tmp_path / "checkpoint.json", salesforce=sf
        )

    assert summary.completed, summary.error
    assert transport.industries == [], "the catch-up read fewer rounds than the scenario"
    assert sandboxes.groups()[("account", record_id)]["industry"] == "Energy"
    assert summary.objects[0].caught_up == 2
