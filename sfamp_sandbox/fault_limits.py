"""The bounds both sandboxes put on a scripted fault (``POST /__sandbox/faults``): how many
requests it fails, and how long a delaying one holds each."""

from __future__ import annotations

from typing import Final

MAX_COUNT: Final = 10_000
MAX_DELAY_SECONDS: Final = 600


def fault_count(value: object) -> int:
    """``count`` of a fault body; ValueError unless an integer from 1 to :data:`MAX_COUNT`
    (a negative one added to a counter would leave the fault on for good)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_COUNT:
        raise ValueError(f"count must be an integer from 1 to {MAX_COUNT}")
    return value


def fault_delay(value: object) -> float:
    """``delay_seconds`` of a fault body; ValueError unless a number from 0 to
    :data:`MAX_DELAY_SECONDS`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= MAX_DELAY_SECONDS
    ):
        raise ValueError(f"delay_seconds must be a number from 0 to {MAX_DELAY_SECONDS}")
    return float(value)
