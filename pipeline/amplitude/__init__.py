"""Amplitude Group Identify client: chunking, retries, 429/413/400 handling.

``AmplitudeClient(settings).send(updates)`` delivers ``GroupUpdate``s to
``/groupidentify`` and reports what was delivered and what was rejected (for
the DLQ); ``plan(updates)`` is the same planning without sending (dry run).
"""

from __future__ import annotations

from pipeline.amplitude.backoff import RetryPolicy, backoff_delay, parse_retry_after
from pipeline.amplitude.client import REGION_BASE_URLS, AmplitudeClient, resolve_base_url
from pipeline.amplitude.planning import ChunkLimits, plan_chunks
from pipeline.amplitude.report import (
    DeliveryPlan,
    DeliveryReport,
    KeyCheck,
    PlannedRequest,
    Rejection,
)

__all__ = [
    "REGION_BASE_URLS",
    "AmplitudeClient",
    "ChunkLimits",
    "DeliveryPlan",
    "DeliveryReport",
    "KeyCheck",
    "PlannedRequest",
    "Rejection",
    "RetryPolicy",
    "backoff_delay",
    "parse_retry_after",
    "plan_chunks",
    "resolve_base_url",
]
