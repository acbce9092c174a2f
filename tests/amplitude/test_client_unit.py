"""Client behaviour at the HTTP edge, with httpx.MockTransport and a fake clock."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

import httpx
import orjson
import pytest
from structlog.testing import capture_logs

from pipeline.amplitude import AmplitudeClient, resolve_base_url
from pipeline.amplitude.concurrency import Outcome
from pipeline.amplitude.delivery import FIRST_CONTACT_SECONDS
from pipeline.config.settings import AmplitudeSettings
from pipeline.errors import AmplitudeError, AmplitudeUnavailableError, ConfigError
from pipeline.transform.group_update import GroupUpdate

SETTINGS = AmplitudeSettings(
    api_key="key-123",
    retry_deadline_seconds=120,
    min_429_wait_seconds=15,
    max_concurrency=3,
    transport="groupidentify",
)


class FakeTime:
    """A clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


def _identifications(request: httpx.Request) -> list[dict[str, object]]:
    form = parse_qs(request.content.decode())
    return list(orjson.loads(form["identification"][0]))


def _client(handler: object, time: FakeTime | None = None, **kw: object) -> AmplitudeClient:
    time = time or FakeTime()
    return AmplitudeClient(
        kw.pop("settings", SETTINGS),  # type: ignore[arg-type]
        transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
        sleep=time.sleep,
        clock=time.clock,
        jitter=lambda: 0.0,
    )


def _updates(n: int) -> list[GroupUpdate]:
    return [GroupUpdate("account", str(i), {"a": i}) for i in range(n)]


def test_region_hosts_and_base_url_override() -> None:
    assert resolve_base_url(AmplitudeSettings()) == "https://api2.amplitude.com"
    assert resolve_base_url(AmplitudeSettings(region="eu")) == "https://api.eu.amplitude.com"
    sandbox = AmplitudeSettings(region="eu", base_url="http://127.0.0.1:8420/eu/")
    assert resolve_base_url(sandbox) == "http://127.0.0.1:8420/eu"


async def test_sends_form_encoded_to_the_region_host() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="success")

    async with _client(handler) as client:
        report = await client.send(_updates(2))
    assert report.delivered == 2
    (request,) = seen
    assert str(request.url) == "https://api2.amplitude.com/groupidentify"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.content.decode())["api_key"] == ["key-123"]
    assert _identifications(request)[1] == {
        "group_type": "account",
        "group_value": "1",
        "group_properties": {"$set": {"a": 1}},
    }


async def test_gives_up_at_the_deadline_with_growing_backoff() -> None:
    time = FakeTime()
    async with _client(lambda _r: httpx.Response(503, text="unavailable"), time) as client:
        with pytest.raises(AmplitudeUnavailableError) as failure:
            await client.send(_updates(1))
    assert time.sleeps == [0.5, 1, 2, 4, 8, 16, 30, 30]
    # The time it took, not the deadline it did not reach (the next wait would pass it).
    assert str(failure.value) == (
        "Amplitude still answers 503 after 9 tries in 92 s; gave up, as the next would "
        f"come past the {SETTINGS.retry_deadline_seconds:g} s retry deadline"
    )
    assert time.now - 1000 <= SETTINGS.retry_deadline_seconds


async def test_giving_up_on_no_answer_names_the_reason() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("", request=request)

    async with _client(hang) as client:
        with pytest.raises(AmplitudeUnavailableError) as caught:
            await client.send(_updates(1))
    assert str(caught.value).startswith(
        f"Amplitude still does not answer (no answer within {SETTINGS.timeout_seconds:g} s) "
        "after 9 tries"
    )


async def test_429_waits_at_least_the_minimum() -> None:
    answers = iter([httpx.Response(429, text="too_many_requests"), httpx.Response(200)])
    time = FakeTime()
    async with _client(lambda _r: next(answers), time) as client:
        report = await client.send(_updates(1))
    assert (report.delivered, time.sleeps) == (1, [15])


async def test_connection_errors_are_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, text="success")

    async with _client(handler) as client:
        report = await client.send(_updates(1))
    assert report.statuses == {"connection_error": 1, "200": 1}


