"""Helpers the service benchmarks share (not a benchmark itself: ``make bench`` runs bench_*)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

DAILY: Mapping[str, Any] = {"mode": "daily", "at": "00:00"}


def account_mapping(
    properties: Mapping[str, str], cadence: Mapping[str, Any], *, on_delete: str = "ignore"
) -> dict[str, Any]:
    """The mapping every service benchmark runs: Account -> ``account`` named by Id,
    ``properties`` as Salesforce field -> Amplitude property."""
    return {
        "version": 1,
        "sync_cadence": dict(cadence),
        "mappings": [
            {
                "sfdc_object": "Account",
                "group_type": "account",
                "group_name_field": "Id",
                "group_properties": [
                    {"sfdc_field": field, "amplitude_property": prop}
                    for field, prop in properties.items()
                ],
                "on_delete": on_delete,
            }
        ],
    }


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
