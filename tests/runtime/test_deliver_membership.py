"""Deliver's group membership: long flushes keep it, revoked flushes stop, stops leave the group."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from structlog.testing import capture_logs

from pipeline.config.settings import Settings
from pipeline.runtime.service import Service, on_stop_signal, run_service
from pipeline.runtime.state import FlushResult, ServiceState
from pipeline.sandbox_stack import SandboxStack
from sfamp_sandbox.amplitude.state import Fault
from tests.runtime.conftest import Org, group, running, settings_for, wait_until
from tests.support.clock import FakeClock


async def _amplitude_faults(stack: SandboxStack, **fault: Any) -> None:
    assert stack.amplitude is not None
    async with httpx.AsyncClient(base_url=stack.amplitude.base_url) as http:
        answer = await http.post("/__sandbox/faults", json=fault)
    assert answer.status_code == 201, answer.text


def _requests(stack: SandboxStack) -> int:
    """Requests the Amplitude sandbox has answered (the start's key check among them)."""
    assert stack.amplitude is not None
    return stack.amplitude.state.request_count


def _applied(stack: SandboxStack, group_type: str, value: str) -> int:
    """How many identifications of this group the Amplitude sandbox has applied."""
    assert stack.amplitude is not None
    return len(stack.amplitude.state.store("us").history.get((group_type, value), ()))


async def _committed_and_end(settings: Settings) -> tuple[dict[int, int], dict[int, int]]:
    """The group's committed offsets and, for partitions holding changes, the offset after
    the last one (read from the messages: the embedded broker's end offsets count batches)."""
    committed, ends, _ = await _read_changes(settings)
    return committed, ends


async def _read_changes(
    settings: Settings,
) -> tuple[dict[int, int], dict[int, int], dict[int, set[str]]]:
    """:func:`_committed_and_end`, and the record ids each partition holds changes of."""
    topic = f"{settings.kafka.topic_prefix}.changes.Account"
    partitions = [TopicPartition(topic, n) for n in range(settings.kafka.partitions)]
    # A consumer that carries the group id but never subscribes does not join the group.
    reader = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=settings.kafka.consumer_group,
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        committed = {tp.partition: await reader.committed(tp) for tp in partitions}
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        ends: dict[int, int] = {}
        ids: dict[int, set[str]] = {}
        while batch := await reader.getmany(timeout_ms=500):
            for tp, records in batch.items():
                ends[tp.partition] = records[-1].offset + 1
                ids.setdefault(tp.partition, set()).update(
                    record.key.decode() for record in records if record.key is not None
                )
    finally:
        await reader.stop()
    return ({p: offset for p, offset in committed.items() if offset is not None}, ends, ids)


def _other_member(settings: Settings, client_id: str) -> AIOKafkaConsumer:
    """Another member of deliver's group; its client id orders it among the members."""
    return AIOKafkaConsumer(
        f"{settings.kafka.topic_prefix}.changes.Account",
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=settings.kafka.consumer_group,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=3000,
        heartbeat_interval_ms=500,
    )


async def _members(settings: Settings) -> list[Any]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        [answer] = await admin.describe_consumer_groups([settings.kafka.consumer_group])
    finally:
        await admin.close()
    [described] = answer.groups
    return list(described[5])  # (error_code, group, state, protocol_type, protocol, members)


async def test_a_flush_longer_than_the_poll_limit_is_committed_once(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(
        stack,
        topic_prefix,
        kafka={"consumer_max_poll_interval_seconds": 2},
        amplitude={"retry_deadline_seconds": 60},
    )
    async with running(settings, mapping_file) as service:
        # Three 429s asking for 1.5 s each: the flush outlasts the 2 s poll limit.
        await _amplitude_faults(stack, kind="429", count=3, retry_after=1.5)
        slow = await org.create("Account", Name="Patient")
        await wait_until(
            lambda: _applied(stack, "account", slow) == 1, timeout=60, what="the slow flush"
        )

        async def all_committed() -> bool:
            committed, ends = await _committed_and_end(settings)
            return bool(ends) and all(committed.get(p) == end for p, end in ends.items())

        await wait_until(all_committed, what="the slow flush's offsets to be committed")
        # Idle flushes may follow it: find the one that held the change.
        await wait_until(
            lambda: any(f.changes for f in service.state.recent_flushes),
            what="the slow flush's result",
        )
        flush = next(f for f in service.state.recent_flushes if f.changes)
        assert flush.ok, flush
        assert flush.error is None, flush
        # A later change flows, and the slow one was never sent again.
        later = await org.create("Account", Name="Later")
        await wait_until(lambda: group(stack, "account", later) is not None, what="a later flush")
        await wait_until(all_committed, what="the later flush's offsets to be committed")
        assert _applied(stack, "account", slow) == 1
        assert service.state.partitions, "the member kept its partitions"


async def test_a_flush_whose_partitions_go_to_another_member_stops_early(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(
        stack, topic_prefix, kafka={"partitions": 1}, amplitude={"retry_deadline_seconds": 120}
    )
    topic = f"{topic_prefix}.changes.Account"
    async with running(settings, mapping_file) as service:
        # 429s for about two minutes: only the rebalance can end this flush soon.
        await _amplitude_faults(stack, kind="429", count=60, retry_after=2)
        before = _requests(stack)
        account = await org.create("Account", Name="Handed over")
        await wait_until(lambda: _requests(stack) > before, what="the flush to meet the first 429")
        # Round-robin gives the one partition to the member whose id sorts first.
        other = _other_member(settings, "0-other-member")
        with capture_logs() as logs:
            await other.start()
            try:
                taken = await other.getmany(timeout_ms=30_000)
                await wait_until(
                    lambda: _stopped_early(service) is not None,
                    timeout=30,
                    what="the revoked flush to stop",
                )
            finally:
                await other.stop()
    # The new owner reads what was not committed; nothing reached Amplitude.
    assert [r.key.decode() for records in taken.values() for r in records] == [account]
    assert group(stack, "account", account) is None
    stopped = [entry for entry in logs if entry["event"] == "flush" and entry.get("stopped_early")]
    assert len(stopped) == 1, stopped
    assert stopped[0]["revoked"] == [f"{topic}[0]"]
    assert stopped[0]["committed"] is False
    assert stopped[0]["changes"] == 1
    # Nothing was settled: the flush does not count as a successful one.
    result = _stopped_early(service)
    assert result is not None
    assert result.ok is False, result


async def test_a_rebalance_during_a_flush_commits_the_partitions_kept(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(stack, topic_prefix, amplitude={"retry_deadline_seconds": 60})
    # The flush's clock stands still until every change is held, so that the slow flush
    # holds changes of partition 1 whatever the machine's pace: a flush that began with
    # only some of them would owe no restart for a partition that fed it nothing.
    clock = FakeClock(datetime.now(UTC))
    async with running(settings, mapping_file, clock=clock) as service:
        # 429s until the group has taken partition 1, however slow its joins are.
        await _amplitude_faults(stack, kind="429", count=1000, retry_after=2)
        before = _requests(stack)
        ids = [await org.create("Account", Name=f"Kept {n}") for n in range(6)]
        await wait_until(lambda: service.state.pending_groups == len(ids), what="every change held")
        clock.now += timedelta(seconds=10)  # past the 1 s cadence: the flush starts
        await wait_until(lambda: _requests(stack) > before, what="the flush to meet the first 429")
        # Sorted after this service's member: round-robin gives it partition 1 of 3. It
        # only joins the group: what it is given is not sent by anyone here.
        other = _other_member(settings, "zz-other-member")
        with capture_logs() as logs:
            await other.start()
            try:
                await wait_until(
                    lambda: len(service.state.partitions) == 2,
                    timeout=60,
                    what="the group to give partition 1 to the other member",
                )
                stack.amplitude.state.faults.clear()
                await wait_until(
                    lambda: any(e["event"] == "flush" and e["changes"] for e in logs),
                    timeout=60,
                    what="the slow flush's log line",
                )
                committed, ends, partition_ids = await _read_changes(settings)
            finally:
                await other.stop()
    assert 1 in ends, "a change in the partition given away"
    assert set(ids) == set().union(*partition_ids.values())
    # The group took partition 1 while the flush waited out a 429: its groups were left
    # to the new owner, whose values may be newer; the others were sent once.
    given_away = partition_ids[1]
    assert [i for i in given_away if group(stack, "account", i) is not None] == []
    assert all(_applied(stack, "account", i) == 1 for i in set(ids) - given_away)
    assert any(e["event"] == "flush_restarted" for e in logs)
    assert committed.get(1) is None  # left to the other member
    assert {p: committed.get(p) for p in ends if p != 1} == {
        p: n for p, n in ends.items() if p != 1
    }
    [flush] = [e for e in logs if e["event"] == "flush" and e["changes"]]
    assert "stopped_early" not in flush
    assert flush["revoked"] == [f"{topic_prefix}.changes.Account[1]"]
    assert service.state.partitions == [
        f"{topic_prefix}.changes.Account[0]",
        f"{topic_prefix}.changes.Account[2]",
    ]


async def test_a_stopped_deliver_leaves_its_group(
    stack: SandboxStack, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    async with running(settings, mapping_file, role="deliver"):
        assert len(await _members(settings)) == 1
    # At once, not after the session timeout: the next member need not wait for it.
    assert await _members(settings) == []


def _held_flush_settings(
    stack: SandboxStack, topic_prefix: str, *, drain_seconds: float
) -> Settings:
    """Settings under which only the drain (not Amplitude's timeout or retry deadline)
    ends a flush that :func:`_flush_held_by_amplitude` holds."""
    return settings_for(
        stack,
        topic_prefix,
        runtime={"drain_timeout_seconds": drain_seconds},
        amplitude={"retry_deadline_seconds": 120, "timeout_seconds": 120},
    )


async def _flush_held_by_amplitude(stack: SandboxStack, org: Org, service: Service) -> None:
    """A change whose flush Amplitude holds (every request answered after 60 s), in flight."""
    assert stack.amplitude is not None
    amplitude = stack.amplitude.state
    amplitude.add_fault(Fault("timeout", remaining=10_000, delay_seconds=60))
    await org.create("Account", Name="Held")
    await wait_until(
        lambda: service.state.flushing_since is not None and amplitude.faults[0].remaining < 10_000,
        what="a flush in flight, held by Amplitude",
    )


async def test_a_flush_abandoned_at_the_drain_budget_still_leaves_the_group(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    """Amplitude holds the flush past the drain budget: the flush is abandoned (read again
    by the next member), and the member still leaves its group and closes its consumer."""
    settings = _held_flush_settings(stack, topic_prefix, drain_seconds=1)
    with capture_logs() as logs:
        async with running(settings, mapping_file) as service:
            await _flush_held_by_amplitude(stack, org, service)
    events = [entry["event"] for entry in logs]
    assert "service_drain_timeout" in events
    assert "deliver_consumer_stop_timeout" not in events
    assert await _members(settings) == []


def test_a_first_signal_asks_for_the_drain_and_a_second_cuts_it_short() -> None:
    service = Service(ServiceState(role="all"))
    on_stop_signal(service)
    assert (service.stop.is_set(), service.stop_now.is_set()) == (True, False)
    on_stop_signal(service)
    assert service.stop_now.is_set()


async def test_a_second_signal_cuts_the_drain_short(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    """A second Ctrl-C (or SIGTERM) during the drain abandons the flush held by Amplitude at
    once, rather than after the budget: uncommitted, the next member sends it again."""
    settings = _held_flush_settings(stack, topic_prefix, drain_seconds=120)
    with capture_logs() as logs:
        async with running(settings, mapping_file) as service:
            await _flush_held_by_amplitude(stack, org, service)
            service.stop.set()
            await wait_until(
                lambda: any(e["event"] == "service_draining" for e in logs),
                what="the drain",
            )
            service.stop_now.set()  # what the second signal sets
            await wait_until(
                lambda: any(e["event"] == "service_drain_cut" for e in logs),
                timeout=10,
                what="the drain cut short, well before its 120 s budget",
            )
    events = [entry["event"] for entry in logs]
    assert "service_drain_timeout" not in events
    (draining,) = [e for e in logs if e["event"] == "service_draining"]
    assert "a second Ctrl-C or SIGTERM stops at once" in draining["hint"]
    assert await _members(settings) == []


async def test_a_stop_ends_a_flush_waiting_to_retry_amplitude_at_once(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    """Amplitude fails every request: the flush waits between retries, commits nothing, and
    a stop ends it without waiting out the drain budget. The next start sends the change."""
    settings = settings_for(
        stack,
        topic_prefix,
        runtime={"drain_timeout_seconds": 60},
        amplitude={"retry_deadline_seconds": 600},
    )
    assert stack.amplitude is not None
    amplitude = stack.amplitude.state
    amplitude.add_fault(Fault("503", remaining=100_000))
    with capture_logs() as logs:
        async with running(settings, mapping_file) as service:
            account = await org.create("Account", Name="Waiting")
            await wait_until(
                lambda: any(e["event"] == "amplitude_retry" for e in logs),
                what="the flush to wait for a retry",
            )
    events = [entry["event"] for entry in logs]
    assert "service_drain_timeout" not in events
    failed = [e for e in logs if e["event"] == "flush_failed"]
    assert failed, events
    assert failed[-1]["reason"].startswith("the service is stopping"), failed[-1]
    assert failed[-1]["log_level"] == "info"  # a stop is no failure to alert on
    assert service.metrics.flush_failures._value.get() == 0
    assert await _members(settings) == []
    assert group(stack, "account", account) is None
    amplitude.faults.clear()
    async with running(settings, mapping_file):
        await wait_until(
            lambda: group(stack, "account", account) is not None,
            what="the change sent by the next start",
        )


async def test_a_stop_while_joining_returns_within_the_drain_budget(
    stack: SandboxStack, topic_prefix: str, mapping_file: Path
) -> None:
    # A long session makes the embedded broker take seconds to answer the join.
    settings = settings_for(
        stack,
        topic_prefix,
        kafka={"consumer_session_timeout_seconds": 20},
        runtime={"drain_timeout_seconds": 2},
    )
    service = Service(ServiceState(role="deliver"))
    task = asyncio.create_task(
        run_service(settings, role="deliver", mapping_file=mapping_file, service=service)
    )
    try:
        await wait_until(lambda: service.deliver is not None, what="the deliver pump")
        assert not service.state.consumer_joined
        asked = time.monotonic()
        service.stop.set()
        await asyncio.wait_for(task, timeout=settings.runtime.drain_timeout_seconds)
        assert time.monotonic() - asked < settings.runtime.drain_timeout_seconds
    finally:
        task.cancel()


def _stopped_early(service: Service) -> FlushResult | None:
    """The flush that stopped early, though an idle flush may have followed it."""
    return next(
        (
            flush
            for flush in service.state.recent_flushes
            if (flush.error or "").startswith("stopped early")
        ),
        None,
    )
