"""A backfill keeps several batches on the wire while it transforms the next one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import httpx
import orjson

from pipeline.amplitude import AmplitudeClient
from pipeline.config.settings import AmplitudeSettings, Settings
from pipeline.runtime.backfill.checkpoint import CheckpointFile, RejectSink
from pipeline.runtime.backfill.deliver import (
    MAX_IN_FLIGHT,
    BackfillRun,
    InFlightBatches,
    ObjectRun,
)
from pipeline.runtime.backfill.meaning import ReadMeaning
from pipeline.runtime.backfill.read import DEFAULT_READ_OPTIONS, ReadPosition, RecordBatch
from pipeline.runtime.backfill.report import BackfillSummary, ObjectSummary
from pipeline.transform.group_update import GroupUpdate
from pipeline.transform.schema import schema_from_describe
from tests.backfill.conftest import mapping
from tests.runtime.conftest import wait_until

SCHEMA = schema_from_describe({"name": "Account", "fields": [{"name": "Id", "type": "id"}]})


def _batch(number: int) -> tuple[RecordBatch, list[GroupUpdate]]:
    records: list[dict[str, Any]] = [{"Id": f"001A{number:014d}"}]
    position = ReadPosition("bulk", "750A", "locator", number + 1)
    updates = [GroupUpdate("account", str(records[0]["Id"]), {"n": number})]
    return RecordBatch(records, "bulk", position, 3), updates


async def test_batches_stay_on_the_wire_while_the_next_is_transformed(
    tmp_path: Path,
) -> None:
    arrived: list[int] = []
    answer = asyncio.Event()

    async def amplitude(request: httpx.Request) -> httpx.Response:
        arrived.append(orjson.loads(request.content)["events"][0]["group_properties"]["$set"]["n"])
        await answer.wait()
        return httpx.Response(200, json={"code": 200, "events_ingested": 1})

    settings = AmplitudeSettings(api_key="key-123", transport="httpapi")
    config = mapping()
    async with AmplitudeClient(settings, transport=httpx.MockTransport(amplitude)) as client:
        run = BackfillRun(
            config, cast(Any, None), cast(Any, None), client, CheckpointFile(tmp_path / "cp"),
            None, RejectSink(Settings(_env_file=None), "file", tmp_path / "rejected.jsonl"),
            None, DEFAULT_READ_OPTIONS, None, BackfillSummary(),
        )  # fmt: skip
        item = ObjectSummary("Account")
        meaning = ReadMeaning("Account", config, SCHEMA)
        obj = ObjectRun(item, SCHEMA, config, ["Id"], "f", None, None, meaning)
        window = InFlightBatches(run, obj)
        for number in range(MAX_IN_FLIGHT - 1):
            # Handed on at once: nothing has been answered yet.
            await asyncio.wait_for(window.push(*_batch(number), ([], [])), timeout=5)
        last = asyncio.create_task(window.push(*_batch(MAX_IN_FLIGHT - 1), ([], [])))
        sent = min(MAX_IN_FLIGHT, client.concurrency.level)  # the client's requests at once
        await wait_until(lambda: len(arrived) == sent, timeout=5, what=f"{sent} batches sent")
        assert not last.done(), "the last batch waits until the first one was delivered"
        answer.set()
        await asyncio.wait_for(last, timeout=5)
        await window.drain()
    assert sorted(arrived) == list(range(MAX_IN_FLIGHT))
    assert item.identifications == MAX_IN_FLIGHT
