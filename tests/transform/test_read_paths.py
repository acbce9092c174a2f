"""One value, whatever the read path: every field type of the sandbox through every path.

The same Salesforce value reaches sfamp as a CDC CREATE, a CDC UPDATE, a REST query
record, a Bulk API 2.0 CSV row and a flush-time lookup (the record read by id, its group
name handed over as text, its values as a full record). Each path here is rendered by the
Salesforce sandbox's own code for that wire format (the code its HTTP and CometD servers
serve) and read by sfamp's own code (envelope parsing, the Bulk CSV converters, the
transform), so the matrix is as faithful as the sandbox. Every path must give the same
group name and the same property value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from pipeline.config.mapping import ObjectMapping
from pipeline.salesforce.bulk_csv import parse_csv, rest_converters
from pipeline.salesforce.change_events import envelopes_from_event
from pipeline.transform.apply import NeedsLookup, PropertyChanges, changes_for
from pipeline.transform.envelope import ChangeEnvelope
from pipeline.transform.plan import plan_for
from pipeline.transform.reads import envelope_from_record
from pipeline.transform.schema import ObjectSchema, schema_from_describe
from sfamp_sandbox.salesforce.cdc import RecordChange, build_header, channel_for_entity
from sfamp_sandbox.salesforce.describe import describe_object
from sfamp_sandbox.salesforce.objects import FIELD_TYPES, OBJECTS
from sfamp_sandbox.salesforce.org import Org, Transaction
from sfamp_sandbox.salesforce.query import compile_query
from sfamp_sandbox.salesforce.render import csv_page, record_json
from tests.transform.fixtures import mapping

PATHS = ("cdc_create", "cdc_update", "rest", "bulk_csv", "lookup")
VERSION = "62.0"


@dataclass(frozen=True)
class Case:
    """A field of one type, the value written to it, and what Amplitude should get."""

    sf_type: str
    sfdc_object: str
    field: str
    value: Any  # a dict writes several fields (an address, a person's name parts)
    group: str | None  # the group name it gives; None: cannot name a group
    prop: Any  # the property value (a dict for a compound: property -> value)
    base: dict[str, Any]  # other values the record needs
    paths: tuple[str, ...] = PATHS


SAME: Any = object()
REQUIRED = {"Account": {"Name": "A"}, "Plan__c": {"Name": "P"}}


def case(
    sf_type: str,
    ref: str,
    value: Any,
    group: Any = SAME,
    prop: Any = SAME,
    *,
    base: dict[str, Any] | None = None,
    paths: tuple[str, ...] = PATHS,
) -> Case:
    sfdc_object, name = ref.split(".")
    group = value if group is SAME else group
    prop = value if prop is SAME else prop
    return Case(
        sf_type, sfdc_object, name, value, group, prop, base or REQUIRED[sfdc_object], paths
    )


PERSON = {"IsPersonAccount": True, "Salutation": "Dr.", "FirstName": "Ada"}
CASES = (
    # Change events name the record in their header, never in the body.
    case("id", "Plan__c.Id", None, "<id>", "<id>", paths=("cdc_create", "rest", "bulk_csv")),
    case("string", "Account.Name", "Acme Ltd", base={"Name": "Old"}),
    # Events nest a person's Name as its parts; reads give it composed.
    case(
        "person name",
        "Account.Name",
        {"LastName": "Lovelace"},
        "Ada Lovelace",
        "Ada Lovelace",
        base=PERSON,
    ),
    case("picklist", "Account.Industry", "Energy"),
    case("multipicklist", "Plan__c.Features__c", "SSO;API", prop=["SSO", "API"]),
    case("boolean", "Plan__c.Active__c", True, "true"),
    case("int", "Account.NumberOfEmployees", 250, "250"),
    case("double", "Plan__c.Seats__c", 250, "250"),
    case("double", "Account.Health_Score__c", 87.5, "87.5"),
    case("currency", "Plan__c.Monthly_Price__c", 1500000.5, "1500000.5"),
    case("percent", "Account.Churn_Risk__c", 12.25, "12.25"),
    case("date", "Plan__c.Start_Date__c", "2024-04-09"),
    case("datetime", "Plan__c.Trial_Ends__c", "2024-04-26T18:38:05.250Z"),
    case("email", "Account.Billing_Email__c", "a@b.example"),
    case("phone", "Account.Phone", "+1 415 555 0100"),
    case("url", "Plan__c.Portal_Url__c", "https://x.example/a?b=1"),
    case("textarea", "Account.Description", "line one\nline two"),
    case("reference", "Plan__c.Account__c", "<account>"),
    case(
        "address",
        "Account.BillingAddress",
        {"BillingCity": "Oakland", "BillingPostalCode": "94612"},
        None,
        {"p.City": "Oakland", "p.PostalCode": "94612"},
        paths=("cdc_create", "cdc_update", "rest", "bulk_csv"),
    ),
    # Formula fields never travel in change events: they are only read.
    case(
        "formula",
        "Account.Revenue_Per_Employee__c",
        None,
        "6000",
        6000,
        base={"Name": "A", "AnnualRevenue": 600000, "NumberOfEmployees": 100},
        paths=("rest", "bulk_csv", "lookup"),
    ),
)


def test_the_matrix_covers_every_field_type_of_the_sandbox() -> None:
    covered = {case.sf_type for case in CASES} - {"person name"}
    assert covered == set(FIELD_TYPES), "a field type of the sandbox has no case here"


class Paths:
    """One sandbox org; renders a record through each wire format sfamp reads."""

    def __init__(self) -> None:
        self.changes: list[RecordChange] = []
        self.org = Org(lambda: 1_715_340_000.0, self.changes.append)
        self.account = self.write("Account", {"Name": "Parent"})

    def write(self, sfdc_object: str, values: dict[str, Any], record_id: str = "") -> str:
        tx = Transaction(self.org.admin.id)
        if record_id:
            self.org.update(sfdc_object, record_id, values, tx)
            return record_id
        return self.org.create(sfdc_object, values, tx)

    def schema(self, sfdc_object: str) -> ObjectSchema:
        return schema_from_describe(_wire(describe_object(OBJECTS[sfdc_object], VERSION)))

    def event(self) -> ChangeEnvelope:
        change = self.changes[-1]
        header = build_header(change, transaction_key="t", commit_ms=1, commit_number=1)
        message = {
            "channel": channel_for_entity(change.entity_name),
            "data": {
                "schema": "s",
                "event": {"replayId": len(self.changes)},
                "payload": {"ChangeEventHeader": header, **change.fields},
            },
        }
        (envelope,) = envelopes_from_event(_wire(message))
        return envelope

    def rest(self, sfdc_object: str, record_id: str, fields: tuple[str, ...]) -> dict[str, Any]:
        compiled = self._query(sfdc_object, record_id, fields)
        (row,) = compiled.run(self.org, include_deleted=False)
        return dict(_wire(record_json(compiled.obj, compiled.columns, row, VERSION)))

    def bulk_csv(
        self, schema: ObjectSchema, record_id: str, fields: tuple[str, ...]
    ) -> dict[str, Any]:
        compiled = self._query(schema.name, record_id, fields)
        page = csv_page(compiled.columns, compiled.run(self.org, include_deleted=False))
        converters = rest_converters({name: info.type for name, info in schema.fields.items()})
        (row,) = parse_csv(page, converters)
        return row

    def _query(self, sfdc_object: str, record_id: str, fields: tuple[str, ...]) -> Any:
        select = ", ".join(dict.fromkeys(("Id", *fields)))
        return compile_query(
            self.org, f"SELECT {select} FROM {sfdc_object} WHERE Id = '{record_id}'"
        )


def _wire(data: Any) -> Any:
    """What a client decodes: the JSON the server would send."""
    return orjson.loads(orjson.dumps(data))


def _changes(outcome: object) -> PropertyChanges:
    assert isinstance(outcome, PropertyChanges), outcome
    return outcome


def _property(out: PropertyChanges, case: Case) -> Any:
    if isinstance(case.prop, dict):
        return {key: value for key, value in out.set.items() if key.startswith("p.")}
    return out.set.get("p")


@dataclass
class Seen:
    """What each path gave, for one case."""

    groups: dict[str, str | None] = field(default_factory=dict)
    props: dict[str, Any] = field(default_factory=dict)


def _run(case: Case) -> tuple[Seen, dict[str, str]]:
    paths = Paths()
    schema = paths.schema(case.sfdc_object)
    by_id = mapping({case.field: "p"}, sfdc_object=case.sfdc_object, group_type="g")
    by_value = mapping(
        {"Id": "record"}, sfdc_object=case.sfdc_object, group_type="g", group_name_field=case.field
    )
    value = paths.account if case.value == "<account>" else case.value
    values = value if isinstance(value, dict) else {} if value is None else {case.field: value}
    seen = Seen()

    record_id = paths.write(case.sfdc_object, {**case.base, **values})
    fixed = {"<id>": record_id, "<account>": paths.account}
    if "cdc_create" in case.paths:
        created = paths.event()
        seen.props["cdc_create"] = _property(_changes(changes_for(created, by_id, schema)), case)
        if case.group is not None:
            seen.groups["cdc_create"] = _changes(changes_for(created, by_value, schema)).group_value

    read = plan_for(by_id, schema).read_fields + (case.field,) * (case.group is not None)
    rest = paths.rest(case.sfdc_object, record_id, read)
    csv_row = paths.bulk_csv(schema, record_id, read)
    for name, record in (("rest", rest), ("bulk_csv", csv_row)):
        envelope = envelope_from_record(case.sfdc_object, record, source="rest", now_ms=1)
        seen.props[name] = _property(_changes(changes_for(envelope, by_id, schema)), case)
        if case.group is not None:
            seen.groups[name] = _changes(changes_for(envelope, by_value, schema)).group_value

    if "lookup" in case.paths:
        _lookup(case, schema, by_id, by_value, record_id, rest, seen)
    if "cdc_update" in case.paths:
        _update(case, paths, schema, by_id, by_value, values, seen)
    return seen, fixed


def _lookup(
    case: Case,
    schema: ObjectSchema,
    by_id: ObjectMapping,
    by_value: ObjectMapping,
    record_id: str,
    rest: dict[str, Any],
    seen: Seen,
) -> None:
    """Deliver's flush-time reads: a value that was not in the change, read by id."""
    header = {"entityName": case.sfdc_object, "recordIds": [record_id], "changeType": "UPDATE"}
    header |= {"commitTimestamp": 2, "changedFields": [case.field]}
    diff = {case.field: {"diff": "--- \n+++ x\n"}}
    payload = {"ChangeEventHeader": header, **diff, "Id": record_id}
    message = {"channel": "/data/x", "data": {"event": {"replayId": 9}, "payload": payload}}
    (envelope,) = envelopes_from_event(message)
    needs = changes_for(envelope, by_id, schema)
    assert isinstance(needs, NeedsLookup)
    done = _changes(changes_for(envelope, by_id, schema, full_record=rest))
    seen.props["lookup"] = _property(done, case)
    if case.group is not None:
        other = {**header, "changedFields": ["Id"]}
        (unnamed,) = envelopes_from_event(
            {
                "channel": "/data/x",
                "data": {
                    "event": {"replayId": 10},
                    "payload": {"ChangeEventHeader": other, "Id": record_id},
                },
            }
        )
        touch = mapping({"Id": "record"}, sfdc_object=case.sfdc_object, group_type="g")
        touch = by_value if case.field != "Id" else touch
        # Deliver hands the looked-up group name over as text: str() of the JSON value.
        name = rest[case.field]
        outcome = changes_for(unnamed, touch, schema, group_value="" if name is None else str(name))
        seen.groups["lookup"] = _changes(outcome).group_value


