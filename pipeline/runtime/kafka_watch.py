"""Whether Kafka still answers once the service runs.

A broker that goes away does not fail the pumps: the deliver consumer's fetches come back
empty and its flushes, with nothing to send, succeed; the ingest side retries its writes.
So the service asks the cluster for its metadata every :data:`CHECK_SECONDS`, through a
client of its own (:class:`pipeline.kafka.probe.MetadataProbe`: the producer's connections
and lock are left alone). After :data:`FAILURES_TO_SAY` requests in a row that
no broker answered, it says so: ``/readyz`` answers 503 naming Kafka, ``/status`` carries
``kafka_unreachable``, the ``sfamp_kafka_unreachable`` gauge is 1, and flushes that commit
nothing no longer move ``sfamp_last_successful_flush_timestamp_seconds`` on. One answer
clears it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Final, Protocol

import structlog

from pipeline.errors import KafkaUnavailableError
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.state import ServiceState
from pipeline.runtime.tasks import let_end

CHECK_SECONDS: Final = 5.0  # between the end of one metadata request and the next
REQUEST_SECONDS: Final = 15.0  # the most one request may take, every broker tried
FAILURES_TO_SAY: Final = 3  # unanswered requests in a row before Kafka counts as lost
STOP_WAIT_SECONDS: Final = 1.0  # how long a stop lets the request under way end by itself

log = structlog.get_logger(__name__)


class Cluster(Protocol):
    async def cluster_answers(self, timeout_seconds: float) -> None: ...


async def watch_kafka(
    cluster: Cluster, state: ServiceState, metrics: Metrics, *, every: float = CHECK_SECONDS
) -> None:
    """Ask ``cluster`` for its metadata every ``every`` seconds until cancelled, keeping
    ``state.kafka_unreachable`` and the gauge in step; the loss and the return are logged
    once each (``kafka_unreachable_while_running``, ``kafka_answers_again``)."""
    failures = 0
    while True:
        await asyncio.sleep(every)  # the start has just had Kafka's answers
        refused: list[KafkaUnavailableError] = []
        # A stop waits a moment for the request under way, not its whole timeout (up to
        # REQUEST_SECONDS when brokers take connections and never answer): the probe's
        # client holds every connection a request uses, and the service closes it. Only
        # the probe's bootstrap is seen to its end (see MetadataProbe).
        await let_end(_asked(cluster, refused), within=STOP_WAIT_SECONDS)
        failures = failures + 1 if refused else 0
        if failures >= FAILURES_TO_SAY and state.kafka_unreachable is None:
            since = datetime.now(UTC).isoformat(timespec="seconds")
            state.kafka_unreachable = {"since": since, "error": str(refused[0])}
            metrics.kafka_unreachable.set(1)
            log.error("kafka_unreachable_while_running", reason=str(refused[0]))
        elif not failures and state.kafka_unreachable is not None:
            log.warning("kafka_answers_again", since=state.kafka_unreachable["since"])
            state.kafka_unreachable = None
            metrics.kafka_unreachable.set(0)


async def _asked(cluster: Cluster, refused: list[KafkaUnavailableError]) -> None:
    """One metadata request; a refusal is put in ``refused`` rather than raised."""
    try:
        await cluster.cluster_answers(timeout_seconds=REQUEST_SECONDS)
    except KafkaUnavailableError as exc:
        refused.append(exc)
