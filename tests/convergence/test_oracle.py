"""The convergence oracle on a small hand-built org and Amplitude project: it passes what
matches and names every missing group, extra group and wrong property."""

from __future__ import annotations

from typing import Any

import pytest

from sfamp_sandbox.amplitude.state import SandboxState as AmplitudeState
from sfamp_sandbox.salesforce.org import Org, Transaction

from .oracle import (
    ABSENT,
    assert_converged,
    check_convergence,
    expected_group_value,
    expected_value,
    wait_converged,
)

MAPPING: dict[str, Any] = {
    "sync_cadence": {"mode": "interval", "every_seconds": 2},
    "mappings": [
        {
            "sfdc_object": "Account",
            "group_type": "account",
            "group_name_field": "Id",
            "group_properties": [
                {"sfdc_field": "Name", "amplitude_property": "name"},
                {"sfdc_field": "Industry", "amplitude_property": "industry"},
                {"sfdc_field": "Regions__c", "amplitude_property": "regions"},
                {"sfdc_field": "AnnualRevenue", "amplitude_property": "revenue"},
                {"sfdc_field": "Is_Active__c", "amplitude_property": "active"},
                {"sfdc_field": "Renewal_Date__c", "amplitude_property": "renewal"},
                {"sfdc_field": "CreatedDate", "amplitude_property": "created"},
                {"sfdc_field": "BillingAddress", "amplitude_property": "billing"},
            ],
            "on_delete": "mark",
        },
        {
            "sfdc_object": "Plan__c",
            "group_type": "plan",
            "group_name_field": "Seats__c",
            "group_properties": [{"sfdc_field": "Tier__c", "amplitude_property": "tier"}],
        },
    ],
}
CREATED_MS = 1_714_156_685_000
CREATED = "2024-04-26T18:38:05.000Z"


def _org() -> tuple[Org, dict[str, str]]:
    org = Org(lambda: CREATED_MS / 1000)
    tx = Transaction(org.admin.id)
    ids = {
        "acme": org.create(
            "Account",
            {
                "Name": "Acme",
                "Industry": "Energy",
                "Regions__c": "AMER;EMEA",
                "AnnualRevenue": 1500,
                "Is_Active__c": True,
                "Renewal_Date__c": "2025-01-31",
                "BillingCity": "Oslo",
                "BillingCountry": "Norway",
            },
            tx,
        ),
        "ada": org.create(
            "Account", {"IsPersonAccount": True, "FirstName": "Ada", "LastName": "Lovelace"}, tx
        ),
        "gone": org.create("Account", {"Name": "Gone"}, tx),
        "plan": org.create("Plan__c", {"Name": "P1", "Seats__c": 250, "Tier__c": "Growth"}, tx),
        "unnamed": org.create("Plan__c", {"Name": "P2", "Tier__c": "Free"}, tx),
    }
    org.delete("Account", ids["gone"], tx)
    return org, ids


def _amplitude(ids: dict[str, str]) -> AmplitudeState:
    """What a correct sfamp leaves in Amplitude for :func:`_org`."""
    state = AmplitudeState()
    store = state.store("us")
    acme = {
        "name": "Acme",
        "industry": "Energy",
        "regions": ["AMER", "EMEA"],
        "revenue": 1500,
        "active": True,
        "renewal": "2025-01-31",
        "created": CREATED,
        "billing.City": "Oslo",
        "billing.Country": "Norway",
        "sfdc_deleted": False,
    }
    ada = {"name": "Ada Lovelace", "active": False, "created": CREATED, "sfdc_deleted": False}
    store.apply("account", ids["acme"], {"$set": acme}, {})
    store.apply("account", ids["ada"], {"$set": ada}, {})
    store.apply("plan", "250", {"$set": {"tier": "Growth"}}, {})
    return state


