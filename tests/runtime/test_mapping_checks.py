"""The service checks its mapping against the org and its topics at start and on every reload."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.errors import (
    MappingError,
    Problem,
    SalesforceAuthError,
    SalesforceError,
    SalesforceUnavailableError,
    TopicConfigError,
)
from pipeline.kafka.admin import TopicSpec, ensure_topics
from pipeline.kafka.config_topic import publish_mapping
from pipeline.runtime.mapping_source import checked
from pipeline.runtime.retry import Backoff
from pipeline.sandbox_stack import SandboxStack
from tests.runtime.conftest import MAPPING, Org, group, running, settings_for, wait_until


def misspelt() -> dict[str, Any]:
    doc = copy.deepcopy(MAPPING)
    doc["mappings"][0]["group_properties"][1]["sfdc_field"] = "Industy"
    doc["mappings"][1]["sfdc_object"] = "Acount"
    return doc


async def topics(settings: Settings) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


@pytest.mark.integration
async def test_a_misspelt_object_or_field_refuses_the_start(
    stack: SandboxStack, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(misspelt()))
    with pytest.raises(MappingError) as info:
        async with running(settings, path, ready_within=30):
            pass
    problems = [str(p) for p in info.value.problems]
    assert "Acount: object: no object Acount in this org (did you mean Account?)" in problems
    assert any(
        p.startswith("Account.Industy -> industry: no field Industy on Account (did you mean")
        for p in problems
    ), problems
    assert f"{topic_prefix}.changes.Acount" not in await topics(settings)


@pytest.mark.integration
async def test_a_restart_runs_the_file_when_the_newer_published_mapping_is_refused(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    """A running service refuses a published revision the org does not match and keeps
    its file; restarted, it must not refuse to start over that revision (a crash loop)."""
    settings = settings_for(stack, topic_prefix)
    typo = copy.deepcopy(MAPPING)
    typo["mappings"][0]["group_properties"][1]["sfdc_field"] = "Industy"
    newer_ms = int((mapping_file.stat().st_mtime + 60) * 1000)
    published = await publish_mapping(
        settings.kafka, MappingConfig.model_validate(typo), now_ms=newer_ms
    )
    async with running(settings, mapping_file) as service:
        refused = service.state.to_status()["mapping_refused"]
        assert refused["source"] == f"sfamp.config revision {published.revision}"
        assert any("Industy" in problem for problem in refused["problems"]), refused
        assert service.state.mapping_revision == f"file:{mapping_file}"
        account = await org.create("Account", Name="Runs the file", Industry="Energy")
        await wait_until(
            lambda: (group(stack, "account", account) or {}).get("industry") == "Energy",
            what="delivery under the file's mapping",
        )


@pytest.mark.integration
async def test_a_reloaded_mapping_that_fails_the_check_is_refused_and_the_old_one_runs(
    stack: SandboxStack, org: Org, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    async with running(settings, mapping_file) as service:
        before = service.state.mapping_revision
        mapping_file.write_text(json.dumps(misspelt()))
        await wait_until(
            lambda: service.state.mapping_refused is not None, what="the refusal in /status"
        )
        refused = service.state.to_status()["mapping_refused"]
        assert refused["source"] == f"file:{mapping_file}"
        assert refused["reason"].startswith("the mapping does not match the Salesforce org")
        assert any("no object Acount" in p for p in refused["problems"])
        account = await org.create("Account", Name="Still mapped", Industry="Energy")
        await wait_until(
            lambda: (group(stack, "account", account) or {}).get("industry") == "Energy",
            what="delivery under the old mapping",
        )
        assert service.state.mapping_revision == before
        assert service.holder is not None
        assert service.holder.current.objects == ["Account"]


@pytest.mark.integration
async def test_a_changes_topic_that_expires_changes_before_the_flush_refuses_the_start(
    stack: SandboxStack, topic_prefix: str, mapping_file: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    changes = f"{topic_prefix}.changes.Account"
    await ensure_topics(settings.kafka, [TopicSpec(changes, 1, {"retention.ms": "60000"})])
    with pytest.raises(TopicConfigError) as info:
        async with running(settings, mapping_file, ready_within=30):
            pass
    [problem] = info.value.problems
    assert problem.path == changes
    assert "--alter --entity-type topics" in problem.message


@pytest.mark.parametrize(
    "trouble",
    [
        SalesforceUnavailableError("Salesforce answered 503"),
        SalesforceAuthError("Salesforce refused the password login"),
    ],
)
async def test_the_check_is_retried_until_salesforce_answers(trouble: SalesforceError) -> None:
    mapping = MappingConfig.model_validate(MAPPING)
    calls: list[MappingConfig] = []

    async def check(config: MappingConfig) -> list[Problem]:
        calls.append(config)
        if len(calls) < 3:
            raise trouble
        return [Problem("Account.SystemModstamp -> m", "change events never carry it")]

    warnings = await checked(check, mapping, source="test", backoff=Backoff(first=0.001))
    assert len(calls) == 3
    assert [p.path for p in warnings] == ["Account.SystemModstamp -> m"]


async def test_a_refusal_is_not_retried() -> None:
    async def check(config: MappingConfig) -> list[Problem]:
        raise MappingError("the mapping does not match the Salesforce org: 1 problem")

    with pytest.raises(MappingError):
        await checked(check, MappingConfig.model_validate(MAPPING), source="test")
