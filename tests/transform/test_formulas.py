"""The same-record fields a formula reads, and a change to one of them re-reading the formula."""

from __future__ import annotations

import pytest

from pipeline.salesforce.change_events import envelopes_from_event
from pipeline.transform.apply import NeedsLookup, PropertyChanges, changes_for
from pipeline.transform.formulas import followable, formula_inputs
from pipeline.transform.reads import envelope_from_record
from pipeline.transform.schema import schema_from_describe
from tests.transform.fixtures import ACCOUNT_DESCRIBE, cdc_message, describe_field, mapping

REVENUE_PER_EMPLOYEE = "IF(NumberOfEmployees > 0, AnnualRevenue / NumberOfEmployees, NULL)"


@pytest.mark.parametrize(
    ("formula", "inputs"),
    [
        (REVENUE_PER_EMPLOYEE, {"NumberOfEmployees", "AnnualRevenue"}),
        ("AnnualRevenue * 1.5", {"AnnualRevenue"}),
        ("IF(ISPICKVAL(Tier__c, 'Gold (top)'), \"x, Y\", Name)", {"Tier__c", "Name"}),
        ("/* Fax is unused */ TRUE && ISBLANK(Phone)", {"Phone"}),
        ("BLANKVALUE(Fax , null)", {"Fax"}),
        ("42", set()),
    ],
)
def test_same_record_inputs_skip_functions_literals_and_keywords(
    formula: str, inputs: set[str]
) -> None:
    assert formula_inputs(formula) == inputs
    assert followable(formula)


@pytest.mark.parametrize(
    "formula",
    [
        "TODAY() - Renewal_Date__c",
        "NOW ( )",
        "Owner.Name",
        "Parent.AnnualRevenue / AnnualRevenue",
        "Account__r.Tier__c",
        "$User.Id",
    ],
)
def test_other_records_globals_and_time_are_not_followable(formula: str) -> None:
    assert formula_inputs(formula) is None
    assert not followable(formula)


SCHEMA = schema_from_describe(
    {
        **ACCOUNT_DESCRIBE,
        "fields": [
            *(f for f in ACCOUNT_DESCRIBE["fields"] if f["name"] != "Score__c"),
            describe_field(
                "Score__c", "double", calculated=True, calculatedFormula=REVENUE_PER_EMPLOYEE
            ),
            describe_field(
                "Age__c", "double", calculated=True, calculatedFormula="TODAY() - Since__c"
            ),
        ],
    }
)
MAPPING = mapping({"Industry": "industry", "Score__c": "score", "Age__c": "age"})


def test_a_change_to_a_formula_input_reads_the_formula_with_the_record() -> None:
    (env,) = envelopes_from_event(
        cdc_message("UPDATE", body={"AnnualRevenue": 5e6}, changed=["AnnualRevenue"])
    )
    out = changes_for(env, MAPPING, SCHEMA)
    assert isinstance(out, NeedsLookup), out
    assert out.full_record
    assert "Score__c" in out.fields
    read = {"Id": env.record_id, "Industry": "Energy", "Score__c": 50000.0, "Age__c": 3.0}
    done = changes_for(env, MAPPING, SCHEMA, full_record=read)
    assert isinstance(done, PropertyChanges), done
    # The formula that reads the changed field, not the time formula nor unchanged fields.
    assert done.set == {"score": 50000.0}


def test_a_change_that_no_formula_reads_costs_no_read() -> None:
    (env,) = envelopes_from_event(
        cdc_message("UPDATE", body={"Industry": "Energy"}, changed=["Industry"])
    )
    out = changes_for(env, MAPPING, SCHEMA)
    assert isinstance(out, PropertyChanges), out
    assert out.set == {"industry": "Energy"}


def test_a_create_reads_the_formulas_its_fields_feed() -> None:
    (env,) = envelopes_from_event(cdc_message("CREATE", body={"Name": "A", "AnnualRevenue": 10}))
    out = changes_for(env, MAPPING, SCHEMA)
    assert isinstance(out, NeedsLookup), out
    done = changes_for(env, MAPPING, SCHEMA, full_record={"Id": env.record_id, "Score__c": 5.0})
    assert isinstance(done, PropertyChanges), done
    assert done.set["score"] == 5.0


def test_a_read_holding_a_formula_and_its_input_needs_no_second_read() -> None:
    # A backfill, re-sync or reconcile read carries the formula as read with its inputs.
    both = mapping({"AnnualRevenue": "arr", "Score__c": "score"})
    record = {
        "Id": "001000000000001AAA",
        "AnnualRevenue": 10.0,
        "Score__c": 5.0,
        "SystemModstamp": "2026-11-30T00:00:00.000+0000",
    }
    out = changes_for(
        envelope_from_record("Account", record, source="rest", now_ms=1), both, SCHEMA
    )
    assert isinstance(out, PropertyChanges), out
    assert out.set == {"arr": 10.0, "score": 5.0}


@pytest.mark.parametrize("change_type", ["CREATE", "UNDELETE"])
def test_a_whole_record_into_a_group_named_by_another_field_reads_what_events_never_carry(
    change_type: str,
) -> None:
    """The group may be one a renamed (or deleted) record left behind: its formula value is
    that record's, and the event, which carries no formula, cannot say it is gone."""
    named = mapping({"Industry": "industry", "Score__c": "score"}, group_name_field="Ext_Key__c")
    (env,) = envelopes_from_event(cdc_message(change_type, body={"Name": "B", "Ext_Key__c": "A"}))
    out = changes_for(env, named, SCHEMA)
    assert isinstance(out, NeedsLookup), out
    assert out.full_record
    assert "Score__c" in out.fields
    read = {"Id": env.record_id, "Ext_Key__c": "A", "Industry": None, "Score__c": None}
    done = changes_for(env, named, SCHEMA, full_record=read)
    assert isinstance(done, PropertyChanges), done
    assert done.group_value == "A"
    assert done.unset >= {"score"}  # the left-behind record's value goes
    # Named by Id, the group is the record's own: nothing to read for a create that feeds
    # no formula.
    by_id = mapping({"Industry": "industry", "Score__c": "score"})
    assert isinstance(changes_for(env, by_id, SCHEMA), PropertyChanges)
