"""One value, whatever the read path, end to end against the sandboxes.

The same Salesforce values reach Amplitude through a CDC create, a CDC update whose group
name is looked up at flush time, a gap re-read (REST), a re-sync, and a backfill through
Bulk API 2.0 CSV. Each leaves one group per record, named and valued the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.config.mapping import MappingConfig
from pipeline.runtime.backfill import ReadOptions, run_backfill
from pipeline.sandbox_stack import SandboxStack
from tests.convergence.oracle import wait_converged
from tests.runtime.conftest import Org, groups, running, settings_for, wait_until

MAPPING: dict[str, Any] = {
    "version": 1,
    "sync_cadence": {"mode": "interval", "every_seconds": 1},
    "mappings": [
        {
            "sfdc_object": "Plan__c",
            "group_type": "plan",
            "group_name_field": "Seats__c",
            "group_properties": [
                {"sfdc_field": "Tier__c", "amplitude_property": "tier"},
                {"sfdc_field": "Trial_Ends__c", "amplitude_property": "trial_ends"},
                {"sfdc_field": "Monthly_Price__c", "amplitude_property": "price"},
                {"sfdc_field": "Active__c", "amplitude_property": "active"},
            ],
        },
        {
            "sfdc_object": "Account",
            "group_type": "account",
            "group_name_field": "Id",
            "group_properties": [
                {"sfdc_field": "Name", "amplitude_property": "name"},
                {"sfdc_field": "Industry", "amplitude_property": "industry"},
            ],
        },
    ],
}


async def _person(org: Org, first: str, last: str) -> str:
    body = {"IsPersonAccount": True, "Salutation": "Dr.", "FirstName": first, "LastName": last}
    response = await org.http.post("/__sandbox/records/Account", json=body)
    assert response.status_code < 300, response.text
    return str(response.json()["id"])


def _values(stack: SandboxStack, group_type: str) -> dict[str, dict[str, Any]]:
    return {value: props for (kind, value), props in groups(stack).items() if kind == group_type}


async def test_a_number_group_name_and_a_person_name_are_the_same_on_every_path(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    mapping_file = tmp_path / "mapping.json"
    mapping_file.write_text(json.dumps(MAPPING))
    assert stack.salesforce is not None
    assert stack.amplitude is not None
    async with running(settings, mapping_file) as service:
        # CDC creates
        plan = await org.create("Plan__c", Name="Team", Seats__c=250, Tier__c="Growth")
        person = await _person(org, "Ada", "Lovelace")
        business = await org.create("Account", Name="Acme Ltd", Industry="Energy")
        await wait_until(lambda: "250" in _values(stack, "plan"), what="the created plan")
        await wait_until(
            lambda: _values(stack, "account").get(person, {}).get("name") == "Ada Lovelace",
            what="the person account's composed name from its CREATE",
        )
        # CDC updates: the plan's group name is looked up at flush time; the person's
        # name changes in one of its parts, so the composed name is read.
        await org.update(
            "Plan__c", plan, Tier__c="Enterprise", Trial_Ends__c="2024-04-26T18:38:05Z"
        )
        await org.update("Account", person, LastName="King")
        await wait_until(
            lambda: _values(stack, "plan").get("250", {}).get("tier") == "Enterprise",
            what="the update named by a flush-time lookup",
        )
        await wait_until(
            lambda: _values(stack, "account").get(person, {}).get("name") == "Ada King",
            what="the person's new name",
        )
        # REST: gap re-reads of both records.
        await org.gap("Plan__c", [plan], "GAP_UPDATE")
        await org.gap("Account", [person, business], "GAP_UPDATE")
        await wait_converged(stack.salesforce, stack.amplitude, MAPPING, timeout=30)
        assert service.ingest is not None
        assert service.ingest.resyncs_done == 0

    # Bulk API 2.0 CSV: a backfill of both objects.
    config = MappingConfig.model_validate(MAPPING)
    summary = await run_backfill(
        settings,
        config,
        checkpoint_path=tmp_path / "checkpoint.json",
        options=ReadOptions(api="bulk"),
    )
    assert summary.error is None, summary.error
    assert summary.bulk_jobs == 2
    await wait_converged(stack.salesforce, stack.amplitude, MAPPING, timeout=10)
    assert list(_values(stack, "plan")) == ["250"], "one group for the plan, whatever the path"
    accounts = _values(stack, "account")
    assert accounts[person]["name"] == "Ada King"
    assert accounts[business] == {"name": "Acme Ltd", "industry": "Energy"}


async def test_a_long_text_is_delivered_cut_to_what_amplitude_keeps(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    described = {
        **MAPPING,
        "mappings": [
            {
                "sfdc_object": "Account",
                "group_type": "account",
                "group_name_field": "Id",
                "group_properties": [
                    {"sfdc_field": "Name", "amplitude_property": "name"},
                    {"sfdc_field": "Description", "amplitude_property": "description"},
                ],
            }
        ],
    }
    mapping_file = tmp_path / "mapping.json"
    mapping_file.write_text(json.dumps(described))
    assert stack.salesforce is not None
    assert stack.amplitude is not None
    async with running(settings, mapping_file) as service:
        text = "é" * 30_000
        account = await org.create("Account", Name="Verbose", Description=text)
        await wait_until(
            lambda: _values(stack, "account").get(account, {}).get("name") == "Verbose",
            what="the account with a long description",
        )
        assert _values(stack, "account")[account]["description"] == text[:1024]
        counter = service.metrics.truncated_values.labels("account", "description")
        # Counted once the flush is done (after its commit), a moment after Amplitude has it.
        await wait_until(lambda: counter._value.get() >= 1, what="the cut value counted")
        assert counter._value.get() == 1
        await wait_converged(stack.salesforce, stack.amplitude, described, timeout=10)


async def test_a_create_into_a_group_a_renamed_record_left_takes_none_of_its_formula(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    """Named by an external id, the old group stays when a record is renamed; a new record
    taking that name must not inherit the old one's formula value, which no event carries."""
    by_key: dict[str, Any] = {
        **MAPPING,
        "reconcile": {"mode": "off"},  # no scheduled re-read to mend it later
        "mappings": [
            {
                "sfdc_object": "Account",
                "group_type": "account_key",
                "group_name_field": "External_Id__c",
                "group_properties": [
                    {"sfdc_field": "Name", "amplitude_property": "name"},
                    {"sfdc_field": "Revenue_Per_Employee__c", "amplitude_property": "per_employee"},
                ],
            }
        ],
    }
    mapping_file = tmp_path / "mapping.json"
    mapping_file.write_text(json.dumps(by_key))
    assert stack.salesforce is not None
    assert stack.amplitude is not None
    async with running(settings_for(stack, topic_prefix), mapping_file):
        first = await org.create(
            "Account", Name="One", External_Id__c="A", AnnualRevenue=1000, NumberOfEmployees=8
        )
        await wait_until(
            lambda: _values(stack, "account_key").get("A", {}).get("per_employee") == 125,
            what="the formula of the first record",
        )
        await org.update("Account", first, External_Id__c="B")
        await wait_until(lambda: "B" in _values(stack, "account_key"), what="the renamed group")
        await org.create("Account", Name="Two", External_Id__c="A")
        await wait_until(
            lambda: _values(stack, "account_key").get("A", {}).get("name") == "Two",
            what="the second record in the old group",
        )
        assert "per_employee" not in _values(stack, "account_key")["A"]
        await wait_converged(stack.salesforce, stack.amplitude, by_key, timeout=10)
