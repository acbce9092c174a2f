"""How long to wait before trying again: one exponential backoff for every retry loop.

Pure: the caller passes the jitter (a number in [0, 1)) and does the waiting. The
step doubles from ``first`` up to ``ceiling``; the jitter then spreads it so that
clients that failed together do not come back together:

- ``"equal"``: between half and all of the step (the Salesforce and Amplitude
  request retries, which must never wait longer than the step);
- ``"proportional"``: within ±20 % of the step (the long-running loops of
  :class:`pipeline.runtime.retry.Backoff`).
"""

from __future__ import annotations

from typing import Literal

Jitter = Literal["equal", "proportional"]


def exponential_delay(
    retry: int, jitter: float, *, first: float, ceiling: float, kind: Jitter = "equal"
) -> float:
    """Seconds to wait before retry number ``retry`` (0 for the first retry)."""
    # 2.0 ** 1024 overflows a float: past 64 doublings every step is the ceiling anyway.
    step = min(ceiling, first * 2.0 ** min(max(0, retry), 64))
    if kind == "equal":
        return step / 2 + step / 2 * jitter
    return step * (0.8 + 0.4 * jitter)
