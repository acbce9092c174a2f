"""How ``sfamp run`` starts: Kafka and Salesforce waited for, the starting mapping checked.

Nothing here ends the start over trouble that waiting can fix: a Kafka that does not
answer (``kafka_unreachable``), a Salesforce that does not (``mapping_check_retrying``),
a published mapping the org refuses (``mapping_refused_at_start``) and a first mapping
not published yet (``mapping_not_published_at_start``) are waited for with backoff, each
shown in ``/readyz`` through ``ServiceState.starting``; a stop ends the wait at once.
What only a person can fix (a refused mapping file, a topic that would lose data, a CA
file that cannot be loaded, an Amplitude API key Amplitude refuses) ends it with the
error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import structlog

from pipeline.amplitude import AmplitudeClient
from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.config.verify import check_mapping_against_org
from pipeline.errors import (
    AmplitudeAuthError,
    AmplitudeError,
    ConfigError,
    KafkaUnavailableError,
    Problem,
)
from pipeline.kafka.admin import check_topic_configs, ensure_topics, sfamp_topics
from pipeline.kafka.topics import TopicNames
from pipeline.runtime.mapping_file import MappingVersion
from pipeline.runtime.mapping_source import (
    MappingHolder,
    MappingRefusal,
    NoMappingToRun,
    PublishedMappingUnusable,
    accepted_version,
    checked,
    initial_mapping,
)
from pipeline.runtime.retry import Backoff
from pipeline.runtime.state import ServiceState
from pipeline.salesforce.client import SalesforceClient

log = structlog.get_logger(__name__)
T = TypeVar("T")
# How long the start waits for Amplitude's verdict on the API key before going on.
KEY_CHECK_SECONDS = 10.0


async def unless_stopped_while_starting(
    stop: asyncio.Event, state: ServiceState, run: Coroutine[Any, Any, None]
) -> bool:
    """``run`` (the start, then the pumps); True when a stop came while it was still
    starting, which cancels it at once. Once the pumps run, a stop is theirs to drain."""
    task = asyncio.create_task(run)
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and state.starting is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # its clients close
            return True
        await task
        return False
    finally:
        stopped.cancel()
        if not task.done():  # this coroutine was cancelled itself
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def accepted_holder(
    settings: Settings,
    state: ServiceState,
    salesforce: SalesforceClient,
    start: Callable[[], Awaitable[tuple[MappingVersion, int]]],
    version: MappingVersion,
    config_offset: int,
) -> tuple[MappingHolder, int]:
    """The holder of the starting mapping, and the sfamp.config offset to follow from.

    A published revision the org refuses, with no file to fall back on, does not end
    the start: every replica would exit at every restart. The start waits instead
    (``/readyz`` and ``/status`` say why), reading sfamp.config again for a newer
    revision and checking with backoff (5 s to 60 s). A refused file ends the start:
    whoever gave it fixes it and starts again.
    """
    backoff = Backoff(first=5.0, ceiling=60.0)
    ours: dict[str, Any] | None = None  # the refusal this wait put in /status
    while True:
        state.starting = "checking the mapping against the Salesforce org"
        try:
            holder = await checked_holder(settings, state, salesforce, version)
        except ConfigError as exc:  # the org refuses the mapping (a topic's refusal raises)
            if version.passed_over is not None or version.source.startswith("file:"):
                raise
            refusal = MappingRefusal.of(version.source, exc)
            state.mapping_refused = ours = refusal.to_json()
            state.starting = (
                f"the org refuses {version.source} ({refusal.reason}); waiting for a "
                "new revision ('sfamp config import')"
            )
            delay = backoff.next()
            log.error(
                "mapping_refused_at_start",
                source=version.source,
                reason=refusal.reason,
                problems=list(refusal.problems),
                retry_in=round(delay, 1),
            )
        else:
            if ours is not None and state.mapping_refused is ours:  # it passes now
                state.mapping_refused = None
            return holder, config_offset
        await asyncio.sleep(delay)
        version, config_offset = await starting_mapping(settings, state, start)


async def starting_mapping(
    settings: Settings,
    state: ServiceState,
    start: Callable[[], Awaitable[tuple[MappingVersion, int]]],
) -> tuple[MappingVersion, int]:
    """``start()`` (the mapping to run and where to follow sfamp.config from) once Kafka
    answers and a revision this version can run is published. With no file to fall back
    on, a revision it refuses (an older version published it before a rule it breaks)
    does not end the start, as a revision the org refuses does not, and neither does an
    empty sfamp.config (a service deployed before its first ``sfamp config import`` or
    the console's Save): the start waits for the import (``/readyz`` and ``/status`` say
    so), reading sfamp.config again every 2 s to 10 s for a first revision, 5 s to 60 s
    for one that replaces a refused revision."""
    refused, unpublished = Backoff(first=5.0, ceiling=60.0), Backoff(first=2.0, ceiling=10.0)
    while True:
        try:
            return await when_kafka_answers(settings, state, start)
        except PublishedMappingUnusable as exc:
            delay = refused.next()
            state.starting = f"{str(exc).splitlines()[0]}; waiting for 'sfamp config import'"
            log.error(
                "published_mapping_unusable_at_start",
                reason=str(exc).splitlines()[0],
                problems=[str(problem) for problem in exc.problems],
                retry_in=round(delay, 1),
            )
        except NoMappingToRun:
            delay = unpublished.next()
            topic = TopicNames(settings.kafka.topic_prefix).config
            if unpublished.attempts == 1:  # said once: the wait is the expected first state
                log.warning("mapping_not_published_at_start", topic=topic)
            state.starting = (
                f"no mapping file is given and nothing is published in {topic} yet; "
                "waiting for 'sfamp config import' (or the console's Save)"
            )
        await asyncio.sleep(delay)


async def checked_holder(
    settings: Settings, state: ServiceState, salesforce: SalesforceClient, version: MappingVersion
) -> MappingHolder:
    """Check the starting mapping (a refusal ends the start) and hold it with the same
    check for every later version."""
    change_events = state.runs_ingest and not settings.salesforce.cdc_channel

    async def check(mapping: MappingConfig) -> list[Problem]:
        warnings = await check_mapping_against_org(
            settings, mapping, salesforce=salesforce, change_events=change_events
        )
        await check_topic_configs(
            settings.kafka, mapping.objects, cadence_seconds=mapping.sync_cadence.period_seconds
        )
        return warnings

    def on_refusal(refusal: MappingRefusal | None) -> None:
        state.mapping_refused = refusal.to_json() if refusal else None

    async def accept(mapping: MappingConfig) -> None:
        fallback = version.passed_over
        source = fallback.source if fallback and mapping is fallback.mapping else version.source
        await checked(check, mapping, source=source)

    running, refused = await accepted_version(version, accept)
    holder = MappingHolder(running, check=check, on_refusal=on_refusal)
    if refused is not None:
        holder.refuse(version.source, refused)  # /status and sfamp status say so
    return holder


async def kafka_start(settings: Settings, mapping_file: Path | None) -> tuple[MappingVersion, int]:
    # The control topics first: the config topic must exist before it is followed.
    await ensure_topics(settings.kafka, sfamp_topics(settings.kafka, []))
    return await initial_mapping(settings.kafka, mapping_file, topics_exist=True)


async def when_kafka_answers(
    settings: Settings,
    state: ServiceState,
    step: Callable[[], Awaitable[T]],
    backoff: Backoff | None = None,
) -> T:
    """``step()``, tried again with backoff (1 s doubling to 30 s) while Kafka is
    unreachable, each failure logged and shown in ``/readyz``. Other errors (a topic
    policy, a CA file that cannot be loaded) end the start: waiting cannot fix them."""
    backoff = backoff or Backoff(first=1.0, ceiling=30.0)
    with _aiokafka_quiet():
        while True:
            try:
                return await step()
            except KafkaUnavailableError as exc:
                delay = backoff.next()
                state.starting = f"waiting for Kafka: {exc}"
                log.warning(
                    "kafka_unreachable",
                    bootstrap_servers=settings.kafka.bootstrap_servers,
                    reason=str(exc),
                    retry_in=round(delay, 1),
                )
            await asyncio.sleep(delay)


@contextlib.contextmanager
def _aiokafka_quiet() -> Iterator[None]:
    """aiokafka logs an error line of its own for every connection it cannot make; while
    the start waits, ``kafka_unreachable`` says it once per attempt, with the reason. Only
    the start runs then, so nothing else's aiokafka lines are lost."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


