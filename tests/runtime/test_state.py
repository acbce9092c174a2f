"""Liveness and readiness as the health endpoints report them (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipeline.runtime.state import FlushResult, ServiceState


def test_a_pump_silent_past_the_threshold_makes_the_process_not_alive() -> None:
    state = ServiceState(role="all", stale_after_seconds=120)
    state.heartbeats = {"ingest": 1000.0, "deliver": 1100.0}
    assert state.alive(now=1110.0) == (True, [])
    alive, problems = state.alive(now=1121.0)
    assert not alive
    assert problems == ["ingest silent for 121s"]


def test_ready_needs_every_subscription_and_the_consumer_group() -> None:
    state = ServiceState(role="all")
    state.channels_expected = {"/data/AccountChangeEvent", "/data/ContactChangeEvent"}
    state.channels_subscribed = {"/data/AccountChangeEvent"}
    ready, waiting = state.ready()
    assert not ready
    assert len(waiting) == 2
    state.channels_subscribed |= {"/data/ContactChangeEvent"}
    state.consumer_joined = True
    assert state.ready() == (True, [])


def test_a_deliver_only_process_does_not_wait_for_subscriptions() -> None:
    state = ServiceState(role="deliver", consumer_joined=True)
    assert state.ready() == (True, [])


def test_a_flush_replaced_as_the_last_stays_among_the_recent() -> None:
    state = ServiceState(role="deliver")
    start = datetime(2026, 12, 1, tzinfo=UTC)
    halted = FlushResult(at=start, ok=False, changes=1, error="the mapping changed")
    state.flushed(halted)
    for n in range(1, 25):
        state.flushed(FlushResult(at=start + timedelta(seconds=n), ok=True, changes=1))
        state.flushed(FlushResult(at=start + timedelta(seconds=n, milliseconds=1), ok=True))
    assert state.last_flush is not None
    assert state.last_flush.at == start + timedelta(seconds=24, milliseconds=1)  # idle
    recent = state.to_status()["recent_flushes"]
    assert len(recent) == 20  # the last twenty that were not idle, oldest first
    assert recent[0]["at"] == (start + timedelta(seconds=5)).isoformat()
    assert recent[-1]["at"] == (start + timedelta(seconds=24)).isoformat()
    state = ServiceState(role="deliver")
    state.flushed(halted)
    state.flushed(FlushResult(at=start + timedelta(seconds=1), ok=True, changes=1))
    assert state.to_status()["recent_flushes"][0]["error"] == "the mapping changed"
    state.flushed(FlushResult(at=start + timedelta(seconds=2), ok=True, dlq=1))  # malformed
    assert state.to_status()["recent_flushes"][-1]["dlq"] == 1
