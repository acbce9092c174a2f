"""A running service whose Kafka stops answering says so: /readyz 503 naming Kafka, /status,
the gauge, and no more "successful" flushes; once Kafka answers again, all of that clears."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import struct
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.conn import AIOKafkaConnection
from aiokafka.protocol.admin import ApiVersionResponse_v0
from structlog.testing import capture_logs

from pipeline.config.settings import KafkaSettings
from pipeline.errors import KafkaUnavailableError
from pipeline.kafka import probe as probe_module
from pipeline.kafka.probe import PER_BROKER_SECONDS, MetadataProbe
from pipeline.runtime import service as service_module
from pipeline.runtime.kafka_watch import FAILURES_TO_SAY, STOP_WAIT_SECONDS, watch_kafka
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.service import Service, run_service
from pipeline.runtime.state import ServiceState
from pipeline.sandbox_stack import SandboxStack
from sfamp_sandbox.kafka import EmbeddedKafka
from tests.runtime.conftest import MAPPING, Org, group, settings_for, wait_until
from tests.support.events import WAIT_SECONDS, ended, happened
from tests.support.ports import unused_port


class Cluster:
    """A cluster that answers as ``script`` says, request after request (then as
    ``answers`` says), and notes what the service said of Kafka at each request."""

    def __init__(self, script: list[bool]) -> None:
        self.script = script
        self.answers = True
        self.said: list[dict[str, str] | None] = []
        self.state: ServiceState | None = None

    @property
    def asked(self) -> int:
        return len(self.said)

    async def cluster_answers(self, timeout_seconds: float) -> None:
        assert self.state is not None
        self.said.append(self.state.kafka_unreachable)
        answers = self.script.pop(0) if self.script else self.answers
        if not answers:
            raise KafkaUnavailableError("no broker answers a metadata request: connection refused")


def gauge(metrics: Metrics) -> float:
    return metrics.kafka_unreachable._value.get()  # type: ignore[no-any-return]


def watching(cluster: Cluster) -> tuple[ServiceState, Metrics, asyncio.Task[None]]:
    state, metrics = ServiceState(role="deliver"), Metrics()
    state.consumer_joined = True
    cluster.state = state
    return state, metrics, asyncio.create_task(watch_kafka(cluster, state, metrics, every=0.01))


async def test_requests_unanswered_in_a_row_make_the_service_unready_until_one_is() -> None:
    cluster = Cluster([True, *[False] * FAILURES_TO_SAY])
    cluster.answers = False
    with capture_logs() as logs:
        state, metrics, task = watching(cluster)
        try:
            await wait_until(lambda: any(cluster.said), what="a request once Kafka was lost")
            first_said = [said is not None for said in cluster.said].index(True)
            assert first_said == 1 + FAILURES_TO_SAY, "not said right after the failures in a row"
            ready, waiting = state.ready()
            assert not ready
            [reason] = waiting
            assert reason.startswith("Kafka unreachable since "), reason
            assert reason.endswith(": no broker answers a metadata request: connection refused")
            assert state.to_status()["kafka_unreachable"] == state.kafka_unreachable
            assert gauge(metrics) == 1
            cluster.answers = True
            await wait_until(lambda: state.kafka_unreachable is None, what="Kafka back")
            assert state.ready() == (True, [])
            assert gauge(metrics) == 0
        finally:
            task.cancel()
    events = [line["event"] for line in logs]
    assert events == ["kafka_unreachable_while_running", "kafka_answers_again"], events


async def test_fewer_unanswered_requests_in_a_row_say_nothing() -> None:
    fewer = [False] * (FAILURES_TO_SAY - 1)
    cluster = Cluster([*fewer, True, *fewer])
    state, metrics, task = watching(cluster)
    try:
        await wait_until(lambda: cluster.asked >= 2 * FAILURES_TO_SAY + 2, what="the requests")
    finally:
        task.cancel()
    assert cluster.said == [None] * len(cluster.said), "Kafka was said lost"
    assert state.kafka_unreachable is None
    assert gauge(metrics) == 0


class Asked:
    """The probe, counting the requests the watch starts through it."""

    def __init__(self, probe: MetadataProbe) -> None:
        self.probe = probe
        self.asked = 0

    async def cluster_answers(self, timeout_seconds: float) -> None:
        self.asked += 1
        await self.probe.cluster_answers(timeout_seconds)


async def watch_alone(cluster: Asked | MetadataProbe) -> None:
    await watch_kafka(cluster, ServiceState(role="deliver"), Metrics(), every=0.01)


def open_connections(port: int) -> list[AIOKafkaConnection]:
    return [
        item
        for item in gc.get_objects()
        if isinstance(item, AIOKafkaConnection) and item.port == port and item.connected()
    ]


@pytest.mark.integration
async def test_a_stop_while_the_broker_does_not_answer_ends_the_watch_soon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The probe's client gives a broker this long per request: far longer than a stop waits.
    monkeypatch.setattr(probe_module, "PER_BROKER_SECONDS", 4 * STOP_WAIT_SECONDS + 6)
    broker = await EmbeddedKafka(unused_port()).start()
    probe = MetadataProbe(KafkaSettings(bootstrap_servers=broker.bootstrap_servers))
    asked = Asked(probe)
    task: asyncio.Task[None] | None = None
    try:
        await probe.cluster_answers(timeout_seconds=30)  # connected while the broker answers
        broker.pause()  # it takes connections and answers nothing
        task = asyncio.create_task(watch_alone(asked))
        await wait_until(lambda: asked.asked >= 1, what="a request to the frozen broker")
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=STOP_WAIT_SECONDS + 3)
        assert done, "the stop waited for the whole request"
        assert task.cancelled(), "the stop was lost"
    finally:
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        await probe.aclose()
        broker.stop()
    assert open_connections(broker.port) == []


class VersionsOnlyBroker:
    """Names its API versions and never answers a metadata request: a client bootstrapping
    from it waits at the one step where aiokafka leaves the connection open if cancelled."""

    def __init__(self) -> None:
        self.asked_metadata = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                (size,) = struct.unpack(">i", await reader.readexactly(4))
                frame = await reader.readexactly(size)
                api_key, _, correlation = struct.unpack(">hhi", frame[:8])
                if api_key == API_VERSIONS:
                    versions = [(METADATA, 0, 1), (API_VERSIONS, 0, 0)]
                    answer = ApiVersionResponse_v0(error_code=0, api_versions=versions)
                    body = struct.pack(">i", correlation) + answer.encode()
                    writer.write(struct.pack(">i", len(body)) + body)
                elif api_key == METADATA:
                    self.asked_metadata.set()
        writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


API_VERSIONS, METADATA = 18, 3


async def test_a_stop_while_the_probe_bootstraps_leaves_no_connection_open() -> None:
    # The bootstrap's metadata request outlasts the moment a stop gives the watch.
    assert PER_BROKER_SECONDS > STOP_WAIT_SECONDS
    broker = VersionsOnlyBroker()
    port = await broker.start()
    probe = MetadataProbe(KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}"))
    task = asyncio.create_task(watch_alone(probe))
    try:
        await happened(broker.asked_metadata, "the probe's bootstrap asking for metadata")
        task.cancel()
        await asyncio.wait({task}, timeout=WAIT_SECONDS)
        assert task.done(), f"the watch did not stop within {WAIT_SECONDS:g} s"
        assert task.cancelled(), "the stop was lost"
        await probe.aclose()
        assert open_connections(port) == [], "the bootstrap's connection was left open"
    finally:
        task.cancel()
        await asyncio.wait({task})
        await probe.aclose()
        await broker.close()


@pytest.mark.integration
async def test_a_service_whose_broker_dies_is_unready_and_stops_counting_flushes(
    stack: SandboxStack, topic_prefix: str, tmp_path: Path
) -> None:
    health = unused_port()
    broker = await EmbeddedKafka(unused_port()).start()
    settings = settings_for(
        stack,
        topic_prefix,
        kafka={"bootstrap_servers": broker.bootstrap_servers},
        runtime={"health_port": health, "health_host": "127.0.0.1"},
    )
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps(MAPPING))
    service = Service(ServiceState(role="all"))
    task = asyncio.create_task(run_service(settings, mapping_file=mapping, service=service))

    def flushes() -> int:
        return 0 if service.deliver is None else service.deliver.flushes

    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{health}") as client:

            async def readiness() -> dict[str, Any]:
                try:
                    answer = await client.get("/readyz")
                except httpx.ConnectError:  # not listening yet
                    return {"status": None}
                return {"status": answer.status_code, **answer.json()}

            ready: dict[str, Any] = {}

            async def ready_is(status: int) -> bool:
                ready.update(await readiness())
                return bool(ready["status"] == status)

            await wait_until(lambda: ready_is(200), what="the service ready", timeout=60)
            await wait_until(lambda: flushes() >= 1, what="a first flush")
            broker.stop()
            # Three requests unanswered in a row, five seconds apart.
            await wait_until(lambda: ready_is(503), what="/readyz 503", timeout=60)
            [reason] = ready["waiting_for"]
            assert reason.startswith("Kafka unreachable since "), ready
            succeeded, before = service.state.last_successful_flush, flushes()
            await wait_until(lambda: flushes() >= before + 2, what="two more flushes")
            assert service.state.last_successful_flush == succeeded, "a flush without Kafka counted"
    finally:
        service.stop.set()
        try:
            await ended(task, "the service stopped without its Kafka", 60)
        finally:
            broker.stop()


@pytest.mark.integration
async def test_a_flush_that_committed_counts_whatever_the_watch_said(
    stack: SandboxStack,
    org: Org,
    topic_prefix: str,
    mapping_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def never_answers_back(*_: Any) -> None:  # the watch's word stays the test's
        await asyncio.Event().wait()

    monkeypatch.setattr(service_module, "watch_kafka", never_answers_back)
    service = Service(ServiceState(role="all"))
    settings = settings_for(stack, topic_prefix)
    task = asyncio.create_task(run_service(settings, mapping_file=mapping_file, service=service))
    try:
        await wait_until(lambda: service.state.ready()[0], what="the service ready", timeout=60)
        service.state.kafka_unreachable = {"since": "2026-12-02T09:00:00+00:00", "error": "test"}
        before = service.state.last_successful_flush
        account = await org.create("Account", Name="Committed")
        await wait_until(lambda: group(stack, "account", account) is not None, what="delivery")
        # Sent and committed: Kafka answered, whatever the watch last said.
        await wait_until(
            lambda: service.state.last_successful_flush != before,
            what="the committing flush counted as successful",
        )
    finally:
        service.stop.set()
        await ended(task, "the service stopped", 60)