async def amplitude_key_accepted(
    amplitude: AmplitudeClient, state: ServiceState, backoff: Backoff | None = None
) -> None:
    """Return once Amplitude accepts the API key, rather than run, report ready and fail
    every flush.

    A refused key (:class:`AmplitudeAuthError`) is logged at level error and asked about
    again with backoff (5 s doubling to 5 min), ``/readyz`` saying why, as a refused
    Salesforce login is: the process waits for the key to be fixed (a new key is a new
    start) instead of exiting into a crash loop. The check sends nothing Amplitude keeps
    (:meth:`AmplitudeClient.verify_api_key`). No answer, or an unexpected one, is no
    verdict: the start goes on (the flushes retry until Amplitude answers) and the log
    says the key was not checked.
    """
    backoff = backoff or Backoff(first=5.0, ceiling=300.0)
    while True:
        try:
            async with asyncio.timeout(KEY_CHECK_SECONDS):
                await amplitude.verify_api_key()
            return
        except AmplitudeAuthError as exc:
            delay = backoff.next()
            state.starting = f"{exc}; asking again in {delay:.0f}s"
            log.error(
                "amplitude_key_refused", reason=str(exc), fix_needed=True, retry_in=round(delay, 1)
            )
        except AmplitudeError as exc:
            log.warning("amplitude_key_unchecked", reason=str(exc))
            return
        except TimeoutError:
            log.warning("amplitude_key_unchecked", reason=f"no answer in {KEY_CHECK_SECONDS:.0f}s")
            return
        await asyncio.sleep(delay)
