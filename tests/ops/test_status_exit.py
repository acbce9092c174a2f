"""`sfamp status` exits non-zero when a dependency refuses, 0 on a healthy fresh cluster."""

from __future__ import annotations

import json

import pytest

from pipeline.config.settings import KafkaSettings
from tests.ops.conftest import Cli

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


async def test_a_fresh_cluster_with_a_working_org_is_healthy(
    kafka: KafkaSettings, sfamp: Cli
) -> None:
    result = await sfamp("status", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kafka"]["dlq_pending"] == 0
    assert report["kafka"]["replay"] == []
    assert report["salesforce"]["user_email"] == "admin@sandbox.example"
