"""Shared fixtures: a Kafka broker for the whole session, chosen in this order:

1. ``SFAMP_TEST_KAFKA_BOOTSTRAP`` if set (an existing cluster);
2. a testcontainers Kafka if a Docker engine answers (checked quickly);
3. the embedded ``tansu`` broker on a free port (memory only).
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator

import pytest
import structlog

from sfamp_sandbox.kafka import EmbeddedKafka
from tests.support.ports import unused_port

# Under pytest-xdist a worker starts with ``COLUMNS=80`` in its environment, and a rich
# Console created at import would keep that width for good; the tests that run the CLI in
# process set ``COLUMNS`` per call, as a terminal would, so a worker starts without it.
# Done on import, not in pytest_configure: a conftest named on the command line (say
# tests/ops/conftest.py, which imports the CLI) is imported before any configure hook,
# and this one, its parent, before it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop("COLUMNS", None)


def docker_engine_answers() -> bool:
    """True only when a Docker engine answers /_ping within a second (the client alone is not
    enough). Probed over the socket directly so a missing engine costs no time and no warnings."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True  # a remote engine: let testcontainers try it
    path = host.removeprefix("unix://")
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(64)
        except OSError:
            return False


@pytest.fixture(scope="session", autouse=True)
def _state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Services and commands started by tests keep their state (the reconcile's
    checkpoint) in a directory of this run, not in ``.sfamp`` of the working copy,
    so that a run left unfinished by one test or an earlier run never resumes in another.
    """
    name = "SFAMP_RUNTIME__STATE_DIR"
    before = os.environ.get(name)
    os.environ[name] = str(tmp_path_factory.mktemp("state"))
    yield
    if before is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = before


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """Every test starts from structlog's defaults.

    A command run in-process configures logging for the whole process (a level filter,
    a renderer); left in place, a later test's ``capture_logs`` would miss its info lines.
    """
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    configured = os.environ.get("SFAMP_TEST_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    if docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as container:
            yield container.get_bootstrap_server()
        return
    with embedded_broker() as bootstrap:
        yield bootstrap


@contextlib.contextmanager
def embedded_broker() -> Iterator[str]:
    """A fresh embedded broker on an unused port, stopped afterwards; yields its bootstrap."""
    broker = EmbeddedKafka(unused_port()).start_sync()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A prefix no other test uses, so tests sharing the broker never see each other's data."""
    return f"t{uuid.uuid4().hex[:10]}"
