"""The Group Identify client against the sandbox, over real HTTP."""

from __future__ import annotations

import sys
from typing import Any

import httpx
import pytest

from pipeline.amplitude import AmplitudeClient
from pipeline.amplitude.delivery import Answer
from pipeline.amplitude.payload import to_identification
from pipeline.config.settings import AmplitudeSettings
from pipeline.errors import AmplitudeAuthError, AmplitudeUnavailableError
from pipeline.transform.group_update import GroupUpdate
from sfamp_sandbox.amplitude import (
    EU_API_KEY,
    SECRET_KEY,
    US_API_KEY,
    AmplitudeSandbox,
    IdentifyLimits,
)

pytestmark = pytest.mark.integration


class RecordedSleep:
    """Records every backoff and returns at once, so 15 s waits cost nothing."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def _accounts(n: int, **extra: Any) -> list[GroupUpdate]:
    """One property per account unless more are given, so 1024 accounts fill a request."""
    return [
        GroupUpdate("account", f"001A{i:06d}", {"name": f"Account {i}", **extra}) for i in range(n)
    ]


def _with(settings: AmplitudeSettings, changes: dict[str, Any]) -> AmplitudeSettings:
    return AmplitudeSettings.model_validate(settings.model_dump() | changes)


def _logged(sandbox: AmplitudeSandbox) -> list[dict[str, Any]]:
    return list(sandbox.state.requests)


async def _fault(sandbox: AmplitudeSandbox, **fault: Any) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{sandbox.base_url}/__sandbox/faults", json=fault)
        assert response.status_code == 201


async def test_chunks_at_1024_identifications_and_plan_matches(
    amplitude_sandbox: AmplitudeSandbox, sandbox_settings: AmplitudeSettings
) -> None:
    updates = _accounts(2500)
    async with AmplitudeClient(sandbox_settings) as client:
        plan = client.plan(updates)
        report = await client.send(updates)
    assert (report.delivered, report.rejected, report.requests) == (2500, [], 3)
    logged = _logged(amplitude_sandbox)
    assert sorted(entry["identifications"] for entry in logged) == [452, 1024, 1024]
    assert sorted(r.bytes for r in plan.requests) == sorted(e["request_bytes"] for e in logged)
    assert report.bytes_sent == plan.total_bytes
    stored = amplitude_sandbox.state.store("us").groups
    assert stored[("account", "001A002499")] == {"name": "Account 2499"}


async def test_chunks_at_the_byte_limit_with_non_ascii_values(
    amplitude_sandbox: AmplitudeSandbox, sandbox_settings: AmplitudeSettings
) -> None:
    notes = "Größenordnung \u2013 東京 " * 50  # ~1000 characters, mostly multi-byte
    updates = _accounts(400, notes=notes[:1000])
    async with AmplitudeClient(sandbox_settings) as client:
        report = await client.send(updates)
    assert report.delivered == 400
    sizes = [entry["request_bytes"] for entry in _logged(amplitude_sandbox)]
    assert len(sizes) > 1
    assert all(status == 200 for status in (e["status"] for e in _logged(amplitude_sandbox)))
    assert max(sizes) <= 950_000
    stored = amplitude_sandbox.state.store("us").groups[("account", "001A000399")]
    assert stored["notes"] == notes[:1000]


@pytest.mark.parametrize("kind", ["429", "503", "500"])
async def test_retries_then_delivers(
    amplitude_sandbox: AmplitudeSandbox, sandbox_settings: AmplitudeSettings, kind: str
) -> None:
    await _fault(amplitude_sandbox, kind=kind, count=2)
    sleep = RecordedSleep()
    async with AmplitudeClient(sandbox_settings, sleep=sleep) as client:
        report = await client.send(_accounts(10))
    assert report.delivered == 10
    assert (report.retries, report.statuses) == (2, {kind: 2, "200": 1})
    if kind == "429":
        assert all(delay >= sandbox_settings.min_429_wait_seconds for delay in sleep.delays)
    assert len(amplitude_sandbox.state.store("us").groups) == 10


async def test_429_honours_a_longer_retry_after(
    amplitude_sandbox: AmplitudeSandbox, sandbox_settings: AmplitudeSettings
) -> None:
    await _fault(amplitude_sandbox, kind="429", retry_after=21)
    sleep = RecordedSleep()
    async with AmplitudeClient(sandbox_settings, sleep=sleep) as client:
        assert (await client.send(_accounts(1))).delivered == 1
    assert sleep.delays == [21]


async def test_a_retry_after_past_the_deadline_gives_up_at_once(
    amplitude_sandbox: AmplitudeSandbox, sandbox_settings: AmplitudeSettings
) -> None:
    await _fault(amplitude_sandbox, kind="429", retry_after=3600)
    sleep = RecordedSleep()
    async with AmplitudeClient(sandbox_settings, sleep=sleep) as client:
        with pytest.raises(AmplitudeUnavailableError, match="429"):
            await client.send(_accounts(1))
    assert sleep.delays == []


async def test_every_answer_is_told_as_it_comes_even_when_the_send_fails(
    amplitude_sandbox: AmplitudeSandbox, sandbox_settings: AmplitudeSettings
) -> None:
    """A send that fails in the end returns no report: ``on_answer`` has told each answer."""
    answers: list[str] = []

    def told(answer: Answer) -> None:
        answers.append(answer.label)

    await _fault(amplitude_sandbox, kind="503")
    async with AmplitudeClient(sandbox_settings, sleep=RecordedSleep(), on_answer=told) as client:
        report = await client.send(_accounts(1))
    assert answers == ["503", "200"]
    assert report.statuses == {"503": 1, "200": 1}
    await _fault(amplitude_sandbox, kind="429", retry_after=3600)
    async with AmplitudeClient(sandbox_settings, on_answer=told) as client:
        with pytest.raises(AmplitudeUnavailableError):
            await client.send(_accounts(1))
    assert answers[2:] == ["429"]
    refused = _with(sandbox_settings, {"api_key": "not-the-key"})
    async with AmplitudeClient(refused, on_answer=told) as client:
        with pytest.raises(AmplitudeAuthError):
            await client.send(_accounts(1))
    assert answers[3:] == ["400"]


async def test_timeout_then_success(
    amplitude_sandbox: AmplitudeSandbox, sandbox_settings: AmplitudeSettings
) -> None:
    await _fault(amplitude_sandbox, kind="timeout", delay_seconds=20)
    # Long enough for the retry's answer on a loaded machine; the fault holds 20 s.
    settings = _with(sandbox_settings, {"timeout_seconds": 2.0})
    async with AmplitudeClient(settings, sleep=RecordedSleep()) as client:
        report = await client.send(_accounts(5))
    assert report.delivered == 5
    assert report.statuses == {"timeout": 1, "200": 1}


async def test_500_after_apply_then_retry_leaves_the_same_state(
    amplitude_sandbox: AmplitudeSandbox, sandbox_settings: AmplitudeSettings
) -> None:
    await _fault(amplitude_sandbox, kind="500_after_apply")
    update = GroupUpdate("account", "001X", {"tier": "Gold"}, frozenset({"legacy"}))
    async with AmplitudeClient(sandbox_settings, sleep=RecordedSleep()) as client:
        report = await client.send([update])
    assert (report.delivered, report.retries) == (1, 1)
    store = amplitude_sandbox.state.store("us")
    assert store.groups[("account", "001X")] == {"tier": "Gold"}
    history = [entry["operations"] for entry in store.history[("account", "001X")]]
    assert history == [to_identification(update)["group_properties"]] * 2


async def test_one_bad_identification_among_1000_is_rejected_alone(
    amplitude_sandbox: AmplitudeSandbox, sandbox_settings: AmplitudeSettings
) -> None:
    updates = _accounts(1000)
    bad = GroupUpdate("account", "", {"name": "No id"})
    updates[617] = bad
    async with AmplitudeClient(sandbox_settings) as client:
        report = await client.send(updates)
    assert report.delivered == 999
    assert [(r.update, r.status) for r in report.rejected] == [(bad, 400)]
    assert report.rejected[0].reason == (
        "invalid_identification: identification[0]: "
        "group_value must be a non-empty string or a number"
    )
    assert len(amplitude_sandbox.state.store("us").groups) == 999
    # Bisection costs about two requests per halving, not one per identification.
    assert report.requests <= 2 * 10 + 1


async def test_invalid_key_is_fatal_at_once(
    amplitude_sandbox: AmplitudeSandbox, sandbox_settings: AmplitudeSettings
) -> None:
    settings = _with(sandbox_settings, {"api_key": "not-the-key"})
    async with AmplitudeClient(settings) as client:
        with pytest.raises(AmplitudeAuthError, match="refused the API key") as refusal:
            await client.send(_accounts(3000))
    assert "not-the-key" not in str(refusal.value)
    assert len(_logged(amplitude_sandbox)) <= settings.max_concurrency


async def test_eu_key_on_eu_path_works_and_us_key_does_not(
    amplitude_sandbox: AmplitudeSandbox, sandbox_settings: AmplitudeSettings
) -> None:
    eu = _with(
        sandbox_settings,
        {"api_key": EU_API_KEY, "base_url": amplitude_sandbox.eu_base_url, "region": "eu"},
    )
    async with AmplitudeClient(eu) as client:
        assert client.group_identify_url == amplitude_sandbox.base_url + "/eu/groupidentify"
        assert (await client.send(_accounts(3))).delivered == 3
    assert len(amplitude_sandbox.state.store("eu").groups) == 3
    assert not amplitude_sandbox.state.store("us").groups
    us_key_on_eu = _with(eu, {"api_key": US_API_KEY})
    async with AmplitudeClient(us_key_on_eu) as client:
        with pytest.raises(AmplitudeAuthError):
            await client.send(_accounts(3))


async def test_verify_api_key_changes_nothing(
    amplitude_sandbox: AmplitudeSandbox, sandbox_settings: AmplitudeSettings
) -> None:
    async with AmplitudeClient(sandbox_settings) as client:
        check = await client.verify_api_key()
    assert (check.accepted, check.status) == (True, 400)
    assert "missing" in check.detail.lower()
    wrong = _with(sandbox_settings, {"api_key": "wrong"})
    async with AmplitudeClient(wrong) as client:
        with pytest.raises(AmplitudeAuthError, match="refused the API key") as refusal:
            await client.verify_api_key()
    assert "wrong" not in str(refusal.value).replace("SFAMP_AMPLITUDE", "")
    assert not amplitude_sandbox.state.store("us").groups
    assert all(entry.get("events_ingested", 0) == 0 for entry in _logged(amplitude_sandbox))


async def test_a_key_pair_is_checked_on_the_region_of_the_base_url(
    amplitude_sandbox: AmplitudeSandbox, sandbox_settings: AmplitudeSettings
) -> None:
    async with AmplitudeClient(sandbox_settings) as client:
        check = await client.verify_key_pair(SECRET_KEY)
        assert (check.url, check.status) == (amplitude_sandbox.base_url + "/api/2/usersearch", 200)
        with pytest.raises(AmplitudeAuthError, match=r"as a pair \(401\)"):
            await client.verify_key_pair("not-the-secret")
    eu = _with(sandbox_settings, {"base_url": amplitude_sandbox.eu_base_url, "region": "eu"})
    async with AmplitudeClient(eu) as client:  # the US project's keys, asked of the EU
        with pytest.raises(AmplitudeAuthError):
            await client.verify_key_pair(SECRET_KEY)


async def test_an_identification_over_1_mb_is_rejected_and_the_rest_delivered(
    amplitude_sandbox: AmplitudeSandbox, sandbox_settings: AmplitudeSettings
) -> None:
    # 200 values of 1000 "é" encode to about 1.2 MB: too big even alone.
    huge = GroupUpdate("account", "001HUGE", {f"p{n}": "é" * 1000 for n in range(200)})
    updates = [*_accounts(3), huge]
    async with AmplitudeClient(sandbox_settings) as client:
        assert client.plan(updates).requests[-1].bytes > 1_000_000
        report = await client.send(updates)
    assert report.delivered == 3
    assert [(r.update, r.status) for r in report.rejected] == [(huge, 413)]
    assert report.rejected[0].reason.startswith("Payload too large (this identification alone")


@pytest.mark.parametrize(("scope", "requests"), [("request", 16), ("identification", 2)])
async def test_the_property_limit_scope_decides_groups_per_request(
    sandbox_settings: AmplitudeSettings, scope: str, requests: int
) -> None:
    # 2000 groups of 8 properties: 16,000 keys. Summed per request that is 16 requests
    # (128 groups each); per identification it is ceil(2000 / 1024) = 2.
    limits = IdentifyLimits(property_limit_per_request=scope == "request")
    updates = _accounts(2000, **{f"p{n}": n for n in range(7)})
    async with AmplitudeSandbox(limits=limits) as sandbox:
        settings = sandbox_settings.model_copy(
            update={"base_url": sandbox.base_url, "property_limit_scope": scope}
        )
        async with AmplitudeClient(settings) as client:
            report = await client.send(updates)
        assert (report.delivered, report.requests, report.rejected) == (2000, requests, [])
        assert len(sandbox.state.store("us").groups) == 2000


class ImportWatch:
    """A meta-path finder that only records which modules were looked for."""

    def __init__(self) -> None:
        self.looked_for: list[str] = []

    def find_spec(self, name: str, *args: object) -> None:
        self.looked_for.append(name)


async def test_requests_import_nothing(
    amplitude_sandbox: AmplitudeSandbox, sandbox_settings: AmplitudeSettings
) -> None:
    # httpcore imports sniffio on every pool operation; were it missing, every request
    # would rescan sys.path for it (hence the explicit sniffio dependency).
    watch = ImportWatch()
    async with AmplitudeClient(sandbox_settings) as client:
        await client.send(_accounts(3))  # connections and lazy imports warmed up
        sys.meta_path.insert(0, watch)
        try:
            for batch in range(5):
                report = await client.send(_accounts(3 + batch))
                assert report.delivered == 3 + batch
        finally:
            sys.meta_path.remove(watch)
    assert watch.looked_for == []
