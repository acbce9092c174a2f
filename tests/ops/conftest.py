"""Fixtures for the operator commands: real broker topics, a CLI runner, the sandboxes.

The commands call ``asyncio.run`` themselves, so the runner invokes them in a
worker thread while the test's own loop serves the Amplitude sandbox.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
import structlog
import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from click.testing import Result
from typer.testing import CliRunner

from pipeline.cli import dlq_cmd, replay_cmd, status_cmd, topics_cmd
from pipeline.config.settings import KafkaSettings
from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.producer import ChangeProducer, Record
from pipeline.sandbox_stack import SandboxStack
from pipeline.transform.envelope import ChangeEnvelope
from sfamp_sandbox.amplitude import US_API_KEY, AmplitudeSandbox, IdentifyLimits
from tests.runtime.conftest import MAPPING, REJECTED_VALUE, Org

BLOCKED_GROUP = "blocked-group"

cli_app = typer.Typer(pretty_exceptions_enable=False)
cli_app.add_typer(topics_cmd.app, name="topics")
cli_app.add_typer(replay_cmd.app, name="replay")
cli_app.add_typer(dlq_cmd.app, name="dlq")
cli_app.command("status")(status_cmd.status)

Cli = Callable[..., Awaitable[Result]]


@pytest.fixture
def kafka(kafka_bootstrap: str, topic_prefix: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        partitions=2,
        consumer_group=f"{topic_prefix}-deliver",
    )


@pytest.fixture
async def topics(kafka: KafkaSettings) -> KafkaSettings:
    """sfamp's topics (changes for Account) created under the test's prefix."""
    await ensure_topics(kafka, sfamp_topics(kafka, ["Account"]))
    return kafka


@pytest.fixture
async def amplitude() -> AsyncIterator[AmplitudeSandbox]:
    limits = IdentifyLimits(blocked_group_values=frozenset({BLOCKED_GROUP}))
    async with AmplitudeSandbox(limits=limits) as sandbox:
        yield sandbox


def environment(kafka: KafkaSettings, amplitude_url: str | None = None) -> dict[str, str]:
    env = {
        "COLUMNS": "220",
        "SFAMP_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "SFAMP_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
        "SFAMP_KAFKA__CONSUMER_GROUP": kafka.consumer_group,
        "SFAMP_RUNTIME__LOG_FORMAT": "json",
        "SFAMP_RUNTIME__LOG_LEVEL": "error",
    }
    if amplitude_url is not None:
        env |= {
            "SFAMP_AMPLITUDE__API_KEY": US_API_KEY,
            "SFAMP_AMPLITUDE__BASE_URL": amplitude_url,
            "SFAMP_AMPLITUDE__RETRY_DEADLINE_SECONDS": "10",
            "SFAMP_AMPLITUDE__TIMEOUT_SECONDS": "5",
        }
    return env


@pytest.fixture
def cli(kafka: KafkaSettings) -> Cli:
    """``await cli("topics", "list", "--json")`` runs the command against the test's topics."""

    async def run(
        *args: str, amplitude_url: str | None = None, env: dict[str, str] | None = None
    ) -> Result:
        runner = CliRunner()
        full = environment(kafka, amplitude_url) | (env or {})
        return await asyncio.to_thread(runner.invoke, cli_app, list(args), env=full)

    return run


@pytest.fixture
async def stack(kafka_bootstrap: str) -> AsyncIterator[SandboxStack]:
    """Both sandboxes (the Amplitude one refusing two group values) on the test's broker."""
    blocked = frozenset({BLOCKED_GROUP, REJECTED_VALUE})
    async with SandboxStack(
        kafka_bootstrap=kafka_bootstrap,
        salesforce_options={"bulk_job_seconds": 0.0, "poll_timeout": 5.0},
        amplitude_options={"limits": IdentifyLimits(blocked_group_values=blocked)},
    ) as started:
        yield started


@pytest.fixture
async def org(stack: SandboxStack) -> AsyncIterator[Org]:
    handle = Org(stack)
    yield handle
    await handle.close()


@pytest.fixture
def mapping_file(tmp_path: Path) -> Path:
    """Account -> account (by Id, on_delete mark) and account_ext (by External_Id__c)."""
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(MAPPING))
    return path


class _Stderr:
    """Whatever ``sys.stderr`` is at write time."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture
def sfamp(kafka: KafkaSettings, stack: SandboxStack, mapping_file: Path) -> Cli:
    """``await sfamp("dlq", "replay", "--all")`` against the test's topics and both sandboxes."""

    async def run(*args: str, env: dict[str, str] | None = None) -> Result:
        # A service the test runs in this process logs with structlog's defaults, to
        # stdout, which the runner swaps for the whole process: a line it logged while
        # the command ran would land in the command's --json output. To stderr instead.
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=_Stderr()))  # type: ignore[arg-type]
        runner = CliRunner()
        full = (
            environment(kafka)
            | stack.environment(kafka.topic_prefix)
            | {"SFAMP_MAPPING_FILE": str(mapping_file)}
            | (env or {})
        )
        return await asyncio.to_thread(runner.invoke, cli_app, list(args), env=full)

    return run


async def produce(kafka: KafkaSettings, records: Sequence[Record]) -> None:
    async with ChangeProducer(kafka) as producer:
        await producer.send_all(records)


async def commit(kafka: KafkaSettings, offsets: dict[TopicPartition, int]) -> None:
    """Commit offsets for the deliver group without joining it (assign + commit)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=kafka.consumer_group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


def change(
    record_id: str, commit_ts: int, *, replay_id: int = 1, field: str = "Industry"
) -> ChangeEnvelope:
    return ChangeEnvelope(
        object="Account",
        record_id=record_id,
        op="update",
        commit_ts=commit_ts,
        channel="/data/AccountChangeEvent",
        replay_id=replay_id,
        changed=(field,),
        fields={field: f"value-{replay_id}"},
    )
