"""Library logs go through structlog, rate-limited; a Kafka outage does not flood the log stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipeline.logs import LibraryLogFilter
from pipeline.sandbox_stack import SandboxStack
from sfamp_sandbox.kafka import EmbeddedKafka
from tests.support.ports import unused_port

ROOT = Path(__file__).resolve().parents[2]
OUTAGE_SECONDS = 4.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_one_line_per_logger_and_message_per_window_with_the_count_dropped() -> None:
    clock = Clock()
    limit = LibraryLogFilter(60.0, clock=clock)
    template = 'Unable connect to "%s": %s'
    passed = [
        limit.filter(record("aiokafka.conn", template, f"h:{n}", "refused")) for n in range(50)
    ]
    assert passed == [True] + [False] * 49
    assert limit.filter(record("aiokafka.conn", "Another message %s", 1))  # its own window
    assert limit.filter(record("aiocometd", template, "h", "x"))  # another logger
    clock.now += 60.0
    later = record("aiokafka.conn", template, "h:51", "refused")
    assert limit.filter(later)
    assert later.suppressed == 49  # type: ignore[attr-defined]


def test_expected_conditions_reported_by_sfamp_itself_are_dropped() -> None:
    limit = LibraryLogFilter(60.0)
    refused = record(
        "aiokafka.producer.sender",
        "Unexpected error during InitProducerIdRequest: %s",
        "<class 'aiokafka.errors.UnknownError'>",
    )
    assert not limit.filter(refused)


@contextlib.asynccontextmanager
async def service_process(
    env: dict[str, str], *args: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()  # how it stops is not what this looks at
            await process.wait()


async def lines_until(stream: asyncio.StreamReader, event: str, timeout: float) -> list[str]:
    lines: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            line = (await stream.readline()).decode()
            assert line, f"the service ended before logging {event}:\n{''.join(lines)}"
            lines.append(line)
            if f'"event": "{event}"' in line:
                return lines


async def lines_for(stream: asyncio.StreamReader, seconds: float) -> list[str]:
    """Every line the service logs during ``seconds`` of an outage (a count over time)."""
    lines: list[str] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while line := (await stream.readline()).decode():
                lines.append(line)
    return lines


@pytest.mark.integration
async def test_a_kafka_outage_logs_json_lines_a_few_times_not_per_retry(
    tmp_path: Path, topic_prefix: str
) -> None:
    mapping = tmp_path / "mapping.json"
    mapping.write_text(
        json.dumps(
            {
                "version": 1,
                "sync_cadence": {"mode": "interval", "every_seconds": 1},
                "mappings": [
                    {
                        "sfdc_object": "Account",
                        "group_type": "account",
                        "group_name_field": "Id",
                        "group_properties": [{"sfdc_field": "Name", "amplitude_property": "name"}],
                    }
                ],
            }
        )
    )
    broker = await EmbeddedKafka(unused_port()).start()
    try:
        async with SandboxStack(kafka_bootstrap=broker.bootstrap_servers) as stack:
            env = {k: v for k, v in os.environ.items() if not k.startswith("SFAMP_")}
            env |= stack.environment(topic_prefix) | {
                "PYTHONPATH": str(ROOT),
                "SFAMP_RUNTIME__LOG_FORMAT": "json",
                "SFAMP_RUNTIME__HEALTH_PORT": str(unused_port()),
            }
            async with service_process(env, "run", "--role", "ingest", "-m", str(mapping)) as proc:
                assert proc.stderr is not None
                await lines_until(proc.stderr, "ingest_subscribed", timeout=60)
                broker.stop()
                during = await lines_for(proc.stderr, OUTAGE_SECONDS)
                assert proc.returncode is None, "".join(during)
    finally:
        broker.stop()
    logged = [json.loads(line) for line in during]  # every line is JSON, library ones too
    library = [e for e in logged if "logger" in e]
    assert library, "the outage left no trace at all"
    assert len(logged) <= 30, "\n".join(during)
    repeats = [e["event"] for e in library if library.count(e) > 1]
    assert not repeats, repeats


def test_a_library_warning_is_a_json_log_line() -> None:
    # As aiocometd's "coroutine ... was never awaited" after an expired session.
    script = (
        "import warnings\n"
        "from pipeline.logs import configure_logging\n"
        "configure_logging('json')\n"
        "warnings.warn('coroutine was never awaited', RuntimeWarning, stacklevel=1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    entry = json.loads(lines[0])
    assert entry["logger"] == "py.warnings"
    assert entry["level"] == "warning"
    assert "RuntimeWarning: coroutine was never awaited" in entry["event"]
