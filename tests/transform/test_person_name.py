"""Person names: one ``name`` on every read path, business accounts unaffected.

REST and Bulk return a person account's (or a contact's) ``Name`` composed; a change
event nests its parts (``Name: {"Salutation", "FirstName", "LastName"}``).
"""

from __future__ import annotations

from typing import Any

from pipeline.salesforce.change_events import envelopes_from_event
from pipeline.transform.apply import NeedsLookup, PropertyChanges, changes_for
from pipeline.transform.envelope import ChangeEnvelope
from pipeline.transform.plan import plan_for
from pipeline.transform.reads import envelope_from_record
from pipeline.transform.schema import compose_person_name
from tests.transform.fixtures import (
    ACCOUNT_ID,
    CONTACT_ID,
    account_schema,
    cdc_message,
    contact_schema,
    mapping,
)

SCHEMA = account_schema()
NAMED = mapping({"Name": "name", "Industry": "industry"})
BY_NAME = mapping({"Industry": "industry"}, group_type="person", group_name_field="Name")
PERSON = {"Salutation": "Dr.", "FirstName": "Ada", "LastName": "Lovelace"}


def _event(change_type: str, body: dict[str, Any], **kwargs: Any) -> ChangeEnvelope:
    (env,) = envelopes_from_event(cdc_message(change_type, body=body, **kwargs))
    return env


def _changes(outcome: object) -> PropertyChanges:
    assert isinstance(outcome, PropertyChanges), outcome
    return outcome


def _rest(**fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Account"}, "Id": ACCOUNT_ID, **fields}


def test_salesforce_composes_first_middle_last_and_suffix() -> None:
    assert compose_person_name(PERSON) == "Ada Lovelace"
    assert compose_person_name({"LastName": "Hopper", "Suffix": "Jr."}) == "Hopper Jr."
    assert compose_person_name({"Salutation": "Ms.", "FirstName": None}) is None


def test_a_person_account_create_sets_the_composed_name() -> None:
    body = {"Name": PERSON, "Industry": "Energy", "IsPersonAccount": True}
    for schema in (SCHEMA, None):
        out = _changes(changes_for(_event("CREATE", body), NAMED, schema))
        assert out.set == {"name": "Ada Lovelace", "industry": "Energy"}
        assert out.unset == frozenset()


def test_the_create_and_a_read_of_the_same_person_agree() -> None:
    created = _changes(changes_for(_event("CREATE", {"Name": PERSON}), NAMED, SCHEMA))
    record = _rest(Name="Ada Lovelace", Industry=None)
    read = _changes(
        changes_for(envelope_from_record("Account", record, source="rest", now_ms=1), NAMED, SCHEMA)
    )
    assert created.set == read.set == {"name": "Ada Lovelace"}


def test_a_business_account_name_is_unaffected() -> None:
    out = _changes(changes_for(_event("CREATE", {"Name": "Acme"}), NAMED, SCHEMA))
    assert out.set == {"name": "Acme"}
    assert plan_for(NAMED, SCHEMA).read_fields == ("Id", "Name", "Industry")


def test_a_changed_part_of_a_person_name_reads_the_composed_name() -> None:
    env = _event("UPDATE", {"Name": {"LastName": "King"}}, changed=["Name.LastName"])
    out = changes_for(env, NAMED, SCHEMA)
    assert isinstance(out, NeedsLookup)
    assert out.full_record
    assert "Name" in out.fields
    done = _changes(changes_for(env, NAMED, SCHEMA, full_record=_rest(Name="Ada King")))
    assert done.set == {"name": "Ada King"}
    assert done.unset == frozenset()


def test_a_person_name_names_its_group_on_every_path() -> None:
    created = _changes(changes_for(_event("CREATE", {"Name": PERSON}), BY_NAME, SCHEMA))
    assert created.key == ("person", "Ada Lovelace")
    renamed = _event("UPDATE", {"Name": {"LastName": "King"}}, changed=["Name.LastName"])
    lookup = changes_for(renamed, BY_NAME, SCHEMA)
    assert isinstance(lookup, NeedsLookup)
    assert lookup.full_record, "the new group needs every property"
    record = _rest(Name="Ada King", Industry="Energy")
    moved = _changes(changes_for(renamed, BY_NAME, SCHEMA, full_record=record))
    assert moved.key == ("person", "Ada King")
    assert moved.set == {"industry": "Energy"}


def test_a_contact_name_is_one_property_not_one_per_part() -> None:
    contact = mapping({"Name": "name"}, sfdc_object="Contact", group_type="contact")
    env = _event(
        "CREATE",
        {"Name": {"FirstName": "Ada", "LastName": "Lovelace"}},
        record_ids=[CONTACT_ID],
        entity="Contact",
    )
    out = _changes(changes_for(env, contact, contact_schema()))
    assert out.set == {"name": "Ada Lovelace"}
    assert plan_for(contact, contact_schema()).read_fields == ("Id", "Name")
