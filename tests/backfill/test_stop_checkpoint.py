"""A stopped backfill checkpoints every batch that was delivered at the front of what it
had in flight, so that a resume does not send it again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from pipeline.runtime.backfill import ReadOptions, StopRequest, run_backfill
from pipeline.salesforce.bulk import BulkQuery, ResultPage
from tests.backfill.conftest import Sandboxes, mapping
from tests.runtime.conftest import wait_until

pytestmark = pytest.mark.integration

# A first result page of three batches of 1,000 rows; the next page is held back.
OPTIONS = ReadOptions(api="bulk", max_records=3_000, batch_rows=1_000)


async def test_a_stop_checkpoints_the_delivered_batches_it_had_not_settled(
    sandboxes: Sandboxes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sandboxes.seed("Account", 6_000)
    page, asked = BulkQuery.page, 0

    async def second_page_never_comes(
        bulk: BulkQuery, job_id: str, locator: str | None, *, max_records: int
    ) -> ResultPage:
        nonlocal asked
        asked += 1
        if asked > 1:
            await asyncio.Event().wait()  # until the run is cancelled
        return await page(bulk, job_id, locator, max_records=max_records)

    monkeypatch.setattr(BulkQuery, "page", second_page_never_comes)
    checkpoint, stop = tmp_path / "checkpoint.json", StopRequest()
    run = asyncio.create_task(
        run_backfill(
            sandboxes.settings(), mapping(), checkpoint_path=checkpoint, options=OPTIONS,
            stop=stop,
        )
    )  # fmt: skip
    # The first page's three batches are delivered; the run waits for the next page.
    await wait_until(lambda: len(sandboxes.groups()) == 3_000, what="the first page delivered")
    stop.set("stopped for the test")
    summary = await asyncio.wait_for(run, 30)

    assert summary.interrupted == "stopped for the test"
    saved = orjson.loads(checkpoint.read_bytes())["objects"].get("Account", {})
    # Was: nothing, as a batch was checkpointed only once six were in flight.
    assert saved.get("position", {}).get("rows_read") == 3_000, saved
    requests = sandboxes.requests

    monkeypatch.setattr(BulkQuery, "page", page)
    resumed = await run_backfill(
        sandboxes.settings(), mapping(), checkpoint_path=checkpoint, resume=True,
        options=OPTIONS,
    )  # fmt: skip
    assert resumed.completed
    assert resumed.objects[0].rows_read == 3_000  # the rest, not the first page again
    assert len(sandboxes.groups()) == 6_000
    assert sandboxes.requests - requests == resumed.objects[0].requests
