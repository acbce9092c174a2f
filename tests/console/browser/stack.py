"""``sfamp console`` (and, when a test needs it, ``sfamp run``) as real processes.

Both run against the sandboxes served from the tests' own event loop and a topic
prefix of their own, so every wait here is asynchronous: a blocking wait would stop
the sandboxes the console is asking.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pipeline.sandbox_stack import SandboxStack
from sfamp_sandbox.kafka import free_port
from tests.runtime.conftest import wait_until
from tests.support.processes import ServiceProcess

ROOT = Path(__file__).resolve().parents[3]

# Quick joins and drains on the embedded broker, as the other process tests use.
FAST = {
    "SFAMP_KAFKA__PARTITIONS": "1",
    "SFAMP_KAFKA__CONSUMER_SESSION_TIMEOUT_SECONDS": "3",
    "SFAMP_KAFKA__METADATA_MAX_AGE_SECONDS": "2",
    "SFAMP_AMPLITUDE__RETRY_DEADLINE_SECONDS": "3",
    "SFAMP_AMPLITUDE__TIMEOUT_SECONDS": "2",
    "SFAMP_RUNTIME__DRAIN_TIMEOUT_SECONDS": "5",
    "SFAMP_RUNTIME__LOG_FORMAT": "json",
}


@dataclass
class ConsoleStack:
    """The sandboxes, the environment every sfamp process of a module shares, the console."""

    sandboxes: SandboxStack
    env: dict[str, str]
    workdir: Path
    service: ServiceProcess
    url: str = ""

    @property
    def topic_prefix(self) -> str:
        return self.env["SFAMP_KAFKA__TOPIC_PREFIX"]

    @property
    def amplitude_url(self) -> str:
        assert self.sandboxes.amplitude is not None
        return self.sandboxes.amplitude.base_url

    @property
    def salesforce_url(self) -> str:
        assert self.sandboxes.salesforce is not None
        return self.sandboxes.salesforce.base_url

    def start_service(self, mapping: dict[str, Any]) -> ServiceProcess:
        """``sfamp run`` from ``mapping`` as a file; the console's Status page reads it."""
        path = self.workdir / "service-mapping.json"
        path.write_text(json.dumps(mapping))
        self.service.env["SFAMP_MAPPING_FILE"] = str(path)
        return self.service.start()


def sfamp_environment(sandboxes: SandboxStack, topic_prefix: str) -> dict[str, str]:
    """The machine's environment without its SFAMP_* settings, pointed at the sandboxes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFAMP_")}
    env.update(sandboxes.environment(topic_prefix))
    env.update(FAST)
    env.update({"PYTHONPATH": str(ROOT), "COLUMNS": "200"})
    return env


@contextlib.asynccontextmanager
async def console_stack(kafka_bootstrap: str, workdir: Path) -> AsyncIterator[ConsoleStack]:
    """Sandboxes, a fresh topic prefix (nothing published) and ``sfamp console`` on them.

    The service is prepared, not started: its health port is known up front so that
    the console's Status page (``SFAMP_CONSOLE__SERVICE_URL``) points at it.
    """
    async with SandboxStack(
        kafka_bootstrap=kafka_bootstrap, salesforce_options={"poll_timeout": 5.0}
    ) as sandboxes:
        env = sfamp_environment(sandboxes, f"c{uuid.uuid4().hex[:10]}")
        service = ServiceProcess(env, workdir, "all", "service")
        env["SFAMP_CONSOLE__SERVICE_URL"] = f"http://127.0.0.1:{service.port}"
        stack = ConsoleStack(sandboxes, env, workdir, service)
        try:
            async with console_process(env, workdir) as url:
                stack.url = url
                yield stack
        finally:
            await service.terminate()


@contextlib.asynccontextmanager
async def console_process(env: dict[str, str], workdir: Path) -> AsyncIterator[str]:
    """``python -m pipeline console --port <free>``; yields its URL once ``GET /`` answers."""
    port = free_port()
    log = workdir / "console.log"
    process = spawn(["console", "--port", str(port)], env, log)
    url = f"http://127.0.0.1:{port}"

    async def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"sfamp console exited: {log.read_text()[-3000:]}")
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                return (await http.get(url + "/")).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        await wait_until(answers, timeout=60, what="sfamp console to answer GET /")
        yield url
    finally:
        await stopped(process, log)


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m pipeline ARGS`` in the background, its output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args],
            cwd=log.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def stopped(process: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM, waited for without blocking the loop that serves the sandboxes."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        await wait_until(lambda: process.poll() is not None, timeout=15, what="console to stop")
    except AssertionError:
        process.kill()
        process.wait(5)
        raise AssertionError(f"sfamp console ignored SIGTERM: {log.read_text()[-2000:]}") from None
