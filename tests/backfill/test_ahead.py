"""ReadAhead: the reader's source is closed however the read ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pipeline.runtime.backfill.ahead import ReadAhead


async def test_a_read_closed_while_its_reader_waits_closes_the_source() -> None:
    closed = asyncio.Event()

    async def pages() -> AsyncIterator[int]:
        try:
            for page in range(10):
                yield page
        finally:
            closed.set()  # where a Bulk job's delete runs

    ahead = ReadAhead(pages())
    async for page in ahead:
        assert page == 0
        break  # the reader now holds the next page, waiting for room
    await ahead.aclose()

    assert closed.is_set(), "the source was left open (its clean-up never ran)"
