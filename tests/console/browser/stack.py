"""``sfamp console`` (and, when a test needs it, ``sfamp run``) as real processes.

Both run against the sandboxes served from the tests' own event loop and a topic
prefix of their own, so every wait here is asynchronous: a blocking wait would stop
the sandboxes the console is asking.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.sandbox_stack import SandboxStack
from tests.console.conftest import console_process
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

    def start_service(self, mapping: dict[str, Any] | None = None) -> ServiceProcess:
        """``sfamp run``, from ``mapping`` as a file or else the published mapping; the
        console's Status page reads its health port."""
        if mapping is not None:
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
async def console_stack(
    kafka_bootstrap: str,
    workdir: Path,
    *,
    topic_prefix: str = "",
    console_env: Mapping[str, str] | None = None,
    **ports: int,
) -> AsyncIterator[ConsoleStack]:
    """Sandboxes (on free ports unless ``salesforce_port``/``amplitude_port`` say), a topic
    prefix with nothing published (a fresh one unless given) and ``sfamp console`` on them,
    with ``console_env`` added to its environment (such as ``SFAMP_CONSOLE__TOKEN``).

    The service is prepared, not started: its health port is known up front so that
    the console's Status page (``SFAMP_CONSOLE__SERVICE_URL``) points at it.
    """
    async with SandboxStack(
        kafka_bootstrap=kafka_bootstrap, salesforce_options={"poll_timeout": 5.0}, **ports
    ) as sandboxes:
        env = sfamp_environment(sandboxes, topic_prefix or f"c{uuid.uuid4().hex[:10]}")
        service = ServiceProcess(env, workdir, "all", "service")
        env["SFAMP_CONSOLE__SERVICE_URL"] = f"http://127.0.0.1:{service.port}"
        stack = ConsoleStack(sandboxes, env, workdir, service)
        try:
            async with console_process({**env, **(console_env or {})}, workdir) as (url, _):
                stack.url = url
                yield stack
        finally:
            await service.terminate()
