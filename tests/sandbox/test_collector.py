"""A served emulator collects garbage on a timer instead of after every few allocations."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from sfamp_sandbox.amplitude import server as amplitude_server
from sfamp_sandbox.collector import collected_every
from sfamp_sandbox.salesforce import server as salesforce_server
from tests.support.events import happened


class _Cycle:
    """An object that refers to itself: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.itself = self


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    if enabled:
        gc.enable()
    else:
        gc.disable()


async def test_automatic_collections_are_off_and_a_cycle_is_freed_on_the_timer() -> None:
    freed = asyncio.Event()
    gc.enable()
    async with collected_every(0.05):
        assert not gc.isenabled(), "automatic collections still run inside the block"
        cycle = _Cycle()
        weakref.finalize(cycle, freed.set)
        del cycle
        await happened(freed, "a timed collection freeing the cycle")
    assert gc.isenabled(), "the collector was not enabled again after the block"


async def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    async with collected_every(0.05):
        pass
    assert not gc.isenabled()


async def test_a_period_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="seconds must be positive"):
        async with collected_every(0):
            pass


Serve = Callable[..., Coroutine[Any, Any, None]]


@pytest.mark.integration
@pytest.mark.parametrize("serve", [amplitude_server.serve, salesforce_server.serve])
async def test_a_served_sandbox_turns_automatic_collections_off(serve: Serve) -> None:
    gc.enable()
    listening = asyncio.Event()
    serving = asyncio.create_task(serve("127.0.0.1", 0, ready=lambda url: listening.set()))
    try:
        await happened(listening, "the sandbox listening")
        assert not gc.isenabled(), "the served sandbox left automatic collections on"
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
    assert gc.isenabled(), "the collector was not enabled again after the sandbox stopped"
