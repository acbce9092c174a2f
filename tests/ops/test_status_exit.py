"""`sfamp status` exits non-zero when a dependency refuses, 0 on a healthy fresh cluster."""

from __future__ import annotations

import json

import pytest

from pipeline.config.settings import KafkaSettings
from tests.ops.conftest import Cli
from tests.support.ports import closed_port_url

pytestmark = pytest.mark.integration


async def test_a_refused_salesforce_login_fails_the_status(
    kafka: KafkaSettings, sfamp: Cli
) -> None:
    result = await sfamp("status", "--json", env={"SFAMP_SALESFORCE__PASSWORD": "wrong"})
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert "invalid_grant" in report["salesforce"]["error"]
    assert "error" not in report["kafka"]  # the rest is still reported

    table = await sfamp("status", env={"SFAMP_SALESFORCE__PASSWORD": "wrong"})
    assert table.exit_code == 1
    assert "invalid_grant" in table.stdout


async def test_missing_salesforce_credentials_are_named(kafka: KafkaSettings, sfamp: Cli) -> None:
    result = await sfamp("status", "--json", env={"SFAMP_SALESFORCE__PASSWORD": ""})
    assert result.exit_code == 1, result.output
    error = json.loads(result.stdout)["salesforce"]["error"]
    assert error == "Salesforce credentials are not configured: set SFAMP_SALESFORCE__PASSWORD"


async def test_a_fresh_cluster_with_a_working_org_is_healthy(
    kafka: KafkaSettings, sfamp: Cli
) -> None:
    result = await sfamp("status", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kafka"]["dlq_pending"] == 0
    assert report["kafka"]["replay"] == []
    assert report["salesforce"]["user_email"] == "admin@sandbox.example"
    table = await sfamp("status")
    assert table.exit_code == 0, table.output
    # Nothing waits: no age of an "oldest unflushed change" that does not exist.
    [lag] = [line for line in table.stdout.splitlines() if "│ Lag " in line]
    assert lag.split("│")[2].strip() == "0 messages", lag


async def test_unreachable_salesforce_and_service_say_why_in_words(cli: Cli) -> None:
    login_url, service_url = closed_port_url(), closed_port_url()
    credentials = {
        "SFAMP_SALESFORCE__LOGIN_URL": login_url,
        "SFAMP_SALESFORCE__AUTH_FLOW": "password",
        "SFAMP_SALESFORCE__CLIENT_ID": "client",
        "SFAMP_SALESFORCE__CLIENT_SECRET": "secret",
        "SFAMP_SALESFORCE__USERNAME": "user@example.com",
        "SFAMP_SALESFORCE__PASSWORD": "password",
    }
    result = await cli("status", "--json", "--service-url", service_url, env=credentials)
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    # The reason, on one line, instead of the httpx class ("ConnectError").
    assert report["salesforce"]["error"] == (
        f"cannot reach Salesforce login at {login_url}/services/oauth2/token: connection refused"
    )
    assert report["service"]["error"] == (
        f"no service answers at {service_url} (connection refused)"
    )


async def test_a_health_endpoint_turned_off_is_named_not_asked(
    kafka: KafkaSettings, sfamp: Cli
) -> None:
    """Port 0 turns the endpoint off: there is no service to ask at "127.0.0.1:0"."""
    off = {"SFAMP_RUNTIME__HEALTH_PORT": "0"}
    result = await sfamp("status", "--json", env=off)
    assert result.exit_code == 0, result.output  # no service answering is no failure
    service = json.loads(result.stdout)["service"]
    assert service["url"] is None
    assert service["error"].startswith("not asked: SFAMP_RUNTIME__HEALTH_PORT=0 turns"), service
    table = await sfamp("status", env={**off, "COLUMNS": "200"})
    assert "127.0.0.1:0" not in table.stdout, table.stdout
    assert "--service-url" in table.stdout, table.stdout
