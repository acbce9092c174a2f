"""Waiting in a test for what a task signals, with a timeout and a message."""

from __future__ import annotations

import asyncio

import pytest

WAIT_SECONDS = 10.0


async def happened(event: asyncio.Event, what: str, timeout: float = WAIT_SECONDS) -> None:
    """Return once ``event`` is set; fail the test naming ``what`` after ``timeout`` s."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        pytest.fail(f"{what} did not happen within {timeout:g} s")
