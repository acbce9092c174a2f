"""The HTTP V2 transport against the Amplitude sandbox's /2/httpapi, over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.amplitude import AmplitudeClient
from pipeline.config.settings import AmplitudeSettings
from pipeline.errors import AmplitudeAuthError
from pipeline.transform.group_update import GroupUpdate
from sfamp_sandbox.amplitude import AmplitudeSandbox, IdentifyLimits
from tests.amplitude.test_client_sandbox import RecordedSleep, _accounts, _fault, _with

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(sandbox_settings: AmplitudeSettings) -> AmplitudeSettings:
    return _with(sandbox_settings, {"transport": "httpapi"})


def _paths(sandbox: AmplitudeSandbox) -> list[Any]:
    return [entry["path"] for entry in sandbox.state.requests]


async def test_group_properties_reach_the_group_store_in_few_requests(
    amplitude_sandbox: AmplitudeSandbox, settings: AmplitudeSettings
) -> None:
    updates = _accounts(4500, tier="Gold", seats=3, region="EU", active=True)
    updates.append(GroupUpdate("account", "001A000001", {"tier": "Silver"}, frozenset({"seats"})))
    async with AmplitudeClient(settings) as client:
        first = await client.send(updates[:4500])
        second = await client.send(updates[4500:])
    assert (first.delivered, first.requests, second.delivered) == (4500, 3, 1)
    assert set(_paths(amplitude_sandbox)) == {"/2/httpapi"}
    store = amplitude_sandbox.state.store("us")
    assert len(store.groups) == 4500
    assert store.groups[("account", "001A000001")] == {
        "name": "Account 1",
        "tier": "Silver",
        "region": "EU",
        "active": True,
    }


async def test_a_retry_after_500_after_apply_is_deduplicated_by_insert_id(
    amplitude_sandbox: AmplitudeSandbox, settings: AmplitudeSettings
) -> None:
    await _fault(amplitude_sandbox, kind="500_after_apply")
    async with AmplitudeClient(settings, sleep=RecordedSleep()) as client:
        report = await client.send(_accounts(3))
    assert (report.delivered, report.retries) == (3, 1)
    store = amplitude_sandbox.state.store("us")
    assert all(len(store.history[("account", f"001A{i:06d}")]) == 1 for i in range(3))
    ingested = [entry.get("events_ingested") for entry in amplitude_sandbox.state.requests]
    assert ingested == [3, 0]


@pytest.mark.parametrize("kind", ["429", "503", "timeout"])
async def test_throttling_errors_and_timeouts_are_retried(
    amplitude_sandbox: AmplitudeSandbox, settings: AmplitudeSettings, kind: str
) -> None:
    await _fault(amplitude_sandbox, kind=kind, count=1, delay_seconds=20)
    settings = _with(settings, {"timeout_seconds": 0.3})
    async with AmplitudeClient(settings, sleep=RecordedSleep()) as client:
        report = await client.send(_accounts(10))
        assert client.concurrency.decreases == 1
    assert (report.delivered, report.retries) == (10, 1)
    assert len(amplitude_sandbox.state.store("us").groups) == 10


async def test_bad_events_named_by_the_400_are_rejected_alone(
    amplitude_sandbox: AmplitudeSandbox, settings: AmplitudeSettings
) -> None:
    updates = _accounts(1000)
    bad = [GroupUpdate("account", "", {"name": "No id"}), GroupUpdate("account", "", {"n": 1})]
    updates[17], updates[800] = bad
    async with AmplitudeClient(settings) as client:
        report = await client.send(updates)
    assert report.delivered == 998
    assert [(r.update, r.status) for r in report.rejected] == [(bad[0], 400), (bad[1], 400)]
    assert "events_with_invalid_fields: groups" in report.rejected[0].reason
    assert len(amplitude_sandbox.state.store("us").groups) == 998
    assert report.requests == 2  # named by index: no bisection


async def test_an_invalid_key_is_fatal(
    amplitude_sandbox: AmplitudeSandbox, settings: AmplitudeSettings
) -> None:
    async with AmplitudeClient(_with(settings, {"api_key": "not-the-key"})) as client:
        with pytest.raises(AmplitudeAuthError, match="refused the API key") as refusal:
            await client.send(_accounts(5))
    assert "not-the-key" not in str(refusal.value)
    assert amplitude_sandbox.state.store("us").groups == {}


async def test_a_group_value_the_sandbox_refuses_is_named_by_index_and_dead_lettered(
    settings: AmplitudeSettings,
) -> None:
    limits = IdentifyLimits(blocked_group_values=frozenset({"001A000004"}))
    async with AmplitudeSandbox(limits=limits) as sandbox:
        configured = _with(settings, {"base_url": sandbox.base_url})
        async with AmplitudeClient(configured) as client:
            report = await client.send(_accounts(10))
        assert report.delivered == 9
        assert [r.update.group_value for r in report.rejected] == ["001A000004"]
        answer = sandbox.state.requests[0]["response"]
        assert '"events_with_invalid_fields":{"groups":[4]}' in answer
