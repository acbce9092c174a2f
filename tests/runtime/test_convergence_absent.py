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


async def test_a_hidden_field_is_never_unset_and_the_resync_says_why(
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

        # Hiding Industry: the gap re-read fails (INVALID_FIELD), and so would a re-sync
        # that still selected it; one without it must not pass for a whole record.
        await _readable(org, "Industry", False)
        await org.gap("Account", ids[:1], "GAP_UPDATE")
        await wait_until(
            lambda: "Account.Industry" in service.state.unreadable_fields,
            what="the unreadable field in the service state",
        )
        status = service.state.to_status()
        (entry,) = status["unreadable_fields"]
        assert (entry["object"], entry["field"]) == ("Account", "Industry")
        assert "field-level security" in entry["reason"]
        assert "Account.Industry" in status["resyncs"][-1]["error"]
        gauge = service.metrics.unreadable_fields.labels("Account", "Industry")
        assert gauge._value.get() == 1
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
