"""A service started before its Kafka waits for it, as it waits for Salesforce, instead of
exiting into a supervisor's restart loop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from pipeline.runtime.service import Service, run_service
from pipeline.runtime.state import ServiceState
from pipeline.sandbox_stack import SandboxStack
from sfamp_sandbox.kafka import EmbeddedKafka, free_port
from tests.runtime.conftest import MAPPING, settings_for, wait_until


def unreachable(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [line for line in logs if line["event"] == "kafka_unreachable"]


@pytest.mark.integration
async def test_the_start_waits_for_a_kafka_that_comes_up_later(
    stack: SandboxStack, topic_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    settings = settings_for(stack, topic_prefix, kafka={"bootstrap_servers": f"127.0.0.1:{port}"})
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
            assert "not answering" in str(line["reason"]), line

            await broker.start()
            await wait_until(
                lambda: task.done() or service.state.channels_subscribed,
                timeout=60,
                what="the service to start once Kafka answers",
            )
            assert not task.done(), task
            assert any(line["event"] == "service_starting" for line in logs)
        finally:
            service.stop.set()
            try:
                await asyncio.wait_for(task, timeout=40)
            finally:
                broker.stop()


async def test_a_stop_while_waiting_for_kafka_ends_the_start_cleanly(
    stack: SandboxStack, topic_prefix: str
) -> None:
    settings = settings_for(
        stack, topic_prefix, kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"}
    )
    service = Service(ServiceState(role="all"))
    with capture_logs() as logs:
        task = asyncio.create_task(run_service(settings, service=service))
        await wait_until(lambda: unreachable(logs), what="a kafka_unreachable warning")
        service.stop.set()
        await asyncio.wait_for(task, timeout=10)  # returns: no error, no traceback
    assert not any(line["event"] == "service_starting" for line in logs)
