"""Status: the running service's health, live (htmx polls ``/status/live``).

What ``sfamp status`` reports, from the same library calls: Kafka's side (lag,
replay id ages, DLQ size) from :func:`pipeline.runtime.status_report.kafka_status`,
the service's side (cadence, flushes, pending groups, re-syncs, the per-minute
history) from its ``/status`` through :func:`~pipeline.runtime.status_report.service_status`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from aiohttp import web

from pipeline.console.chart import minute_chart
from pipeline.console.context import console_of, render
from pipeline.kafka.inspect import format_duration
from pipeline.runtime.status_report import kafka_status, service_status

POLL_SECONDS: Final = 5


def _duration(seconds: object) -> str:
    return format_duration(float(seconds)) if isinstance(seconds, int | float) else "-"


async def _report(request: web.Request) -> dict[str, Any]:
    console = console_of(request)
    kafka, service = await asyncio.gather(
        kafka_status(console.settings), service_status(console.service_url)
    )
    per_minute = service.get("per_minute") if "error" not in service else None
    return {
        "kafka": kafka,
        "service": service,
        "chart": minute_chart(per_minute) if isinstance(per_minute, list) else None,
        "duration": _duration,
        "poll_seconds": POLL_SECONDS,
    }


async def status_page(request: web.Request) -> web.Response:
    return render(request, "status.html", **await _report(request))


async def status_live(request: web.Request) -> web.Response:
    return render(request, "_status_live.html", **await _report(request))


def register(app: web.Application) -> None:
    app.router.add_get("/status", status_page)
    app.router.add_get("/status/live", status_live)
