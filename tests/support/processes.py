"""sfamp commands as real child processes, for tests that kill and restart them."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.runtime.conftest import wait_until
from tests.support.ports import unused_port


class ServiceProcess:
    """One ``python -m pipeline run`` child with its own health port and log file."""

    def __init__(self, env: dict[str, str], workdir: Path, role: str, name: str) -> None:
        self.port = unused_port()
        self.env = {**env, "SFAMP_RUNTIME__HEALTH_PORT": str(self.port)}
        self.workdir = workdir
        self.role = role
        self.log = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "run", "--role", self.role],
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    async def ready(self) -> None:
        async def answers() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"service exited: {self.log.read_text()[-3000:]}")
            try:
                async with httpx.AsyncClient(timeout=1) as http:
                    response = await http.get(f"http://127.0.0.1:{self.port}/readyz")
            except httpx.HTTPError:
                return False
            return response.status_code == 200

        await wait_until(answers, timeout=60, what=f"{self.role} to be ready")

    async def status(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=2) as http:
            response = await http.get(f"http://127.0.0.1:{self.port}/status")
        return dict(response.json())

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    async def terminate(self) -> int:
        """SIGTERM, then wait without blocking the loop that serves the sandboxes."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        for _ in range(300):
            code = self.process.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.1)
        self.process.kill()
        raise AssertionError(f"{self.role} ignored SIGTERM: {self.log.read_text()[-2000:]}")


class BackfillProcess:
    """One ``python -m pipeline backfill`` child, its output in a log file."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str, args: list[str]) -> None:
        self.env = env
        self.workdir = workdir
        self.args = args
        self.log = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> BackfillProcess:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "backfill", *self.args],
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    async def finished(self, timeout: float = 120.0) -> int:
        """The exit code, waited for without blocking the loop that serves the sandboxes."""
        assert self.process is not None
        process = self.process
        await wait_until(
            lambda: process.poll() is not None, timeout=timeout, what=f"{self.log.name} to end"
        )
        return int(process.returncode)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