def _update(
    case: Case,
    paths: Paths,
    schema: ObjectSchema,
    by_id: ObjectMapping,
    by_value: ObjectMapping,
    values: dict[str, Any],
    seen: Seen,
) -> None:
    """The same value written by an UPDATE to a record that had another one."""
    before = {key: ("Other" if key in ("Name", "LastName") else None) for key in values}
    if case.sf_type == "boolean":
        before = {case.field: False}
    other = paths.write(case.sfdc_object, {**case.base, **before})
    paths.write(case.sfdc_object, values, other)
    updated = paths.event()
    rest = paths.rest(case.sfdc_object, other, plan_for(by_id, schema).read_fields)
    outcome = changes_for(updated, by_id, schema)
    if isinstance(outcome, NeedsLookup):  # a person name part: the composed name is read
        outcome = changes_for(updated, by_id, schema, full_record=rest)
    seen.props["cdc_update"] = _property(_changes(outcome), case)
    if case.group is not None and case.field != "Id":
        renamed = changes_for(updated, by_value, schema, full_record=rest)
        seen.groups["cdc_update"] = _changes(renamed).group_value


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.sf_type}-{case.field}")
def test_every_path_gives_the_same_group_and_property_value(case: Case) -> None:
    seen, fixed = _run(case)
    expected_prop = fixed.get(case.prop, case.prop) if isinstance(case.prop, str) else case.prop
    assert seen.props == dict.fromkeys(seen.props, expected_prop), seen.props
    assert set(seen.props) == set(case.paths)
    if case.group is not None:
        expected_group = fixed.get(case.group, case.group)
        assert seen.groups == dict.fromkeys(seen.groups, expected_group), seen.groups
