"""``--latency-ms`` reaches the sandboxes from every way of starting them: ``sfamp sandbox
salesforce|amplitude|up`` and ``python -m sfamp_sandbox.salesforce|amplitude``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.cli.sandbox_process import ROOT, CliProcess, cli_env, wait_for
from tests.support.ports import unused_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _latency(port: int) -> int | None:
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/__sandbox/latency", timeout=1)
    except httpx.HTTPError:
        return None
    ms: int = answer.json()["ms"]
    return ms


@pytest.mark.parametrize(
    ("command", "ready"),
    [
        (["sandbox", "salesforce"], "Salesforce sandbox on"),
        (["sandbox", "amplitude"], "Amplitude sandbox on"),
    ],
)
def test_sfamp_sandbox_takes_latency_ms(command: list[str], ready: str, tmp_path: Path) -> None:
    port = unused_port()
    process = CliProcess([*command, "--port", str(port), "--latency-ms", "70"], tmp_path)
    try:
        process.wait_for_output(ready)
        assert _latency(port) == 70
    finally:
        assert process.stop() == 0, process.output


def test_sandbox_up_gives_both_sandboxes_the_latency(tmp_path: Path) -> None:
    kafka, salesforce, amplitude = unused_port(), unused_port(), unused_port()
    ports = ["--kafka-port", str(kafka), "--salesforce-port", str(salesforce)]
    ports += ["--amplitude-port", str(amplitude)]
    up = CliProcess(["sandbox", "up", *ports, "--latency-ms", "60"], tmp_path)
    try:
        up.wait_for_output("SFAMP_RUNTIME__HEALTH_PORT=")
        assert (_latency(salesforce), _latency(amplitude)) == (60, 60)
    finally:
        assert up.stop() == 0, up.output


@pytest.mark.parametrize("sandbox", ["salesforce", "amplitude"])
def test_python_m_sandbox_takes_latency_ms(sandbox: str) -> None:
    port = unused_port()
    module = f"sfamp_sandbox.{sandbox}"
    args = [sys.executable, "-m", module, "--port", str(port), "--latency-ms", "90"]
    process = subprocess.Popen(args, cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _latency(port) is not None, timeout=60, what=f"{module} to listen")
        assert _latency(port) == 90
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)  # waits, and closes its stdout
    name = sandbox.capitalize()  # where it listens, once it does
    assert out.splitlines()[0] == f"{name} sandbox on http://127.0.0.1:{port} (Ctrl-C to stop)"


def test_a_negative_latency_is_refused_before_anything_starts() -> None:
    for args in (
        [sys.executable, "-m", "pipeline", "sandbox", "salesforce", "--latency-ms", "-1"],
        [sys.executable, "-m", "sfamp_sandbox.amplitude", "--latency-ms", "-1"],
    ):
        done = subprocess.run(
            args, cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert "--latency-ms" in done.stderr
