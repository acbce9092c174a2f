"""A record changed A, then B, then back to A within one Salesforce second: its stamp
and values are those of a read delivered before, yet B landed since, so the catch-up
compares a record's read with the read delivered for it last, not with every one."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from pipeline.runtime.backfill import BackfillSummary, ReadOptions, run_backfill
from pipeline.runtime.backfill.catch_up import CatchUp, catch_up_for
from pipeline.runtime.backfill.checkpoint import CheckpointFile
from pipeline.runtime.backfill.keys import UNDELIVERED
from pipeline.runtime.backfill.meaning import MODSTAMP
from pipeline.runtime.backfill.read import ReadPosition
from pipeline.salesforce.client import SalesforceClient
from sfamp_sandbox.amplitude.state import Fault
from tests.backfill.conftest import Sandboxes, mapping
from tests.runtime.conftest import wait_until

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
    # A guard: comparing with the last delivered read still ends the rounds.
    catch_up = CatchUp(FlippingOrg("Retail", "Retail"), "Account", FIELDS, START)
    catch_up.track([read("Energy")])

    assert await delivered(catch_up) == [["Retail"]]
    assert catch_up.quiescent


def resumed(path: Path, *reads: str) -> CatchUp:
    """The catch-up a run resumed from the checkpoint at ``path`` makes, reading ``reads``."""
    saved = CheckpointFile.load(path).entry("Account", "f")
    assert saved is not None
    return catch_up_for(FlippingOrg(*reads), "Account", FIELDS, START, seen=saved.catch_up["seen"])


def save(path: Path, catch_up: CatchUp) -> None:
    CheckpointFile(path).save(
        "Account", "f", ReadPosition(finished=True), catch_up=catch_up.to_json()
    )


async def test_a_resumed_catch_up_knows_what_a_round_delivered_last(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    catch_up = CatchUp(FlippingOrg("Retail"), "Account", FIELDS, START)
    catch_up.track([read("Energy")])
    async with aclosing(catch_up.rounds()) as rounds:
        async for records in rounds:  # the run stops once B was delivered
            catch_up.track(records)
            save(path, catch_up)
            break

    assert resumed(path).seen == catch_up.seen
    assert await delivered(resumed(path, "Energy", "Energy")) == [["Energy"]]
    assert await delivered(resumed(path, "Retail")) == []
    # Saved again after the resume, the chunks it resumed from still count.
    again = resumed(path, "Energy", "Energy")
    save(path, again)
    assert await delivered(resumed(path, "Retail")) == []


async def test_a_read_being_sent_when_the_run_stopped_is_sent_again(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    catch_up = CatchUp(FlippingOrg("Retail"), "Account", FIELDS, START)
    catch_up.track([read("Energy")])
    async with aclosing(catch_up.rounds()) as rounds:
        async for _records in rounds:  # B may have landed; the run stops before it knows
            save(path, catch_up)
            break

    assert await delivered(resumed(path, "Energy", "Energy")) == [["Energy"]]


async def test_reads_being_sent_alone_stay_in_the_checkpoint_when_saved_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "checkpoint.json"
    catch_up = CatchUp(FlippingOrg("Retail"), "Account", FIELDS, START)  # nothing delivered
    async with aclosing(catch_up.rounds()) as rounds:
        async for _records in rounds:  # the run stops while the round is being sent
            save(path, catch_up)
            break

    save(path, resumed(path))  # resumed, and saved again before its first round

    assert resumed(path).latest == {"001A": UNDELIVERED}


class Flipping(httpx.AsyncBaseTransport):
    """Real HTTP; before each of the first catch-up rounds is read, record ``record_id``
    is changed to the next of ``industries`` (through the sandbox's control API), and
    ``then`` is awaited."""

    def __init__(
        self,
        sandboxes: Sandboxes,
        record_id: str,
        *industries: str,
        then: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._http = httpx.AsyncHTTPTransport()
        self._sandboxes, self._record_id, self._then = sandboxes, record_id, then
        self.industries = list(industries)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if f"{MODSTAMP} >=" in request.url.params.get("q", "") and self.industries:
            await change(self._sandboxes, self._record_id, self.industries.pop(0))
            if self._then is not None:
                await self._then()
        return await self._http.handle_async_request(request)

    async def aclose(self) -> None:
        await self._http.aclose()


async def change(sandboxes: Sandboxes, record_id: str, industry: str) -> None:
    url = f"{sandboxes.salesforce.base_url}/__sandbox/records/Account/{record_id}"
    (await sandboxes.control.patch(url, json={"Industry": industry})).raise_for_status()


async def seeded(sandboxes: Sandboxes) -> str:
    """300 Accounts written in one Salesforce second, as a quick A, B, A would be; the
    first one's id, its Industry Energy."""
    frozen = time.time()
    sandboxes.salesforce.state.org.clock = lambda: frozen
    record_id = (await sandboxes.seed("Account", 300))[0]
    await change(sandboxes, record_id, "Energy")
    return record_id


async def backfill(
    sandboxes: Sandboxes,
    tmp_path: Path,
    transport: Flipping,
    *,
    resume: bool = False,
    options: ReadOptions = ReadOptions(),  # noqa: B008 - frozen
) -> BackfillSummary:
    settings = sandboxes.settings()
    async with SalesforceClient.from_settings(settings.salesforce, transport=transport) as sf:
        return await run_backfill(
            settings, mapping(), checkpoint_path=tmp_path / "checkpoint.json", salesforce=sf,
            resume=resume, options=options,
        )  # fmt: skip


def industry(sandboxes: Sandboxes, record_id: str) -> Any:
    return sandboxes.groups()[("account", record_id)]["industry"]


async def test_a_backfill_ends_on_the_value_read_last(sandboxes: Sandboxes, tmp_path: Path) -> None:
    record_id = await seeded(sandboxes)
    transport = Flipping(sandboxes, record_id, "Retail", "Energy")

    summary = await backfill(sandboxes, tmp_path, transport)

    assert summary.completed, summary.error
    assert transport.industries == [], "the catch-up read fewer rounds than the scenario"
    assert industry(sandboxes, record_id) == "Energy"
    assert summary.objects[0].caught_up == 2


async def test_a_round_that_landed_before_a_stop_is_sent_again_on_resume(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    record_id = await seeded(sandboxes)

    async def land_then_fail() -> None:
        """The round's batch lands, but every answer is a 500: the run stops without
        knowing. Once the snapshot's batches landed, so that only the round's fail."""
        await wait_until(
            lambda: len(sandboxes.groups()) == 300, interval=0.01, what="the snapshot's groups"
        )
        fault = Fault("500_after_apply", remaining=10_000, path="/2/httpapi")
        sandboxes.amplitude.state.add_fault(fault)

    transport = Flipping(sandboxes, record_id, "Retail", then=land_then_fail)
    first = await backfill(sandboxes, tmp_path, transport, options=ReadOptions(api="bulk"))
    assert first.error is not None, "the round's delivery should have failed"
    assert industry(sandboxes, record_id) == "Retail"
    saved = CheckpointFile.load(tmp_path / "checkpoint.json").objects["Account"]["position"]
    # The snapshot's read stays named (its Bulk job, if any, is deleted on resume).
    assert (saved["method"], saved["job_id"] is not None) == ("bulk", True), saved

    sandboxes.amplitude.state.faults.clear()
    await change(sandboxes, record_id, "Energy")  # back to A, still in the same second
    resumed = await backfill(sandboxes, tmp_path, Flipping(sandboxes, record_id), resume=True)

    assert resumed.completed, resumed.error
    assert industry(sandboxes, record_id) == "Energy"


class DeletedOrg(FlippingOrg):
    """Salesforce whose recycle bin and rounds both read 001A deleted, stamped just before
    the snapshot's start (a long transaction's delete, committed after the snapshot read)."""

    def _records(self, industry: str | None) -> AsyncIterator[dict[str, Any]]:
        return self._deleted()

    async def _deleted(self) -> AsyncIterator[dict[str, Any]]:
        yield {**read("Energy"), MODSTAMP: "2024-05-10T11:59:50.000+0000", "IsDeleted": True}


async def test_a_record_the_bin_sent_and_the_snapshot_read_live_is_sent_again() -> None:
    fields = [*FIELDS, "IsDeleted"]
    catch_up = CatchUp(DeletedOrg(), "Account", fields, START, recycle_bin=True)
    bin_pages = [page async for page in catch_up.deleted_before()]
    assert [r["Id"] for page in bin_pages for r in page] == ["001A"]
    for page in bin_pages:
        catch_up.track(page)  # the delete, sent ahead of the snapshot
    live = [read("Energy")]  # the snapshot read it before the delete committed
    catch_up.read_again_if_binned(live)
    catch_up.track(live)

    # The round reads it deleted, as the bin did: sent again, so the delete lands last.
    rounds = []
    async for records in catch_up.rounds():
        rounds.append(records)
        catch_up.track(records)
    assert [[r["Id"] for r in records] for records in rounds] == [["001A"]]
    assert rounds[0][0]["IsDeleted"] is True
    assert catch_up.quiescent


async def test_a_record_the_bin_sent_that_no_snapshot_read_is_not_sent_again() -> None:
    fields = [*FIELDS, "IsDeleted"]
    catch_up = CatchUp(DeletedOrg(), "Account", fields, START, recycle_bin=True)
    async for page in catch_up.deleted_before():
        catch_up.track(page)
    catch_up.read_again_if_binned([{**read("Energy"), "Id": "001B"}])
    assert [records async for records in catch_up.rounds()] == []
