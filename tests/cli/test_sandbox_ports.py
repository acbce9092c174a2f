"""A port someone else holds is one line naming the port and what changes it, never a traceback.

Each case runs the real CLI in a child process while a test socket listens on the port.
"""

from __future__ import annotations

import errno
import socket
import subprocess
import sys

import pytest

from pipeline.errors import ListenError
from pipeline.runtime.health import serve_health
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.state import ServiceState
from tests.cli.sandbox_process import ROOT, cli_env, held_port, port_free, sfamp
from tests.support.ports import unused_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

# (arguments with {port} for the held port, the option or setting the message must name)
CASES = {
    "sandbox salesforce": (["sandbox", "salesforce", "--port", "{port}"], "--port"),
    "sandbox amplitude": (["sandbox", "amplitude", "--port", "{port}"], "--port"),
    "sandbox kafka": (["sandbox", "kafka", "--port", "{port}"], "--port"),
    "sandbox up: Kafka": (["sandbox", "up", "--kafka-port", "{port}"], "--kafka-port"),
    "sandbox up: Salesforce": (
        ["sandbox", "up", "--kafka-port", "{free}", "--salesforce-port", "{port}"],
        "--salesforce-port",
    ),
    "sandbox up: Amplitude": (
        [
            *["sandbox", "up", "--kafka-port", "{free}", "--salesforce-port", "{free2}"],
            *["--amplitude-port", "{port}"],
        ],
        "--amplitude-port",
    ),
    "demo": (["demo", "--salesforce-port", "{port}"], "--salesforce-port"),
}


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return _completed(sfamp(*args), env, timeout=50)


def _run_module(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m module args``: a sandbox served on its own."""
    return _completed([sys.executable, "-m", module, *args], {}, timeout=30)


def _completed(
    command: list[str], env: dict[str, str], *, timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=ROOT,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _assert_one_line(done: subprocess.CompletedProcess[str], port: int, change: str) -> None:
    output = done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, output
    assert "Traceback" not in output, output
    assert len(errors) == 1, output
    assert f":{port} " in errors[0], errors[0]
    assert "already in use" in errors[0], errors[0]
    assert change in errors[0], errors[0]


@pytest.mark.parametrize("case", CASES)
def test_a_taken_port_is_one_line_naming_its_option(case: str) -> None:
    template, change = CASES[case]
    free, free2 = unused_port(), unused_port()
    with held_port() as port:
        values = {"port": port, "free": free, "free2": free2}
        done = _run([arg.format(**values) for arg in template])
    _assert_one_line(done, port, change)
    # Whatever started before the refused listener was stopped with the command.
    assert port_free(free), "the embedded broker outlived the refused start"
    assert port_free(free2)


def test_a_taken_health_port_stops_run_before_it_starts() -> None:
    with held_port("0.0.0.0") as port:
        done = _run(["run"], SFAMP_RUNTIME__HEALTH_PORT=str(port))
    _assert_one_line(done, port, "SFAMP_RUNTIME__HEALTH_PORT")


@pytest.mark.parametrize("module", ["sfamp_sandbox.salesforce", "sfamp_sandbox.amplitude"])
def test_the_sandbox_modules_say_so_in_one_line(module: str) -> None:
    with held_port() as port:
        done = _run_module(module, "--port", str(port))
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: address already in use; choose another --port"
    ]


async def test_a_health_port_taken_after_the_check_is_still_a_listen_error() -> None:
    with (
        held_port("127.0.0.1") as port,
        pytest.raises(ListenError, match="SFAMP_RUNTIME__HEALTH_PORT") as raised,
    ):
        await serve_health(ServiceState(role="all"), Metrics(), "127.0.0.1", port)
    assert raised.value.port == port


# TEST-NET-1 (RFC 5737): never an address of this machine, so binding it fails on the host.
NOT_OURS = "192.0.2.1"


@pytest.mark.parametrize(
    "args",
    [
        ["sandbox", "salesforce", "--host", NOT_OURS, "--port", "{free}"],
        ["sandbox", "up", "--host", NOT_OURS, "--kafka-port", "{free}"],
        # Port 0: the broker's port is picked on that host, which fails the same way.
        ["sandbox", "up", "--host", NOT_OURS, "--kafka-port", "0"],
        ["sandbox", "kafka", "--host", NOT_OURS, "--port", "0"],
    ],
    ids=["sandbox salesforce", "sandbox up", "sandbox up, any port", "sandbox kafka, any port"],
)
def test_a_host_that_is_not_this_machines_names_the_host_option(args: list[str]) -> None:
    done = _run([arg.format(free=unused_port()) for arg in args])
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, done.stdout + done.stderr
    assert len(errors) == 1, done.stderr
    assert f"cannot listen on {NOT_OURS}:" in errors[0]
    assert "cannot assign requested address; choose another address with --host" in errors[0]
    assert "port" not in errors[0].split(";")[1], errors[0]


def test_the_sandbox_modules_name_the_host_when_it_is_the_problem() -> None:
    done = _run_module("sfamp_sandbox.amplitude", "--host", NOT_OURS, "--port", "0")
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: cannot listen on {NOT_OURS}:0: cannot assign requested address; "
        "choose another --host"
    ]


@pytest.mark.parametrize(
    ("cause", "says"),
    [
        (OSError(errno.EADDRINUSE, "in use"), "address already in use; --port"),
        (OSError(errno.EACCES, "denied"), "permission denied; --port"),
        (OSError(errno.EADDRNOTAVAIL, "no"), "cannot assign requested address; --host"),
        (socket.gaierror(socket.EAI_NONAME, "x"), "the host name does not resolve; --host"),
    ],
)
def test_the_message_blames_the_port_or_the_host_by_errno(cause: OSError, says: str) -> None:
    error = ListenError("web console", "h", 1, cause, "--port", change_host="--host")
    assert str(error) == f"cannot listen on h:1 for the web console: {says}"
