"""The garbage-collector policy of an emulator serving as a process of its own.

An emulator's heap is mostly the service it stands in for: the org's records, the
project's groups with their last identifications, the insert ids it remembers. That
state lives as long as the process and holds no reference cycles, yet CPython's
automatic collections walk it again and again as it grows. In the Amplitude sandbox
they were half of what a ``/2/httpapi`` request of 2,000 ``$groupidentify`` events
costs: 11.4 µs an event with them, 4.8 µs without, over a 200,000-record backfill's
requests replayed in one process. A backfill benchmarked against the sandboxes then
waited on the emulator's CPU instead of measuring the client's
(``benchmarks/trace_backfill.py``).

So a served emulator (``sfamp sandbox salesforce|amplitude|up``, ``python -m
sfamp_sandbox.<emulator>``) collects on a timer instead: one full collection every
:data:`COLLECT_EVERY_SECONDS`. What it frees is the few cycles the web server leaves
(about 10 objects a request in the same backfill); a collection of the Amplitude
sandbox holding 200,000 groups takes about 0.3 s. An emulator started inside another
program (``AmplitudeSandbox`` in a test, ``sfamp demo``) keeps that program's policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Final

# Seconds between two full collections while automatic ones are off.
COLLECT_EVERY_SECONDS: Final = 60.0


@contextlib.asynccontextmanager
async def collected_every(seconds: float = COLLECT_EVERY_SECONDS) -> AsyncIterator[None]:
    """Turn automatic collections off for the block and collect every ``seconds`` instead.

    Needs a running event loop (the collections run in a task of it). On exit the
    collector is enabled again if it was before.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, not {seconds}")
    enabled = gc.isenabled()
    gc.disable()
    collecting = asyncio.create_task(_collect_every(seconds), name="timed garbage collections")
    try:
        yield
    finally:
        collecting.cancel()
        await asyncio.gather(collecting, return_exceptions=True)
        if enabled:
            gc.enable()


async def _collect_every(seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        gc.collect()
