"""Amplitude's answers and the stored replay ids in the service's metrics."""

from __future__ import annotations

import time

from pipeline.amplitude.delivery import Answer
from pipeline.kafka.records import ReplayMark
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


def test_replay_id_ages_follow_the_subscribed_channels_only() -> None:
    """Aged at the scrape from the event's commit (else from when the mark was stored); a
    channel no longer subscribed leaves the metric, as its age would grow for nothing."""
    metrics = Metrics()
    now = int(time.time() * 1000)
    hour = 3600 * 1000
    account = ReplayMark("/data/AccountChangeEvent", 12, now - hour, event_ts_ms=now - 50 * hour)
    contact = ReplayMark("/data/ContactChangeEvent", -2, now - 2 * hour)

    def age(channel: str) -> float | None:
        return metrics.registry.get_sample_value(
            "sfamp_replay_id_age_seconds", {"channel": channel}
        )

    metrics.follow_replay_marks({m.channel: m for m in (account, contact)})
    assert 50 * 3600 <= (age(account.channel) or 0) < 50 * 3600 + 60
    assert 2 * 3600 <= (age(contact.channel) or 0) < 2 * 3600 + 60
    metrics.replay_stored(ReplayMark(account.channel, 13, now, event_ts_ms=now - 5000))
    assert 5 <= (age(account.channel) or 0) < 65
    metrics.follow_replay_marks({account.channel: account})
    assert age(contact.channel) is None
    assert age(account.channel) is not None
