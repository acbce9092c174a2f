"""Fixtures for the console's server-side tests, and ``console_process`` for the browser tests.

The sandboxes run in the test's own event loop: every wait here is asynchronous.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import Result
from typer.testing import CliRunner

from pipeline.cli import app as cli_app
from pipeline.config.settings import Settings
from pipeline.console.app import create_console_app
from pipeline.sandbox_stack import SandboxStack
from tests.runtime.conftest import wait_until
from tests.support.ports import unused_port

ROOT = Path(__file__).resolve().parents[2]
CSRF_META = 'name="csrf-token" content="'


@contextlib.asynccontextmanager
async def console_process(
    env: dict[str, str], workdir: Path | None = None, *args: str
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m pipeline console --port <free>`` with ``env``; yields (URL, process) once
    ``GET /`` answers, and stops it (SIGTERM) at the end. Its output goes to
    ``console.log`` in ``workdir`` (a temporary directory by default)."""
    with contextlib.ExitStack() as stack:
        folder = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        log = folder / "console.log"
        port = unused_port()
        with log.open("ab") as out:
            process = subprocess.Popen(  # noqa: ASYNC220 - starting it does not wait
                [sys.executable, "-m", "pipeline", "console", "--port", str(port), *args],
                cwd=folder,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"

        async def answers() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"sfamp console exited: {log.read_text()[-3000:]}")
            try:
                async with httpx.AsyncClient(timeout=5) as http:
                    # 200, or with a token set 303 to the sign-in page
                    return (await http.get(url + "/")).status_code in (200, 303)
            except httpx.HTTPError:
                return False

        try:
            await wait_until(answers, timeout=60, what=f"sfamp console to answer GET {url}/")
            yield url, process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                await wait_until(
                    lambda: process.poll() is not None, timeout=15, what="the console to stop"
                )
            except AssertionError:
                process.kill()
                process.wait(5)


async def sfamp_in_process(env: dict[str, str], *args: str) -> Result:
    """``sfamp ARGS`` through the CLI's own app, in a thread (the commands call asyncio.run);
    ``env`` holds the SFAMP_* settings, the process's own SFAMP_* variables are hidden."""
    hidden: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SFAMP_")}
    settings = {k: v for k, v in env.items() if k.startswith("SFAMP_")}
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, cli_app, list(args), env=hidden | settings)


def sfamp_env(stack: SandboxStack, topic_prefix: str, **extra: str) -> dict[str, str]:
    """The machine's environment without its SFAMP_* settings, pointed at the sandboxes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFAMP_")}
    env.update(stack.environment(topic_prefix))
    env.update({"PYTHONPATH": str(ROOT), "COLUMNS": "200", **extra})
    return env


@pytest.fixture
async def stack(kafka_bootstrap: str) -> AsyncIterator[SandboxStack]:
    async with SandboxStack(kafka_bootstrap=kafka_bootstrap) as started:
        yield started


@pytest.fixture
def settings(stack: SandboxStack, topic_prefix: str) -> Settings:
    return stack.settings(topic_prefix)


@contextlib.asynccontextmanager
async def console_client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    """The console app in-process behind aiohttp's test client (cookies kept)."""
    async with TestClient(TestServer(create_console_app(settings))) as client:
        yield client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with console_client(settings) as started:
        yield started


async def csrf_of(client: TestClient[Any, Any], path: str = "/mapping") -> str:
    """The CSRF token a page gives this client's session."""
    response = await client.get(path)
    assert response.status == 200, await response.text()
    html = await response.text()
    start = html.index(CSRF_META) + len(CSRF_META)
    return html[start : html.index('"', start)]
