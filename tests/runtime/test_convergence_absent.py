"""Absent is not null, end to end: Salesforce sandbox -> CDC -> Kafka -> Amplitude sandbox.

A property is unset only when Salesforce says the field is null. A field hidden by
field-level security, or one change events never carry, is left alone, and a read that
cannot be whole fails loudly instead of passing for one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.sandbox_stack import SandboxStack
from tests.runtime.conftest import (
    Org,
    deliver_turns,
    group,
    groups,
    running,
    settings_for,
    wait_until,
)


def _mapping(tmp_path: Path, properties: dict[str, str], on_delete: str = "ignore") -> Path:
    path = tmp_path / "mapping.json"
    mapped = [{"sfdc_field": f, "amplitude_property": p} for f, p in properties.items()]
    mapping = {
        "sfdc_object": "Account",
        "group_type": "account",
        "group_name_field": "Id",
        "group_properties": mapped,
        "on_delete": on_delete,
    }
    config = {"version": 1, "sync_cadence": {"mode": "interval", "every_seconds": 1}}
    path.write_text(json.dumps({**config, "mappings": [mapping]}))
    return path


async def _control(org: Org, method: str, path: str, body: Any) -> Any:
    response = await org.http.request(method, "/__sandbox" + path, json=body)
    assert response.status_code < 300, response.text
    return response.json()


async def _readable(org: Org, field: str, readable: bool) -> None:
    body = {"object": "Account", "field": field, "readable": readable}
    await _control(org, "POST", "/field-security", body)


async def test_a_hidden_field_is_left_out_of_reads_never_unset_and_the_resync_waits(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    mapping_file = _mapping(tmp_path, {"Name": "name", "Industry": "industry"})
    async with running(settings, mapping_file) as service:
        seeded = {"object": "Account", "count": 3, "emit_events": True}
        ids = (await _control(org, "POST", "/seed", seeded))["ids"]
        industries = {i: (await org.record("Account", i))["Industry"] for i in ids}
        assert all(industries.values()), industries

        def all_have_industry() -> bool:
            return all(
                (group(stack, "account", i) or {}).get("industry") == industries[i] for i in ids
            )

        await wait_until(all_have_industry, what="the seeded accounts")

        # Industry hidden since the services' describes were read: the gap re-read that
        # selects it is refused (INVALID_FIELD), the object is described again, and the
        # read asked once more without it brings the rest of the record.
        await _readable(org, "Industry", False)
        silent = {"Name": "Renamed quietly", "emit_events": False}
        await _control(org, "PATCH", f"/records/Account/{ids[0]}", silent)
        await org.gap("Account", ids[:1], "GAP_UPDATE")
        await wait_until(
            lambda: (group(stack, "account", ids[0]) or {}).get("name") == "Renamed quietly",
            what="the gap re-read without the hidden field",
        )
        assert service.state.to_status()["resyncs"] == [], "a gap re-read, not a re-sync"
        (entry,) = service.state.to_status()["unreadable_fields"]
        assert (entry["object"], entry["field"]) == ("Account", "Industry")
        assert "field-level security" in entry["reason"]
        gauge = service.metrics.unreadable_fields.labels("Account", "Industry")
        assert gauge._value.get() == 1

        # A re-sync cannot leave it out: a snapshot without it would pass for a whole one.
        await org.gap_overflow("Account")
        await wait_until(
            lambda: (
                "Account.Industry"
                in (service.state.to_status()["resyncs"] or [{}])[-1].get("error", "")
            ),
            what="the re-sync waiting for the hidden field",
        )
        await deliver_turns(service, 3)
        assert all_have_industry(), "a property was unset because its field could not be read"

        # Read access granted again: the waiting re-sync runs and the problem clears.
        await _readable(org, "Industry", True)
        assert service.ingest is not None
        await wait_until(
            lambda: service.ingest.resyncs_done == 1,  # type: ignore[union-attr]
            timeout=60,
            what="the re-sync once the field is readable",
        )
        assert service.state.to_status()["unreadable_fields"] == []
        assert gauge._value.get() == 0
        await deliver_turns(service, 3)
        assert all_have_industry()


async def test_a_field_hidden_since_the_describe_leaves_flush_time_lookups_whole(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    """Groups named by another field than Id are looked up at flush time: a mapped field
    hidden since deliver's describe must not get every such lookup refused (INVALID_FIELD)
    and dead-lettered; the lookup goes without it, and its property is left alone."""
    settings = settings_for(stack, topic_prefix)
    path = tmp_path / "mapping.json"
    mapping = {
        "sfdc_object": "Account",
        "group_type": "account",
        "group_name_field": "External_Id__c",
        "group_properties": [
            {"sfdc_field": "Name", "amplitude_property": "name"},
            {"sfdc_field": "Industry", "amplitude_property": "industry"},
        ],
    }
    config = {"version": 1, "sync_cadence": {"mode": "interval", "every_seconds": 1}}
    path.write_text(json.dumps({**config, "mappings": [mapping]}))
    async with running(settings, path) as service:
        account = await org.create("Account", Name="Acme", External_Id__c="AC-1", Industry="Energy")
        await wait_until(
            lambda: (group(stack, "account", "AC-1") or {}).get("industry") == "Energy",
            what="the created account",
        )
        await _readable(org, "Industry", False)
        await org.update("Account", account, Name="Acme Renamed")  # names no group: a lookup
        await wait_until(
            lambda: (group(stack, "account", "AC-1") or {}).get("name") == "Acme Renamed",
            what="the update, named by a lookup that leaves the hidden field out",
        )
        assert (group(stack, "account", "AC-1") or {}).get("industry") == "Energy"
        assert sum(flush.dlq for flush in service.state.recent_flushes) == 0, "none dead-lettered"
        assert "Account.Industry" in service.state.unreadable_fields


async def test_an_undelete_leaves_fields_events_never_carry_alone(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    properties = {
        "Name": "name",
        "SystemModstamp": "modstamp",
        "Revenue_Per_Employee__c": "revenue_per_employee",
    }
    mapping_file = _mapping(tmp_path, properties, on_delete="mark")
    async with running(settings, mapping_file) as service:
        # Created silently, then read whole by a gap re-read: every property is known.
        created = {"Name": "Acme", "AnnualRevenue": 600000, "NumberOfEmployees": 100}
        body = {**created, "emit_events": False}
        account = str((await _control(org, "POST", "/records/Account", body))["id"])
        await org.gap("Account", [account], "GAP_UPDATE")
        await wait_until(
            lambda: (
                {"modstamp", "revenue_per_employee"} <= set(group(stack, "account", account) or {})
            ),
            what="the re-read account",
        )
        await org.delete("Account", account)
        await wait_until(
            lambda: (group(stack, "account", account) or {}).get("sfdc_deleted") is True,
            what="the delete mark",
        )
        # UNDELETE carries every non-null field it can; SystemModstamp and formulas never.
        await org.undelete("Account", account)
        await wait_until(
            lambda: (group(stack, "account", account) or {}).get("sfdc_deleted") is False,
            what="the undelete",
        )
        restored = group(stack, "account", account) or {}
        assert restored["revenue_per_employee"] == 6000
        assert "modstamp" in restored, "an UNDELETE unset a field change events never carry"
        assert set(groups(stack)) == {("account", account)}
        assert service.state.to_status()["unreadable_fields"] == []
