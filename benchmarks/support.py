"""Helpers the service benchmarks share (not a benchmark itself: ``make bench`` runs bench_*)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def poll(
    condition: Callable[[], bool], within: float, what: str, *, interval: float = 0.005
) -> None:
    """Wait for a condition of the in-process service; it offers no event to await."""
    try:
        async with asyncio.timeout(within):
            while not condition():  # noqa: ASYNC110 - plain state, no event to await
                await asyncio.sleep(interval)
    except TimeoutError:
        raise RuntimeError(f"timed out after {within:.0f} s waiting for {what}") from None
