"""Waiting in a test for what a task signals, with a timeout and a message."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import pytest

T = TypeVar("T")

WAIT_SECONDS = 10.0


async def happened(event: asyncio.Event, what: str, timeout: float = WAIT_SECONDS) -> None:
    """Return once ``event`` is set; fail the test naming ``what`` after ``timeout`` s."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        pytest.fail(f"{what} did not happen within {timeout:g} s")


async def ended(awaitable: Awaitable[T], what: str, timeout: float = WAIT_SECONDS) -> T:
    """What ``awaitable`` returns or raises; fail the test naming ``what`` after ``timeout`` s."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        pytest.fail(f"{what} did not end within {timeout:g} s")


async def delivered() -> None:
    """Return once the callbacks scheduled so far have run (a cancellation asked for is
    then delivered): they run in the order they were scheduled."""
    turned = asyncio.Event()
    asyncio.get_running_loop().call_soon(turned.set)
    await happened(turned, "the event loop's next turn")
