"""A simulated network round trip on the sandboxes' APIs: ``--latency-ms``, ``/__sandbox/latency``.

On localhost a request costs microseconds, so CPU decides every benchmark; real users reach
Salesforce and Amplitude over a WAN, where round trips decide. With a latency of N ms every API
request is answered N ms later than it would be: half of it passes before the request is
handled and half before the answer leaves, as the two legs of a round trip do, so a write takes
effect half-way. A held CometD long poll pays the same on top of its own wait. The control API
(``/__sandbox``) is never delayed, so tests and scripts can set up and read back at full speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

MAX_LATENCY_MS = 60_000


def parse_latency_ms(value: Any) -> int:
    """A latency in whole milliseconds, 0 to ``MAX_LATENCY_MS``; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LATENCY_MS:
        raise ValueError(f"ms must be a whole number of milliseconds from 0 to {MAX_LATENCY_MS}")
    return value


@dataclass(slots=True)
class Latency:
    """The current latency of one sandbox; the control API changes it while it serves."""

    ms: int = 0

    def __post_init__(self) -> None:
        parse_latency_ms(self.ms)

    def set_from(self, body: dict[str, Any]) -> None:
        """Apply a ``POST /__sandbox/latency`` body, ``{"ms": N}``."""
        self.ms = parse_latency_ms(body.get("ms"))

    def as_dict(self) -> dict[str, int]:
        return {"ms": self.ms}


def latency_middleware(latency: Latency, is_control: Callable[[str], bool]) -> Middleware:
    """Delay every request whose path is not the control API's by ``latency.ms``."""

    @web.middleware
    async def delay(request: web.Request, handler: Handler) -> web.StreamResponse:
        ms = latency.ms
        if ms <= 0 or is_control(request.path):
            return await handler(request)
        leg = ms / 2000  # seconds of one leg
        await asyncio.sleep(leg)
        try:
            response = await handler(request)
        except web.HTTPException:  # an answer too (404, 405, a dropped long poll)
            await asyncio.sleep(leg)
            raise
        await asyncio.sleep(leg)
        return response

    return delay
