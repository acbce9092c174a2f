"""The embedded broker stops with the command that started it: on SIGTERM, on SIGINT, and
when that command is killed outright (no orphaned broker holding the port); a broker that
dies ends its command with one line."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from tests.cli.sandbox_process import CliProcess, pid_gone, port_free, wait_for
from tests.support.ports import unused_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(90),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGKILL]


def _start(command: str, kafka_port: int, workdir: Path) -> CliProcess:
    if command == "kafka":
        args = ["sandbox", "kafka", "--port", str(kafka_port)]
    else:
        args = ["sandbox", "up", "--kafka-port", str(kafka_port)]
        args += ["--salesforce-port", str(unused_port()), "--amplitude-port", str(unused_port())]
    started = CliProcess(args, workdir)
    started.wait_for_output(f"SFAMP_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:{kafka_port}")
    return started


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("command", ["kafka", "up"])
def test_the_broker_stops_with_its_command(
    command: str, sig: signal.Signals, tmp_path: Path
) -> None:
    kafka_port = unused_port()
    started = _start(command, kafka_port, tmp_path)
    broker = started.broker_pid()
    assert not port_free(kafka_port)

    code = started.stop(sig)

    if sig is not signal.SIGKILL:  # a clean stop: exit 0, "stopped", no traceback
        assert code == 0, started.output
        assert "stopped" in started.stdout
        assert "Traceback" not in started.output
    wait_for(lambda: pid_gone(broker), timeout=15, what=f"the broker to stop after {sig.name}")
    wait_for(lambda: port_free(kafka_port), timeout=15, what=f"port {kafka_port} to be free")


@pytest.mark.parametrize("command", ["kafka", "up"])
def test_a_broker_that_dies_ends_its_command_with_one_line(command: str, tmp_path: Path) -> None:
    kafka_port = unused_port()
    started = _start(command, kafka_port, tmp_path)
    os.kill(started.broker_pid(), signal.SIGKILL)

    code = started.process.wait(30)

    errors = [line for line in started.stderr_path.read_text().splitlines() if line.strip()]
    assert code == 1, started.output
    assert errors == ["error: the embedded broker exited on its own (exit code -9)"], started.output
