"""Amplitude's answers in the service's metrics, as they come."""

from __future__ import annotations

from pipeline.amplitude.delivery import Answer
from pipeline.runtime.metrics import Metrics


def test_a_refused_key_raises_the_gauge_until_an_answer_accepts_it() -> None:
    """Amplitude's ingestion APIs refuse a key with 400 ``invalid_api_key`` (JSON APIs:
    "Invalid API key: ..."), not 401/403: the alert watches this gauge."""
    metrics = Metrics()
    gauge = metrics.amplitude_key_refused
    metrics.amplitude_answered(Answer(400, "invalid_api_key"))
    assert gauge._value.get() == 1
    metrics.amplitude_answered(Answer(503, "service_unavailable"))
    metrics.amplitude_answered(Answer(None, failure="timeout"))
    metrics.amplitude_answered(Answer(400, '{"error": "Invalid field values on some events"}'))
    assert gauge._value.get() == 1, "other failures say nothing about the key"
    metrics.amplitude_answered(Answer(400, '{"code": 400, "error": "Invalid API key: k"}'))
    metrics.amplitude_answered(Answer(200, "success"))
    assert gauge._value.get() == 0
    counted = {
        status: metrics.amplitude_requests.labels(status)._value.get()
        for status in ("400", "503", "timeout", "200")
    }
    assert counted == {"400": 3, "503": 1, "timeout": 1, "200": 1}