async def test_413_splits_and_rejects_a_lone_identification() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        items = _identifications(request)
        too_big = any(item["group_value"] == "3" for item in items)
        return httpx.Response(413, text="Payload too large") if too_big else httpx.Response(200)

    async with _client(handler) as client:
        report = await client.send(_updates(8))
    assert report.delivered == 7
    assert [(r.update.group_value, r.status) for r in report.rejected] == [("3", 413)]
    assert report.rejected[0].reason.startswith("Payload too large (this identification alone")


async def test_unexpected_status_stops_the_send() -> None:
    async with _client(lambda _r: httpx.Response(404, text="not found")) as client:
        with pytest.raises(AmplitudeError, match="404"):
            await client.send(_updates(1))


async def test_no_more_requests_in_flight_than_max_concurrency() -> None:
    in_flight = peak = 0

    async def handler(_request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.005)
        in_flight -= 1
        return httpx.Response(200, text="success")

    async with _client(handler) as client:
        report = await client.send(_updates(10 * 1024))
    assert (report.requests, peak) == (10, SETTINGS.max_concurrency)


async def test_missing_key_is_a_config_error_but_planning_works() -> None:
    client = _client(
        lambda _r: httpx.Response(200), settings=AmplitudeSettings(transport="groupidentify")
    )
    async with client:
        plan = client.plan([*_updates(3), GroupUpdate("account", "empty")])
        assert (plan.identifications, plan.skipped, len(plan.requests)) == (3, 1, 1)
        with pytest.raises(ConfigError, match="SFAMP_AMPLITUDE__API_KEY"):
            await client.send(_updates(1))


async def test_requests_in_flight_grow_towards_the_ceiling_while_answers_are_fast() -> None:
    in_flight = peak = 0

    async def handler(_request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.002)
        in_flight -= 1
        return httpx.Response(200, text="success")

    settings = AmplitudeSettings(api_key="key-123", max_concurrency=8, transport="groupidentify")
    async with _client(handler, settings=settings) as client:
        assert client.concurrency.level == 4
        report = await client.send(_updates(60 * 1024))
    assert report.requests == 60
    assert report.concurrency == client.concurrency.level == 8
    assert client.concurrency.increases == 4
    assert peak <= 8


async def test_sends_at_once_share_the_level_of_requests_in_flight() -> None:
    # A backfill sends several batches at once: together they stay at the level.
    in_flight = peak = 0
    level_reached, gate = asyncio.Event(), asyncio.Event()

    async def handler(_request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 4:
            level_reached.set()
        await gate.wait()
        in_flight -= 1
        return httpx.Response(200, text="success")

    settings = AmplitudeSettings(api_key="key-123", max_concurrency=4, transport="groupidentify")
    async with _client(handler, settings=settings) as client:
        sends = [asyncio.create_task(client.send(_updates(5 * 1024))) for _ in range(2)]
        await asyncio.wait_for(level_reached.wait(), timeout=10)
        gate.set()
        reports = await asyncio.wait_for(asyncio.gather(*sends), timeout=10)
    assert [report.requests for report in reports] == [5, 5]
    assert peak == 4, f"{peak} requests were in flight at level 4"
    assert client.slots.in_flight == 0


async def test_a_send_that_fails_gives_back_every_slot_it_took() -> None:
    # The failure cancels the requests it had scheduled but not started yet.
    healthy = False

    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="success") if healthy else httpx.Response(503)

    async with _client(handler) as client:
        with pytest.raises(AmplitudeUnavailableError):
            await client.send(_updates(8 * 1024))
        assert client.slots.in_flight == 0
        healthy = True
        report = await asyncio.wait_for(client.send(_updates(3)), timeout=10)
    assert report.delivered == 3


async def test_a_send_that_fails_does_not_hold_up_the_sends_beside_it() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if b"bad" in request.content:
            return httpx.Response(404, text="not found")
        return httpx.Response(200, text="success")

    settings = AmplitudeSettings(api_key="key-123", max_concurrency=1, transport="groupidentify")
    failing = [GroupUpdate("account", f"bad{i}", {"a": i}) for i in range(2 * 1024)]
    async with _client(handler, settings=settings) as client:
        sends = [client.send(failing), client.send(_updates(2 * 1024))]
        bad, good = await asyncio.wait_for(
            asyncio.gather(*sends, return_exceptions=True), timeout=10
        )
    assert isinstance(bad, AmplitudeError), bad
    assert not isinstance(good, BaseException), good
    assert good.delivered == 2 * 1024
    assert client.slots.in_flight == 0


