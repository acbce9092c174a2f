"""A service started before its Kafka waits for it, as it waits for Salesforce, instead of
exiting into a supervisor's restart loop: its health endpoint answers meanwhile (alive,
not ready, and why), and a stop or a signal ends the wait at once, even mid-attempt."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import select
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from pipeline.amplitude import AmplitudeClient
from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import KafkaSettings, Settings
from pipeline.errors import TopicConfigError
from pipeline.kafka.admin import TopicSpec, ensure_topics
from pipeline.kafka.config_topic import publish_mapping
from pipeline.kafka.producer import ChangeProducer
from pipeline.runtime.deliver import DeliverPump
from pipeline.runtime.mapping_file import MappingVersion
from pipeline.runtime.mapping_source import MappingHolder, watch_config_topic
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.retry import Backoff
from pipeline.runtime.service import Service, run_service, serving
from pipeline.runtime.state import ServiceState
from pipeline.sandbox_stack import SandboxStack
from sfamp_sandbox.amplitude.state import SECRET_KEY, Project
from sfamp_sandbox.kafka import EmbeddedKafka
from tests.cli.sandbox_process import cli_env
from tests.runtime.conftest import MAPPING, settings_for, wait_until
from tests.support.mappings import marked_twice
from tests.support.ports import unused_port

CREDENTIALS = {
    "SFAMP_SALESFORCE__LOGIN_URL": "http://127.0.0.1:9",
    "SFAMP_SALESFORCE__CLIENT_ID": "client",
    "SFAMP_SALESFORCE__CLIENT_SECRET": "secret",
    "SFAMP_SALESFORCE__USERNAME": "user@example.com",
    "SFAMP_SALESFORCE__PASSWORD": "password",
    "SFAMP_AMPLITUDE__API_KEY": "key",
}


def unreachable(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in logs if line["event"] == "kafka_unreachable"]


def settings_without_org(bootstrap: str, **kafka: Any) -> Settings:
    """Credentials that are never used: the start waits for Kafka before anything else."""
    return Settings(
        _env_file=None,
        salesforce={
            "login_url": "http://127.0.0.1:9",
            "client_id": "client",
            "client_secret": "secret",
            "username": "user@example.com",
            "password": "password",
        },
        amplitude={"api_key": "key"},
        kafka={"bootstrap_servers": bootstrap, **kafka},
        runtime={"health_port": 0},
    )


@pytest.mark.integration
async def test_the_start_waits_for_a_kafka_that_comes_up_later(
    stack: SandboxStack, topic_prefix: str, tmp_path: Path
) -> None:
    port, health = unused_port(), unused_port()
    settings = settings_for(
        stack,
        topic_prefix,
        kafka={"bootstrap_servers": f"127.0.0.1:{port}"},
        runtime={"health_port": health, "health_host": "127.0.0.1"},
    )
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps(MAPPING))
    service = Service(ServiceState(role="all"))
    broker = EmbeddedKafka(port)
    with capture_logs() as logs:
        task = asyncio.create_task(run_service(settings, mapping_file=mapping, service=service))
        try:
            await wait_until(lambda: unreachable(logs), what="a kafka_unreachable warning")
            assert not task.done(), "the service gave up instead of waiting for Kafka"
            line = unreachable(logs)[0]
            assert line["bootstrap_servers"] == f"127.0.0.1:{port}"
            assert "not answering" in line["reason"], line
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{health}") as client:
                alive = await client.get("/healthz")
                ready = await client.get("/readyz")
            assert alive.status_code == 200  # a liveness probe does not restart it
            assert ready.status_code == 503
            [waiting] = ready.json()["waiting_for"]
            assert waiting.startswith(f"waiting for Kafka: Kafka at 127.0.0.1:{port}"), waiting

            await broker.start()
            await wait_until(
                lambda: task.done() or service.state.channels_subscribed,
                timeout=60,
                what="the service to start once Kafka answers",
            )
            assert not task.done(), task
            assert service.state.starting is None
            assert any(line["event"] == "service_starting" for line in logs)
        finally:
            service.stop.set()
            try:
                await asyncio.wait_for(task, timeout=40)
            finally:
                broker.stop()


async def test_the_wait_for_kafka_logs_its_own_line_only(caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_without_org(f"127.0.0.1:{unused_port()}")
    service = Service(ServiceState(role="all"))
    aiokafka = logging.getLogger("aiokafka")
    before = aiokafka.level
    aiokafka.setLevel(logging.NOTSET)  # as in a fresh `sfamp run` (a CLI test may have quieted it)
    try:
        with capture_logs() as logs:
            task = asyncio.create_task(run_service(settings, service=service))
            await wait_until(lambda: len(unreachable(logs)) >= 2, what="two kafka_unreachable")
            service.stop.set()
            await asyncio.wait_for(task, timeout=10)
        # aiokafka's "Unable connect to ..." error at each attempt would say it twice.
        assert [r.getMessage() for r in caplog.records if r.name.startswith("aiokafka")] == []
        assert aiokafka.level == logging.NOTSET  # handed back
    finally:
        aiokafka.setLevel(before)


async def test_a_stop_in_the_middle_of_an_attempt_ends_the_start_at_once() -> None:
    # A listener that never accepts: each attempt would wait for the request timeout.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        settings = settings_without_org(f"127.0.0.1:{port}", request_timeout_seconds=60)
        service = Service(ServiceState(role="all"))
        with capture_logs() as logs:
            task = asyncio.create_task(run_service(settings, service=service))
            await wait_until(
                lambda: select.select([listener], [], [], 0)[0],
                what="the first attempt to connect",
            )
            service.stop.set()
            await asyncio.wait_for(task, timeout=10)  # not the 60 s of the attempt
    [stopped] = [line for line in logs if line["event"] == "service_stopped"]
    assert stopped["during"] == "starting"
    assert not unreachable(logs)  # the attempt was still going
    assert not any(line["event"] == "service_starting" for line in logs)


async def test_sigterm_while_waiting_for_kafka_exits_0_with_one_line(tmp_path: Path) -> None:
    env = cli_env(
        **CREDENTIALS,
        SFAMP_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{unused_port()}",
        SFAMP_RUNTIME__HEALTH_PORT=str(unused_port()),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", "run", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    lines: list[str] = []
    try:
        while not any('"kafka_unreachable"' in line for line in lines):
            line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
            assert line, "sfamp run ended early:\n" + "".join(lines)
            lines.append(line)
        process.send_signal(signal.SIGTERM)
        _, rest = await asyncio.wait_for(process.communicate(), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    err = "".join(lines) + rest.decode()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    stopped = [json.loads(line) for line in err.splitlines() if '"service_stopped"' in line]
    assert stopped, err
    assert stopped[0]["during"].startswith("waiting for Kafka"), err


@pytest.mark.integration
async def test_the_config_watcher_waits_for_kafka_and_then_switches(topic_prefix: str) -> None:
    port = unused_port()
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", topic_prefix=topic_prefix)
    first = MappingConfig.model_validate(MAPPING)
    holder = MappingHolder(MappingVersion(first, "file:mapping.json"))
    newer = MappingConfig.model_validate({**MAPPING, "sync_cadence": {"mode": "hourly"}})
    broker = EmbeddedKafka(port)
    with capture_logs() as logs:
        watcher = asyncio.create_task(
            watch_config_topic(holder, kafka, 0, backoff=Backoff(first=0.05, ceiling=0.5))
        )
        try:
            await wait_until(
                lambda: any(line["event"] == "config_topic_unreachable" for line in logs),
                what="a config_topic_unreachable warning",
            )
            assert not watcher.done(), "the watcher ended on a Kafka outage"
            await broker.start()
            await publish_mapping(kafka, newer, now_ms=2**42)
            await wait_until(
                lambda: watcher.done() or holder.version.source.startswith("sfamp.config revision"),
                timeout=60,
                what="the published revision to be taken",
            )
            assert not watcher.done(), watcher
            assert holder.current.sync_cadence.mode == "hourly"
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            broker.stop()


@pytest.mark.integration
async def test_a_published_mapping_the_org_refuses_is_waited_on_until_a_new_revision(
    stack: SandboxStack, topic_prefix: str
) -> None:
    """No file to fall back on: exiting would crash-loop every replica at every restart."""
    settings = settings_for(stack, topic_prefix)
    typo = copy.deepcopy(MAPPING)
    typo["mappings"][0]["group_properties"][1]["sfdc_field"] = "Industy"
    refused = await publish_mapping(
        settings.kafka, MappingConfig.model_validate(typo), now_ms=int(time.time() * 1000)
    )
    service = Service(ServiceState(role="all"))
    with capture_logs() as logs:
        task = asyncio.create_task(run_service(settings, service=service))
        try:
            await wait_until(
                lambda: task.done() or any(e["event"] == "mapping_refused_at_start" for e in logs),
                what="a mapping_refused_at_start error",
            )
            assert not task.done(), task
            source = f"sfamp.config revision {refused.revision}"
            _, waiting = service.state.ready()
            assert waiting[0].startswith(f"the org refuses {source} (the mapping does not match")
            assert service.state.to_status()["mapping_refused"]["source"] == source

            await publish_and_start(settings, service, task)
            assert service.state.mapping_refused is None  # it passed: the refusal is history
        finally:
            service.stop.set()
            await asyncio.wait_for(task, timeout=40)


@pytest.mark.integration
async def test_a_topic_that_would_lose_data_ends_the_start_of_a_published_mapping_too(
    stack: SandboxStack, topic_prefix: str
) -> None:
    """Waiting for a new revision cannot fix a topic: only a refusal by the org is waited on."""
    settings = settings_for(stack, topic_prefix)
    changes = f"{topic_prefix}.changes.Account"
    await ensure_topics(settings.kafka, [TopicSpec(changes, 1, {"retention.ms": "60000"})])
    await publish_mapping(  # after the topic: publishing makes missing topics as they should be
        settings.kafka, MappingConfig.model_validate(MAPPING), now_ms=int(time.time() * 1000)
    )
    with pytest.raises(TopicConfigError) as info:
        await asyncio.wait_for(run_service(settings, service=Service(ServiceState("all"))), 60)
    assert [problem.path for problem in info.value.problems] == [changes]


class NoReads:
    """The pump reads nothing from Salesforce before its consumer joins."""

    async def describe(self, sfdc_object: str) -> dict[str, Any]:
        raise AssertionError("no describe expected")

    def query(self, soql: str, *, all_rows: bool = False) -> AsyncIterator[dict[str, Any]]:
        raise AssertionError("no query expected")


def deliver_pump(settings: Settings) -> DeliverPump:
    holder = MappingHolder(MappingVersion(MappingConfig.model_validate(MAPPING), "test"))
    return DeliverPump(
        settings,
        holder,
        AmplitudeClient(settings.amplitude),
        ChangeProducer(settings.kafka),
        NoReads(),
        ServiceState(role="deliver"),
        Metrics(),
    )


async def test_the_deliver_consumer_start_waits_for_kafka_until_stopped() -> None:
    pump = deliver_pump(settings_without_org(f"127.0.0.1:{unused_port()}"))
    with capture_logs() as logs:
        task = asyncio.create_task(pump.run())
        await wait_until(
            lambda: (
                task.done()
                or any(line["event"] == "deliver_consumer_start_failed" for line in logs)
            ),
            what="a deliver_consumer_start_failed error",
        )
        assert not task.done(), "the pump ended on a Kafka outage"
        pump.request_stop()
        await asyncio.wait_for(task, timeout=10)  # the wait between attempts ends at once


async def test_a_stop_cancels_a_deliver_consumer_start_that_hangs() -> None:
    with socket.socket() as listener:  # accepts no connection: an attempt would hang
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        pump = deliver_pump(settings_without_org(f"127.0.0.1:{port}", request_timeout_seconds=60))
        with capture_logs() as logs:
            task = asyncio.create_task(pump.run())
            await wait_until(
                lambda: select.select([listener], [], [], 0)[0], what="the consumer to connect"
            )
            pump.request_stop()
            await asyncio.wait_for(task, timeout=10)  # not the 60 s of the attempt
    assert not any(line["event"] == "deliver_consumer_start_failed" for line in logs)


@pytest.mark.integration
async def test_an_amplitude_key_amplitude_refuses_holds_the_start_until_it_is_accepted(
    stack: SandboxStack, topic_prefix: str, mapping_file: Path
) -> None:
    """Not a ready service whose every flush fails, nor an exit into a crash loop: the
    start waits, saying why (``/readyz``, the log), and goes on once the key is accepted."""
    settings = settings_for(stack, topic_prefix)
    refused = settings.model_copy(
        update={"amplitude": settings.amplitude.model_copy(update={"api_key": SecretStr("no")})}
    )
    assert stack.amplitude is not None
    amplitude = stack.amplitude.state
    service = Service(ServiceState("all"))
    with capture_logs() as logs:
        task = asyncio.create_task(run_service(refused, mapping_file=mapping_file, service=service))
        try:
            await wait_until(
                lambda: (
                    task.done() or "Amplitude refused the API key" in (service.state.starting or "")
                ),
                what="the start to wait for the key",
            )
            assert not task.done(), task
            assert not service.state.consumer_joined
            amplitude.projects = (*amplitude.projects, Project("granted", "us", "no", SECRET_KEY))
            await wait_until(lambda: service.state.consumer_joined, what="the start to go on")
        finally:
            service.stop.set()
            await asyncio.wait_for(task, timeout=40)
    refusals = [line for line in logs if line["event"] == "amplitude_key_refused"]
    assert refusals[0]["fix_needed"] is True, refusals
    # An ingest-only process sends nothing to Amplitude: its key is not asked for.
    async with serving(refused, mapping_file, role="ingest") as ingest:
        assert ingest.state.runs_ingest


@contextlib.asynccontextmanager
async def waiting_start(
    settings: Settings, waits_for: str
) -> AsyncIterator[tuple[Service, asyncio.Task[None]]]:
    """A service started without a mapping file, once its start waits with ``waits_for`` in
    the reason /readyz gives; stopped at the end."""
    service = Service(ServiceState("all"))
    task = asyncio.create_task(run_service(settings, service=service))
    try:
        await wait_until(
            lambda: task.done() or waits_for in (service.state.starting or ""),
            what=f"the start to wait ({waits_for})",
        )
        assert not task.done(), task
        yield service, task
    finally:
        service.stop.set()
        await asyncio.wait_for(task, timeout=40)


async def publish_and_start(settings: Settings, service: Service, task: asyncio.Task[None]) -> None:
    """Publish a usable revision and wait for the start that takes it, ending the wait."""
    usable = MappingConfig.model_validate(MAPPING)
    published = await publish_mapping(settings.kafka, usable, now_ms=int(time.time() * 1000))
    await wait_until(
        lambda: task.done() or service.state.channels_subscribed,
        timeout=90,
        what="the start once a usable revision is published",
    )
    assert not task.done(), task
    assert service.state.mapping_revision == f"sfamp.config revision {published.revision}"


@pytest.mark.integration
async def test_a_published_revision_this_version_refuses_is_waited_on_until_replaced(
    stack: SandboxStack, topic_prefix: str
) -> None:
    """With no file to fall back on, the start waits (as for a revision the org refuses)
    rather than exit into a restart loop; the import that replaces it ends the wait."""
    settings = settings_for(stack, topic_prefix)
    await publish_mapping(settings.kafka, marked_twice(MAPPING), now_ms=1)
    with capture_logs() as logs:
        async with waiting_start(settings, "cannot be used") as (service, task):
            assert service.state.starting is not None
            assert service.state.starting.startswith(
                f"revision 1 in {topic_prefix}.config cannot be used: "
            )
            assert service.state.starting.endswith("waiting for 'sfamp config import'")
            waiting = [e for e in logs if e["event"] == "published_mapping_unusable_at_start"]
            assert waiting
            await publish_and_start(settings, service, task)
            assert service.state.mapping_revision == "sfamp.config revision 2"


@pytest.mark.integration
async def test_a_service_started_before_the_first_import_waits_for_it(
    stack: SandboxStack, topic_prefix: str
) -> None:
    """Deployed before its first ``sfamp config import`` (or the console's Save), with no
    file: not an exit into a restart loop but a wait, said in /readyz, until one is
    published."""
    health = unused_port()
    settings = settings_for(
        stack, topic_prefix, runtime={"health_port": health, "health_host": "127.0.0.1"}
    )
    with capture_logs() as logs:
        async with waiting_start(settings, "nothing is published") as (service, task):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{health}") as client:
                ready = await client.get("/readyz")
            assert ready.status_code == 503
            [waiting] = ready.json()["waiting_for"]
            assert waiting == (
                f"no mapping file is given and nothing is published in {topic_prefix}.config "
                "yet; waiting for 'sfamp config import' (or the console's Save)"
            )
            await publish_and_start(settings, service, task)
            assert service.state.mapping_revision == "sfamp.config revision 1"
    said = [e for e in logs if e["event"] == "mapping_not_published_at_start"]
    assert [e["log_level"] for e in said] == ["warning"]  # once, however long the wait
