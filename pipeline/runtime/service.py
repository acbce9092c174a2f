"""``sfamp run``: the pumps, the mapping watchers and the health endpoint in one task group.

A pump that crashes with an unexpected error ends the task group, and with it
the process, with a non-zero exit and the error logged: a supervisor restarts
it from the durable checkpoints. Expected trouble (Salesforce or Amplitude
down, a bad new mapping) never gets that far: the pumps log it and retry. So
does the start: a Kafka that does not answer yet (``kafka_unreachable``) or a
Salesforce that does not (``mapping_check_retrying``) is waited for with
backoff, each attempt logged, so that a service started before its broker, or
restarted during an outage, does not exit into a supervisor's crash loop.

At start the mapping is checked against the org (objects and fields exist and
can be read) and against the topics (compacted control topics, changes topics
that outlast the cadence); a mapping or topic that fails ends the start with
the list of problems. Later versions pass the same check or are refused while
the current mapping keeps running.

Shutdown (SIGTERM/SIGINT, or ``stop`` set): intake stops at once; an in-flight
flush may finish within ``runtime.drain_timeout_seconds`` and is abandoned
otherwise, uncommitted, for the next start to redo.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import structlog

from pipeline.amplitude import AmplitudeClient
from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.config.verify import check_mapping_against_org
from pipeline.errors import KafkaUnavailableError, Problem, SettingsError
from pipeline.kafka.admin import check_topic_configs, ensure_topics, sfamp_topics
from pipeline.kafka.producer import ChangeProducer
from pipeline.runtime.cadence import describe, utc_now
from pipeline.runtime.deliver import Clock, DeliverPump
from pipeline.runtime.health import serve_health
from pipeline.runtime.ingest import IngestPump
from pipeline.runtime.mapping_source import (
    MappingHolder,
    MappingRefusal,
    MappingVersion,
    accepted_version,
    checked,
    initial_mapping,
    watch_config_topic,
    watch_file,
)
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.reconcile.scheduler import ReconcileScheduler
from pipeline.runtime.retry import Backoff
from pipeline.runtime.state import ServiceState
from pipeline.salesforce.client import SalesforceClient

log = structlog.get_logger(__name__)

Role = Literal["all", "ingest", "deliver"]
T = TypeVar("T")


@dataclass
class Service:
    """Handles a test or the CLI can hold on to while the service runs."""

    state: ServiceState
    metrics: Metrics = field(default_factory=Metrics)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    ingest: IngestPump | None = None
    deliver: DeliverPump | None = None
    reconcile: ReconcileScheduler | None = None
    holder: MappingHolder | None = None
    health_started: asyncio.Event = field(default_factory=asyncio.Event)


def is_ready(service: Service) -> bool:
    return service.state.ready()[0]


@contextlib.asynccontextmanager
async def serving(
    settings: Settings,
    mapping_file: Path | None = None,
    *,
    role: Role = "all",
    clock: Clock = utc_now,
    ready: Callable[[Service], bool] = is_ready,
    ready_within: float = 60.0,
) -> AsyncIterator[Service]:
    """The service in a task of the running loop, for embedding (the demo, tests, benchmarks).

    Yields once ``ready(service)`` holds (by default: subscribed and joined), and stops
    the service with the usual drain when the block ends. A service that fails before
    it is ready raises its error here.
    """
    service = Service(ServiceState(role=role))
    task = asyncio.create_task(
        run_service(settings, role=role, mapping_file=mapping_file, service=service, clock=clock)
    )
    try:
        async with asyncio.timeout(ready_within):
            # Readiness is plain state the pumps set; there is no event to await.
            while not (task.done() or ready(service)):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        if task.done():
            task.result()
        yield service
    finally:
        service.stop.set()
        try:
            await asyncio.wait_for(task, timeout=settings.runtime.drain_timeout_seconds + 30)
        except BaseException:
            task.cancel()
            raise


async def run_service(
    settings: Settings,
    *,
    role: Role = "all",
    mapping_file: Path | None = None,
    service: Service | None = None,
    clock: Clock = utc_now,
    handle_signals: bool = False,
) -> None:
    """Run until ``service.stop`` is set (or a signal arrives), then drain and return."""
    service = service or Service(ServiceState(role=role))
    service.state.role = role
    # A flush may retry Amplitude for the whole retry deadline without looping.
    service.state.stale_after_seconds = max(
        service.state.stale_after_seconds, settings.amplitude.retry_deadline_seconds + 60
    )
    mapping_file = mapping_file or settings.mapping_file
    _check_credentials(settings, role)
    start = await _when_kafka_answers(
        settings, service, partial(_kafka_start, settings, mapping_file)
    )
    if start is None:
        log.info("service_stopped", role=role, reason="stopped while waiting for Kafka")
        return
    version, config_offset = start
    async with (
        SalesforceClient.from_settings(settings.salesforce) as salesforce,
        AmplitudeClient(
            settings.amplitude, on_answer=service.metrics.amplitude_answered
        ) as amplitude,
        ChangeProducer(settings.kafka) as producer,
    ):
        service.metrics.amplitude_concurrency.set_function(lambda: amplitude.concurrency.level)
        service.state.amplitude_concurrency = amplitude.concurrency.snapshot
        holder = service.holder = await _checked_holder(settings, service, salesforce, version)
        await ensure_topics(settings.kafka, sfamp_topics(settings.kafka, holder.current.objects))
        _describe_mapping(service.state, holder)
        log.info(
            "service_starting",
            role=role,
            mapping=holder.version.source,
            objects=holder.current.objects,
            cadence=describe(holder.current.sync_cadence),
        )
        if handle_signals:
            _install_signal_handlers(service.stop)
        pumps: dict[str, Coroutine[Any, Any, None]] = {}
        if service.state.runs_ingest:
            service.ingest = IngestPump(
                settings,
                holder,
                salesforce,
                producer,
                service.state,
                service.metrics,
            )
            pumps["ingest"] = service.ingest.run()
            service.reconcile = ReconcileScheduler(
                settings, holder, salesforce, producer, service.state, service.metrics, clock=clock
            )
            pumps["reconcile"] = service.reconcile.run()
        if service.state.runs_deliver:
            service.deliver = DeliverPump(
                settings,
                holder,
                amplitude,
                producer,
                salesforce.rest,
                service.state,
                service.metrics,
                clock=clock,
            )
            pumps["deliver"] = service.deliver.run()
        await _supervise(settings, service, holder, pumps, mapping_file, config_offset)
    log.info("service_stopped", role=role)


async def _supervise(
    settings: Settings,
    service: Service,
    holder: MappingHolder,
    pumps: dict[str, Coroutine[Any, Any, None]],
    mapping_file: Path | None,
    config_offset: int,
) -> None:
    helpers: list[Coroutine[Any, Any, None]] = [
        watch_config_topic(holder, settings.kafka, config_offset),
        _follow_mapping(service.state, holder),
    ]
    if mapping_file is not None:
        helpers.append(watch_file(holder, mapping_file))
    async with asyncio.TaskGroup() as group:
        try:
            health = await _listening(settings, service, group)
        except asyncio.CancelledError:
            for coro in (*helpers, *pumps.values()):
                coro.close()  # never started
            raise
        helper_tasks = [*health, *(group.create_task(coro) for coro in helpers)]
        pump_tasks = {name: group.create_task(coro, name=name) for name, coro in pumps.items()}
        stopper = group.create_task(_stop_when_asked(service, pump_tasks, settings))
        await stopper
        for task in helper_tasks:
            task.cancel()


async def _listening(
    settings: Settings, service: Service, group: asyncio.TaskGroup
) -> list[asyncio.Task[None]]:
    """The health endpoint's task, once it listens, or none. Before anything else starts:
    a port another process took since ``sfamp run`` checked it (two started at once)
    stops the start here, before a Kafka consumer is half started."""
    if not settings.runtime.health_port:
        return []
    task = group.create_task(
        serve_health(
            service.state,
            service.metrics,
            settings.runtime.health_host,
            settings.runtime.health_port,
            service.health_started,
        )
    )
    await service.health_started.wait()
    return [task]


async def _stop_when_asked(
    service: Service, pumps: dict[str, asyncio.Task[None]], settings: Settings
) -> None:
    await service.stop.wait()
    budget = settings.runtime.drain_timeout_seconds
    log.info("service_draining", budget_seconds=budget)
    for name in ("ingest", "reconcile"):
        if name in pumps:
            pumps[name].cancel()  # intake stops now; their checkpoints are already durable
    if service.deliver is not None:
        service.deliver.request_stop()
    remaining = [task for task in pumps.values() if not task.done()]
    if remaining:
        _, pending = await asyncio.wait(remaining, timeout=budget)
        for task in pending:
            log.warning("service_drain_timeout", pump=task.get_name(), action="abandoned")
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*pending, return_exceptions=True)


async def _follow_mapping(state: ServiceState, holder: MappingHolder) -> None:
    while True:
        await holder.wait_changed()
        _describe_mapping(state, holder)


def _describe_mapping(state: ServiceState, holder: MappingHolder) -> None:
    state.mapping_revision = holder.version.source
    state.mapping_objects = holder.current.objects
    state.cadence = describe(holder.current.sync_cadence)


def _check_credentials(settings: Settings, role: Role) -> None:
    problems = settings.credential_problems(amplitude=role in ("all", "deliver"))
    if problems:
        raise SettingsError(problems)


async def _checked_holder(
    settings: Settings, service: Service, salesforce: SalesforceClient, version: MappingVersion
) -> MappingHolder:
    """Check the starting mapping (a refusal ends the start) and hold it with the same
    check for every later version."""
    change_events = service.state.runs_ingest and not settings.salesforce.cdc_channel

    async def check(mapping: MappingConfig) -> list[Problem]:
        warnings = await check_mapping_against_org(
            settings, mapping, salesforce=salesforce, change_events=change_events
        )
        await check_topic_configs(
            settings.kafka, mapping.objects, cadence_seconds=mapping.sync_cadence.period_seconds
        )
        return warnings

    def on_refusal(refusal: MappingRefusal | None) -> None:
        service.state.mapping_refused = refusal.to_json() if refusal else None

    async def accept(mapping: MappingConfig) -> None:
        fallback = version.passed_over
        source = fallback.source if fallback and mapping is fallback.mapping else version.source
        await checked(check, mapping, source=source)

    running, refused = await accepted_version(version, accept)
    holder = MappingHolder(running, check=check, on_refusal=on_refusal)
    if refused is not None:
        holder.refuse(version.source, refused)  # /status and sfamp status say so
    return holder


async def _kafka_start(settings: Settings, mapping_file: Path | None) -> tuple[MappingVersion, int]:
    # The control topics first: the config topic must exist before it is followed.
    await ensure_topics(settings.kafka, sfamp_topics(settings.kafka, []))
    return await initial_mapping(settings.kafka, mapping_file)


async def _when_kafka_answers(
    settings: Settings,
    service: Service,
    step: Callable[[], Awaitable[T]],
    backoff: Backoff | None = None,
) -> T | None:
    """``step()``, tried again with backoff (1 s doubling to 30 s) while Kafka is
    unreachable; None once ``service.stop`` is set. Other errors (a refused SASL login,
    a topic policy) end the start as they are: waiting cannot fix them."""
    backoff = backoff or Backoff(first=1.0, ceiling=30.0)
    while True:
        try:
            return await step()
        except KafkaUnavailableError as exc:
            delay = backoff.next()
            log.warning(
                "kafka_unreachable",
                bootstrap_servers=settings.kafka.bootstrap_servers,
                reason=str(exc),
                retry_in=round(delay, 1),
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(service.stop.wait(), delay)
        if service.stop.is_set():
            return None


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    handler: Callable[[], None] = stop.set
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, handler)


__all__ = ["Role", "Service", "run_service", "serving"]