async def test_429_and_5xx_halve_the_requests_in_flight_and_the_level_is_kept() -> None:
    time = FakeTime()
    answers = iter([httpx.Response(503), httpx.Response(429, text="too_many_requests")])

    def handler(_request: httpx.Request) -> httpx.Response:
        return next(answers, httpx.Response(200, text="success"))

    settings = AmplitudeSettings(
        api_key="key-123", max_concurrency=8, min_429_wait_seconds=1, transport="groupidentify"
    )
    async with _client(handler, time, settings=settings) as client:
        report = await client.send(_updates(1))
        # 4 -> 2 (503) -> 1 (429) -> 2 (one fast success is a round at level 1)
        assert (report.delivered, report.retries, client.concurrency.level) == (1, 2, 2)
        assert (client.concurrency.decreases, client.concurrency.increases) == (2, 1)
        # The next send starts from the level the last one left.
        assert (await client.send(_updates(1))).concurrency == 2


async def test_a_retry_after_holds_back_the_other_requests_too() -> None:
    time = FakeTime()
    started: list[float] = []

    def handler(_request: httpx.Request) -> httpx.Response:
        started.append(time.now)
        if len(started) == 1:
            return httpx.Response(429, headers={"Retry-After": "40"})
        return httpx.Response(200, text="success")

    settings = AmplitudeSettings(
        api_key="key-123", max_concurrency=1, min_429_wait_seconds=1, transport="groupidentify"
    )
    async with _client(handler, time, settings=settings) as client:
        report = await client.send(_updates(3 * 1024))
        assert report.delivered == 3 * 1024
        assert all(at >= 1040 for at in started[1:]), started
        # A later send still within it waits too, and says so: the pause outlives the
        # send (a flush that gave up on a long Retry-After is retried in seconds).
        client.concurrency.record(Outcome(429, time.now, 0.0, retry_after=120.0))
        with capture_logs() as logs:
            await client.send(_updates(1))
    (paused,) = [line for line in logs if line["event"] == "amplitude_paused"]
    assert paused["seconds"] == 120.0
    assert "Retry-After" in paused["why"]
    assert started[-1] >= time.now - 1, "sent once the pause had passed"


async def test_an_amplitude_refusing_every_connection_since_the_start_ends_a_send_early() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    time = FakeTime()
    async with _client(refuse, time) as client:
        with pytest.raises(AmplitudeUnavailableError) as caught:
            await client.send(_updates(1))
    assert str(caught.value).startswith(
        "Amplitude at https://api2.amplitude.com/groupidentify has not answered once since the "
        "start (connection refused; "
    ), caught.value
    assert str(caught.value).endswith("check SFAMP_AMPLITUDE__BASE_URL and SFAMP_AMPLITUDE__REGION")
    # Given up at the end of the window, not a backoff past it (was: 42 s, in 7 tries).
    assert FIRST_CONTACT_SECONDS <= time.now - 1000 < FIRST_CONTACT_SECONDS + 1
    assert f"tries in {time.now - 1000:.0f} s)" in str(caught.value), caught.value


@pytest.mark.parametrize("first", ["send", "key check"])
async def test_an_amplitude_that_answered_once_is_retried_to_the_deadline(first: str) -> None:
    missing = {"code": 400, "error": "Request missing required field"}
    answer = (
        httpx.Response(200, text="success")
        if first == "send"
        else httpx.Response(400, json=missing)
    )
    answers = iter([answer])

    def answered_then_refuse(request: httpx.Request) -> httpx.Response:
        answer = next(answers, None)
        if answer is None:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return answer

    time = FakeTime()
    async with _client(answered_then_refuse, time) as client:
        if first == "send":
            await client.send(_updates(1))
        else:
            await client.verify_api_key()
        with pytest.raises(AmplitudeUnavailableError, match="after 9 tries"):
            await client.send(_updates(1))
    assert time.now - 1000 > FIRST_CONTACT_SECONDS
