"""``sfamp sandbox up`` prints one export block that, as a shell reads it, points every sfamp
command at the stack: ``sfamp run`` starts and becomes ready, ``config verify`` passes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.cli.sandbox_process import ROOT, CliProcess, cli_env, run_sfamp, wait_for
from tests.support.ports import unused_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

EXPECTED = {
    "SFAMP_SALESFORCE__LOGIN_URL",
    "SFAMP_SALESFORCE__AUTH_FLOW",
    "SFAMP_SALESFORCE__CLIENT_ID",
    "SFAMP_SALESFORCE__CLIENT_SECRET",
    "SFAMP_SALESFORCE__USERNAME",
    "SFAMP_SALESFORCE__PASSWORD",
    "SFAMP_KAFKA__BOOTSTRAP_SERVERS",
    "SFAMP_KAFKA__TOPIC_PREFIX",
    "SFAMP_AMPLITUDE__API_KEY",
    "SFAMP_AMPLITUDE__SECRET_KEY",
    "SFAMP_AMPLITUDE__BASE_URL",
    "SFAMP_KAFKA__CONSUMER_SESSION_TIMEOUT_SECONDS",
    "SFAMP_RUNTIME__HEALTH_PORT",
}
MAPPING = str(ROOT / "examples" / "mapping.json")


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_printed_exports_make_sfamp_run_work(tmp_path: Path) -> None:
    kafka, salesforce = unused_port(), unused_port()
    ports = ["--kafka-port", str(kafka), "--salesforce-port", str(salesforce)]
    ports += ["--amplitude-port", "0"]  # any free port: the exports name the one taken
    up = CliProcess(["sandbox", "up", "--seed", "5", *ports], tmp_path)
    (tmp_path / "run").mkdir()
    run: CliProcess | None = None
    try:
        up.wait_for_output("SFAMP_RUNTIME__HEALTH_PORT=")
        exports = up.exports()
        assert set(exports) == EXPECTED, up.stdout
        assert "seeded 5 Accounts in the Salesforce sandbox\n" in up.stdout, up.stdout
        assert exports["SFAMP_KAFKA__BOOTSTRAP_SERVERS"] == f"127.0.0.1:{kafka}"
        assert exports["SFAMP_SALESFORCE__LOGIN_URL"] == f"http://127.0.0.1:{salesforce}"
        amplitude = exports["SFAMP_AMPLITUDE__BASE_URL"].removeprefix("http://127.0.0.1:")
        assert amplitude.isdigit(), exports
        assert int(amplitude) not in (0, 8420), exports
        env = cli_env(**exports)

        verified = run_sfamp("config", "verify", MAPPING, env=env)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "verified:" in verified.stdout, verified.stdout

        # The ingest role is ready once logged in, subscribed and writing to Kafka.
        run = CliProcess(["run", "--role", "ingest", "--mapping", MAPPING], tmp_path / "run", env)
        health = int(exports["SFAMP_RUNTIME__HEALTH_PORT"])
        wait_for(lambda: _alive(run) and _ready(health), timeout=60, what="sfamp run ready")
        assert run.stop() == 0, run.output
    finally:
        if run is not None:
            run.stop()
        assert up.stop() == 0, up.output


def _alive(process: CliProcess) -> bool:
    if process.process.poll() is not None:
        raise AssertionError(f"sfamp run exited: {process.output[-3000:]}")
    return True


def test_a_negative_seed_is_refused() -> None:
    refused = run_sfamp("sandbox", "up", "--seed", "-5")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "--seed" in refused.stderr, refused.stderr


def test_port_options_default_to_the_documented_ports() -> None:
    shown = run_sfamp("sandbox", "up", "--help").stdout
    for option, default in (("--kafka-port", 19092), ("--salesforce-port", 8410)):
        assert option in shown
        assert "(0: any free port)" in shown
        assert f"[default: {default}]" in shown


def test_the_salesforce_sandbox_alone_prints_a_login_that_works(tmp_path: Path) -> None:
    port = unused_port()
    alone = CliProcess(["sandbox", "salesforce", "--port", str(port)], tmp_path)
    try:
        alone.wait_for_output("SFAMP_SALESFORCE__PASSWORD=")
        exports = alone.exports()
        assert set(exports) == {name for name in EXPECTED if "SALESFORCE" in name}, alone.stdout
        # Amplitude is not there (a closed port) to verify against: only the login matters.
        amplitude = {
            "SFAMP_AMPLITUDE__API_KEY": "sandbox-api-key",
            "SFAMP_AMPLITUDE__BASE_URL": "http://127.0.0.1:9",
        }
        verified = run_sfamp(
            "config", "verify", MAPPING, "--json", env=cli_env(**exports, **amplitude)
        )
        checks = {check["name"]: check["status"] for check in json.loads(verified.stdout)["checks"]}
        assert checks["Salesforce login"] == "pass", verified.stdout
    finally:
        assert alone.stop() == 0, alone.output


def test_a_sandbox_on_every_interface_prints_a_url_that_answers(tmp_path: Path) -> None:
    """``--host 0.0.0.0`` (as in a container) is printed as loopback, which every platform
    dials, not as the wildcard."""
    port = unused_port()
    alone = CliProcess(["sandbox", "amplitude", "--host", "0.0.0.0", "--port", str(port)], tmp_path)
    try:
        alone.wait_for_output("SFAMP_AMPLITUDE__SECRET_KEY=")
        exports = alone.exports()
        # As `sandbox up` exports them: the secret key lets `config verify` check the pair.
        assert set(exports) == {name for name in EXPECTED if "AMPLITUDE" in name}, alone.stdout
        url = exports["SFAMP_AMPLITUDE__BASE_URL"]
        assert url == f"http://127.0.0.1:{port}", alone.stdout
        assert f"Amplitude sandbox on {url} " in alone.stdout, alone.stdout
        assert httpx.get(f"{url}/__sandbox/groups", timeout=5).status_code == 200
    finally:
        assert alone.stop() == 0, alone.output


def test_the_broker_alone_exports_what_sandbox_up_exports_for_kafka(tmp_path: Path) -> None:
    """The session timeout too: without it a deliver joins the embedded broker in about
    15 s instead of 3."""
    port = unused_port()
    alone = CliProcess(["sandbox", "kafka", "--port", str(port)], tmp_path)
    try:
        alone.wait_for_output("SFAMP_KAFKA__CONSUMER_SESSION_TIMEOUT_SECONDS=")
        assert alone.exports() == {
            "SFAMP_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "SFAMP_KAFKA__CONSUMER_SESSION_TIMEOUT_SECONDS": "6",
        }, alone.stdout
    finally:
        assert alone.stop() == 0, alone.output
