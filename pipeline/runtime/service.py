"""``sfamp run``: the pumps, the mapping watchers and the health endpoint in one task group.

A pump that crashes with an unexpected error ends the task group, and with it
the process, with a non-zero exit and the error logged: a supervisor restarts
it from the durable checkpoints. Expected trouble (Salesforce or Amplitude
down, a bad new mapping) never gets that far: the pumps log it and retry. So
does the start: a Kafka that does not answer yet (``kafka_unreachable``) or a
Salesforce that does not (``mapping_check_retrying``) is waited for with
backoff, each attempt logged and the health endpoint already answering (not
ready, and why), so that a service started before its broker, or restarted
during an outage, does not exit into a supervisor's crash loop.

At start the mapping is checked against the org (objects and fields exist and
can be read) and against the topics (compacted control topics, changes topics
that outlast the cadence); a mapping file or topic that fails ends the start
with the list of problems, while a published mapping the org refuses is waited
on until a revision passes (:mod:`pipeline.runtime.start`). Later versions pass
the same check or are refused while the current mapping keeps running.

Shutdown (SIGTERM/SIGINT, or ``stop`` set): intake stops at once; an in-flight
flush may finish within ``runtime.drain_timeout_seconds`` and is abandoned
otherwise, uncommitted, for the next start to redo.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final, Literal

import structlog

from pipeline.amplitude import AmplitudeClient
from pipeline.amplitude.delivery import Answer
from pipeline.config.settings import Settings
from pipeline.errors import RetryEndedByStopError, SettingsError
from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.probe import MetadataProbe
from pipeline.kafka.producer import ChangeProducer
from pipeline.runtime.cadence import describe, utc_now
from pipeline.runtime.deliver import Clock, DeliverPump
from pipeline.runtime.health import serve_health
from pipeline.runtime.ingest import IngestPump
from pipeline.runtime.kafka_watch import watch_kafka
from pipeline.runtime.mapping_file import MappingVersion
from pipeline.runtime.mapping_source import (
    MappingHolder,
    watch_config_topic,
    watch_file,
)
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.reconcile.scheduler import ReconcileScheduler
from pipeline.runtime.start import (
    accepted_holder,
    amplitude_key_accepted,
    kafka_start,
    starting_mapping,
    unless_stopped_while_starting,
    when_kafka_answers,
)
from pipeline.runtime.state import ServiceState
from pipeline.salesforce.client import SalesforceClient

log = structlog.get_logger(__name__)

Role = Literal["all", "ingest", "deliver"]


@dataclass
class Service:
    """Handles a test or the CLI can hold on to while the service runs."""

    state: ServiceState
    metrics: Metrics = field(default_factory=Metrics)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    # Set by a second SIGTERM or SIGINT during the drain: what is still in flight is
    # abandoned at once (uncommitted, redone at the next start).
    stop_now: asyncio.Event = field(default_factory=asyncio.Event)
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
    it is ready raises its error here; one still waiting (for Kafka, say) after
    ``ready_within`` seconds raises :class:`TimeoutError`.
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
    """Run until ``service.stop`` is set (or a signal arrives), then drain and return.

    The health endpoint answers from the first moment: while Kafka or Salesforce is
    waited for, ``/healthz`` is 200 and ``/readyz`` 503 with what it waits for. A stop
    before the pumps run ends the start at once, even in the middle of an attempt.
    """
    service = service or Service(ServiceState(role=role))
    service.state.role = role
    # A flush may retry Amplitude for the whole retry deadline without looping.
    service.state.stale_after_seconds = max(
        service.state.stale_after_seconds, settings.amplitude.retry_deadline_seconds + 60
    )
    mapping_file = mapping_file or settings.mapping_file
    _check_credentials(settings, role)
    service.state.starting = "starting"
    if handle_signals:
        _install_signal_handlers(service)
    try:
        async with asyncio.TaskGroup() as group:
            health = await _listening(settings, service, group)
            try:
                run = _start_and_run(settings, role, mapping_file, service, clock)
                stopped_while_starting = await unless_stopped_while_starting(
                    service.stop, service.state, run
                )
            finally:
                for task in health:
                    task.cancel()
    except BaseExceptionGroup as errors:
        if len(errors.exceptions) != 1:
            raise
        single = errors.exceptions[0]
    else:
        single = None
    if single is not None:  # as it was raised (raised out here, its context stays its own)
        raise single
    if stopped_while_starting:  # e.g. "waiting for Kafka: ..."
        log.info("service_stopped", role=role, during=service.state.starting)
    else:
        log.info("service_stopped", role=role)


async def _start_and_run(
    settings: Settings, role: Role, mapping_file: Path | None, service: Service, clock: Clock
) -> None:
    start = partial(kafka_start, settings, mapping_file)
    version, config_offset = await starting_mapping(settings, service.state, start)
    async with contextlib.AsyncExitStack() as stack:
        salesforce = await stack.enter_async_context(
            SalesforceClient.from_settings(settings.salesforce)
        )
        amplitude = await stack.enter_async_context(
            AmplitudeClient(
                settings.amplitude,
                on_answer=partial(_amplitude_answered, service),
                sleep=partial(_wait_unless_stopped, service.stop),
            )
        )
        producer = await when_kafka_answers(
            settings,
            service.state,
            lambda: stack.enter_async_context(ChangeProducer(settings.kafka)),
        )
        service.metrics.amplitude_concurrency.set_function(lambda: amplitude.concurrency.level)
        service.state.amplitude_concurrency = amplitude.concurrency.snapshot
        holder, config_offset = await accepted_holder(
            settings, service.state, salesforce, start, version, config_offset
        )
        service.holder = holder
        if service.state.runs_deliver:
            service.state.starting = "checking the Amplitude API key"
            await amplitude_key_accepted(amplitude, service.state)
        objects = sfamp_topics(settings.kafka, holder.current.objects)
        await when_kafka_answers(
            settings, service.state, partial(ensure_topics, settings.kafka, objects)
        )
        _describe_mapping(service.state, holder)
        service.state.starting = None
        log.info(
            "service_starting",
            role=role,
            mapping=holder.version.source,
            objects=holder.current.objects,
            cadence=describe(holder.current.sync_cadence),
        )
        _say_file_changed(holder.version)
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
        probe = MetadataProbe(settings.kafka)
        stack.push_async_callback(probe.aclose)
        watches = [watch_kafka(probe, service.state, service.metrics)]
        await _supervise(settings, service, holder, pumps, mapping_file, config_offset, watches)


async def _supervise(
    settings: Settings,
    service: Service,
    holder: MappingHolder,
    pumps: dict[str, Coroutine[Any, Any, None]],
    mapping_file: Path | None,
    config_offset: int,
    watches: list[Coroutine[Any, Any, None]],
) -> None:
    helpers: list[Coroutine[Any, Any, None]] = [
        watch_config_topic(holder, settings.kafka, config_offset),
        _follow_mapping(service.state, holder),
        *watches,
    ]
    if mapping_file is not None:
        helpers.append(watch_file(holder, mapping_file, settings.kafka))
    async with asyncio.TaskGroup() as group:
        helper_tasks = [group.create_task(coro) for coro in helpers]
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
    log.info("service_draining", budget_seconds=budget, hint=_AT_ONCE)
    for name in ("ingest", "reconcile"):
        if name in pumps:
            pumps[name].cancel()  # intake stops now; their checkpoints are already durable
    if service.deliver is not None:
        service.deliver.request_stop()
    remaining = [task for task in pumps.values() if not task.done()]
    if remaining:
        # Whichever comes first: every pump ended, a second signal, the budget spent.
        drained = asyncio.ensure_future(asyncio.wait(remaining))
        hurried = asyncio.ensure_future(service.stop_now.wait())
        try:
            await asyncio.wait(
                [drained, hurried], timeout=budget, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            drained.cancel()
            hurried.cancel()
        pending = [task for task in remaining if not task.done()]
        if service.stop_now.is_set() and service.deliver is not None:
            service.deliver.request_stop()  # again: it leaves its group in the least time
        event = "service_drain_cut" if service.stop_now.is_set() else "service_drain_timeout"
        for task in pending:
            log.warning(event, pump=task.get_name(), action="abandoned")
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*pending, return_exceptions=True)


async def _follow_mapping(state: ServiceState, holder: MappingHolder) -> None:
    while True:
        await holder.wait_changed()
        _describe_mapping(state, holder)


def _say_file_changed(version: MappingVersion) -> None:
    """A mapping file whose content changed since sfamp.config last saw it (edited while
    the service was down): what existing groups get only from a backfill, as a reload
    says it (``mapping_reloaded``)."""
    if version.file_before is None:
        return
    objects = version.mapping.objects_to_backfill(version.file_before)
    if objects:
        log.warning(
            "mapping_file_changed",
            mapping_file=version.source.removeprefix("file:"),
            backfill_objects=objects,
            hint="existing groups get what it adds from a backfill: sfamp backfill "
            + " ".join(f"--object {name}" for name in objects),
        )


def _describe_mapping(state: ServiceState, holder: MappingHolder) -> None:
    state.mapping_revision = holder.version.source
    state.mapping_objects = holder.current.objects
    state.cadence = describe(holder.current.sync_cadence)


# What a flush waiting out Amplitude's trouble says when the service stops meanwhile.
RETRY_GIVEN_UP: Final = (
    "the service is stopping: the flush was waiting to retry Amplitude, so it stops "
    "without committing; the next start (or member) sends its changes"
)


def _amplitude_answered(service: Service, answer: Answer) -> None:
    """Every Amplitude answer, counted (metrics) and, while retried, shown (/status)."""
    service.metrics.amplitude_answered(answer)
    service.state.amplitude_answered(answer.retriable, answer.described)


async def _wait_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    """Amplitude's retry and throttle waits, ended by a stop with
    :class:`RetryEndedByStopError`: a flush that waits out Amplitude's trouble commits
    nothing anyway, so the drain need not wait for it (a flush that is sending may finish).
    """
    if not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    if stop.is_set():
        raise RetryEndedByStopError(RETRY_GIVEN_UP)


_AT_ONCE: Final = (
    "a second Ctrl-C or SIGTERM stops at once; a flush cut short is sent again at the next start"
)


def _check_credentials(settings: Settings, role: Role) -> None:
    problems = settings.credential_problems(amplitude=role in ("all", "deliver"))
    if problems:
        raise SettingsError(problems)


def on_stop_signal(service: Service) -> None:
    """SIGTERM or SIGINT: the first asks for the drain; a second, during it, cuts it short."""
    (service.stop_now if service.stop.is_set() else service.stop).set()


def _install_signal_handlers(service: Service) -> None:
    loop = asyncio.get_running_loop()
    handler = partial(on_stop_signal, service)
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, handler)


__all__ = ["Role", "Service", "run_service", "serving"]