def test_expected_values_follow_the_documented_rules() -> None:
    assert expected_value("double", 250.0) == 250
    assert isinstance(expected_value("double", 250.0), int)
    assert expected_value("percent", 12.5) == 12.5
    assert expected_value("multipicklist", "A;B") == ["A", "B"]
    assert expected_value("datetime", CREATED_MS) == CREATED
    assert expected_value("string", None) is ABSENT
    assert expected_value("textarea", "x" * 2000) == "x" * 1024
    assert expected_group_value("double", 250.0) == "250"
    assert expected_group_value("boolean", False) == "false"
    assert expected_group_value("multipicklist", "A;B") == "A;B"
    assert expected_group_value("string", "") is None


def test_a_matching_state_passes() -> None:
    org, ids = _org()
    report = assert_converged(org, _amplitude(ids), MAPPING)
    assert report.ok
    assert report.checked == 4  # acme, ada, the deleted account (optional), plan 250


def test_every_kind_of_difference_is_reported_in_one_message() -> None:
    org, ids = _org()
    amplitude = _amplitude(ids)
    store = amplitude.store("us")
    store.apply("account", ids["acme"], {"$set": {"industry": "Media", "revenue": "1500"}}, {})
    store.apply("account", ids["ada"], {"$unset": {"name": "-"}}, {})
    store.groups.pop(("plan", "250"))
    store.apply("plan", "250.0", {"$set": {"tier": "Growth"}}, {})
    gone = {"name": "Gone", "active": False, "created": CREATED, "sfdc_deleted": False}
    store.apply("account", ids["gone"], {"$set": gone}, {})
    report = check_convergence(org, amplitude, MAPPING)
    assert [g.group_value for g in report.missing] == ["250"]
    assert [key for key, _ in report.extra] == [("plan", "250.0")]
    wrong = {(m.group_value, m.prop): m.actual for m in report.mismatches}
    assert wrong == {
        (ids["acme"], "industry"): "Media",
        (ids["acme"], "revenue"): "1500",
        (ids["ada"], "name"): ABSENT,
        (ids["gone"], "sfdc_deleted"): False,
    }
    with pytest.raises(AssertionError) as failure:
        assert_converged(org, amplitude, MAPPING)
    message = str(failure.value)
    assert "1 missing group(s), 1 extra group(s), 4 property mismatch(es)" in message
    assert f"account/{ids['acme']} industry: expected 'Energy', got 'Media'" in message
    assert f"plan/250 from Plan__c {ids['plan']}: tier='Growth'" in message
    assert "plan/250.0: {'tier': 'Growth'}" in message


def test_options_for_stale_groups_unchecked_fields_and_shared_names() -> None:
    org, ids = _org()
    tx = Transaction(org.admin.id)
    org.create("Plan__c", {"Name": "P3", "Seats__c": 250.0, "Tier__c": "Enterprise"}, tx)
    amplitude = _amplitude(ids)
    store = amplitude.store("us")
    store.apply("plan", "100", {"$set": {"tier": "Old"}}, {})  # before a group name changed
    store.apply("account", ids["acme"], {"$set": {"industry": "Stale"}}, {})
    report = check_convergence(
        org,
        amplitude,
        MAPPING,
        unchecked=["Account.Industry"],
        allow_extra=[("plan", "100")],
    )
    assert report.ok, report.describe()
    store.apply("plan", "250", {"$set": {"tier": "Free"}}, {})
    shared = check_convergence(org, amplitude, MAPPING, unchecked=["Account.Industry"])
    [mismatch] = shared.mismatches
    assert mismatch.expected == ("Growth", "Enterprise")
    assert "expected one of 'Growth', 'Enterprise', got 'Free'" in shared.describe()


async def test_wait_converged_gives_the_last_report_on_timeout() -> None:
    org, ids = _org()
    amplitude = _amplitude(ids)
    assert (await wait_converged(org, amplitude, MAPPING, timeout=1)).ok
    amplitude.store("us").groups.pop(("account", ids["ada"]))
    with pytest.raises(AssertionError, match=r"timed out after 0.3s: .*1 missing group"):
        await wait_converged(org, amplitude, MAPPING, timeout=0.3, interval=0.1)
