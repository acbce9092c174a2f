"""Newest wins on the DLQ path, end to end: service, sandboxes, embedded broker, `sfamp dlq replay`.

A change is dead-lettered, the record changes again and the newer value is
delivered; replaying the DLQ afterwards must leave the newer value in place.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config.settings import KafkaSettings
from pipeline.sandbox_stack import SandboxStack
from sfamp_sandbox.amplitude import AmplitudeSandbox
from tests.ops.conftest import Cli
from tests.runtime.conftest import (
    REJECTED_VALUE,
    Org,
    group,
    read_dlq,
    running,
    settings_for,
    wait_until,
)

pytestmark = pytest.mark.integration


async def accept_every_group(stack: SandboxStack) -> None:
    """Restart the Amplitude sandbox on its port, same stored groups, refusing nothing."""
    old = stack.amplitude
    assert old is not None
    await old.stop()
    stack.amplitude = AmplitudeSandbox(old.host, old.port, state=old.state)
    await stack.amplitude.start()


def tier_of(stack: SandboxStack) -> object:
    properties = group(stack, "account_ext", REJECTED_VALUE) or {}
    return properties.get("tier")


async def test_replay_after_a_newer_delivery_keeps_the_newer_value(
    kafka: KafkaSettings, stack: SandboxStack, org: Org, mapping_file: Path, sfamp: Cli
) -> None:
    settings = settings_for(stack, kafka.topic_prefix)
    async with running(settings, mapping_file):
        record = await org.create(
            "Account", Name="Acme", External_Id__c=REJECTED_VALUE, Tier__c="Starter"
        )

        async def dead_lettered() -> bool:
            return any(e.key == f"account_ext:{REJECTED_VALUE}" for e in await read_dlq(settings))

        await wait_until(dead_lettered, what="the refused account_ext group in the DLQ")
        await accept_every_group(stack)
        await org.update("Account", record, Tier__c="Enterprise")
        await wait_until(
            lambda: tier_of(stack) == "Enterprise", what="the newer tier delivered by the service"
        )

        result = await sfamp("dlq", "replay", "--all", "--json")
        assert result.exit_code == 0, result.output
        (outcome,) = json.loads(result.stdout)
        assert outcome["ok"] is True, outcome

    assert tier_of(stack) == "Enterprise"  # not the dead-lettered "Starter"
    listed = await sfamp("dlq", "list", "--json")
    (row,) = json.loads(listed.stdout)
    assert (row["key"], row["replayed_how"]) == (f"account_ext:{REJECTED_VALUE}", "reread")
