"""Liveness and readiness as the health endpoints report them (pure)."""

from __future__ import annotations

from pipeline.runtime.state import ServiceState


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
