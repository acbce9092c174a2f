"""The compiled config answers exactly what the transform's rules answer, for any change."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from pipeline.config.mapping import MappingConfig
from pipeline.transform.apply import (
    NothingToDo,
    PropertyChanges,
    changes_for_config,
)
from pipeline.transform.coalesce import Coalescer
from pipeline.transform.compiled import compiled
from pipeline.transform.envelope import OPS, ChangeEnvelope
from pipeline.transform.schema import ObjectSchema, schema_from_describe
from tests.transform.fixtures import (
    ACCOUNT_DESCRIBE,
    account_config,
    account_schema,
    describe_field,
)

SCHEMA = account_schema()
# Score__c follows Industry and NumberOfEmployees: a mapping of it leaves the short road.
FORMULA_SCHEMA = schema_from_describe(
    {
        **ACCOUNT_DESCRIBE,
        "fields": [
            *(f for f in ACCOUNT_DESCRIBE["fields"] if f["name"] != "Score__c"),
            describe_field(
                "Score__c", "double", calculated=True, calculatedFormula="AnnualRevenue / 2"
            ),
        ],
    }
)
# Mapped fields: flat ones of every type, a whole address, a component, a geolocation, the
# person name, a formula, a system field, one the describe does not know (field security).
FIELDS = (
    "Id",
    "Name",
    "FirstName",
    "LastName",
    "Salutation",
    "Industry",
    "AnnualRevenue",
    "NumberOfEmployees",
    "Fax",
    "Description",
    "Active__c",
    "Tags__c",
    "Since__c",
    "LastModifiedDate",
    "BillingAddress",
    "BillingCity",
    "Loc__c",
    "Score__c",
    "SystemModstamp",
    "Hidden__c",
)
SHORT_ROAD_FIELDS = tuple(f for f in FIELDS if f not in ("Score__c", "Hidden__c"))
VALUES: tuple[Any, ...] = (
    None,
    "",
    "Energy",
    "250",
    "12.50",
    "true",
    "A;B",
    "2024-04-26T18:38:05.000Z",
    "2024-04-26",
    0,
    7,
    2.5,
    1_714_157_000_000,
    True,
    False,
    ["x", 1],
)


def random_config(rng: random.Random, *, short_road: bool) -> MappingConfig:
    fields = SHORT_ROAD_FIELDS if short_road else FIELDS
    mappings = []
    for index in range(rng.choice((1, 1, 2))):
        chosen = rng.sample(fields, rng.randint(1, 5))
        mappings.append(
            {
                "sfdc_object": "Account",
                "group_type": f"account{index}",
                "group_name_field": "Id"
                if short_road or rng.random() < 0.6
                else rng.choice(("Name", "Industry", "BillingCity")),
                "group_properties": [
                    {"sfdc_field": name, "amplitude_property": f"p{index}_{name.lower()}"}
                    for name in chosen
                ],
                "on_delete": rng.choice(("ignore", "unset", "mark")),
            }
        )
    return MappingConfig.model_validate(
        {"version": 1, "sync_cadence": {"mode": "daily", "at": "00:00"}, "mappings": mappings}
    )


def random_nested(rng: random.Random) -> tuple[str, dict[str, Any]]:
    kind = rng.random()
    if kind < 0.45:
        parts = ("Street", "City", "country", "PostalCode", "Latitude", "Planet")
        return "BillingAddress", {p: rng.choice(VALUES) for p in rng.sample(parts, 2)}
    if kind < 0.6:
        return "Loc__c", {"Latitude": rng.choice(VALUES), "Longitude": 1.5}
    if kind < 0.7:
        return "Name", {"FirstName": "Ada", "LastName": rng.choice(("Lovelace", None))}
    if kind < 0.75:
        return "Description", {"diff": "@@ -1 +1 @@"}
    if kind < 0.8:
        return "BillingAddress", {"diff": "@@ -1 +1 @@"}
    if kind < 0.85:
        return "Owner", {"attributes": {"type": "User"}, "Name": "Owner"}
    if kind < 0.93:
        return "Fax", {"Part": 1}  # nested under a plain field: taken for a person name
    return "Mystery__c", {"Part": 1}


def random_envelope(rng: random.Random, seq: int) -> ChangeEnvelope:
    fields: dict[str, Any] = {}
    for name in rng.sample(FIELDS, rng.randint(0, 6)):
        fields[name] = rng.choice(VALUES)
    if rng.random() < 0.5:
        key, value = random_nested(rng)
        fields[key] = value
    if rng.random() < 0.1:
        fields["Owner.Name"] = "Owner"
    if rng.random() < 0.2:
        fields["Id"] = f"001RM{rng.randrange(5):013d}"
    nulled = rng.sample(
        ("Fax", "BillingAddress", "BillingAddress.City", "Loc__c.Latitude", "Name.LastName"),
        rng.choice((0, 0, 1, 2)),
    )
    ops = ("create", "update", "update", "update", "delete", "undelete")
    op = rng.choice(ops) if rng.random() < 0.95 else rng.choice(sorted(OPS))
    full = rng.random() < 0.25
    return ChangeEnvelope(
        object="Account",
        record_id=f"001RM{rng.randrange(5):013d}" if rng.random() < 0.98 else "001*",
        op=op,  # type: ignore[arg-type]
        # Ties and commits out of arrival order, as partitions and re-reads interleave.
        commit_ts=1_000 + rng.randrange(seq + 1),
        commit_number=rng.randrange(3),
        sequence_number=rng.randrange(3),
        changed=tuple(rng.sample((*FIELDS, "BillingAddress.City"), rng.randint(0, 3))),
        nulled=tuple(nulled),
        fields=fields,
        full=full,
        source="bulk" if full else "cdc",
    )


def answer(work: Callable[..., Any], *args: Any) -> Any:
    """What ``work(*args)`` returns, or the class of what it raises: both roads must agree.

    (Some conversions raise on absurd values, such as a date 10^12 days from the epoch.)
    """
    try:
        return work(*args)
    except (OverflowError, ValueError) as exc:
        return type(exc)


SCHEMAS: dict[str, ObjectSchema | None] = {
    "describe": SCHEMA,
    "formula": FORMULA_SCHEMA,
    "none": None,
}


@pytest.mark.parametrize("schema_name", sorted(SCHEMAS))
@pytest.mark.parametrize("short_road", [True, False], ids=["eligible", "any"])
def test_both_roads_give_the_same_outcomes(schema_name: str, short_road: bool) -> None:
    schema = SCHEMAS[schema_name]
    rng = random.Random(f"{schema_name}-{short_road}")
    for _ in range(60):
        config = random_config(rng, short_road=short_road)
        table = compiled(config)
        for seq in range(40):
            envelope = random_envelope(rng, seq)
            expected = answer(changes_for_config, envelope, config, schema)
            assert answer(table.changes, envelope, schema) == expected, (config, envelope)


def test_the_short_road_is_taken_and_agrees() -> None:
    """Most eligible changes take the short road; the check above then compares real work."""
    rng = random.Random(11)
    taken = total = 0
    for _ in range(60):
        config = random_config(rng, short_road=True)
        for seq in range(40):
            envelope = random_envelope(rng, seq)
            total += 1
            taken += answer(compiled(config).on_short_road, envelope, SCHEMA) is True
    assert taken > total * 0.5, f"only {taken} of {total} changes took the short road"


@pytest.mark.parametrize("short_road", [True, False], ids=["eligible", "any"])
def test_folding_leaves_the_coalescer_as_the_rules_do(short_road: bool) -> None:
    rng = random.Random(f"fold-{short_road}")
    for _ in range(150):
        config = random_config(rng, short_road=short_road)
        folded, reference = Coalescer(10_000), Coalescer(10_000)
        for seq in range(60):
            envelope = random_envelope(rng, seq)
            outcomes = answer(changes_for_config, envelope, config, SCHEMA)
            if not isinstance(outcomes, list):
                continue  # a conversion refused the value (compared above)
            rest = compiled(config).fold(envelope, SCHEMA, folded)
            others = []
            for mapping, outcome in outcomes:
                if isinstance(outcome, PropertyChanges):
                    reference.add(outcome)
                elif not isinstance(outcome, NothingToDo):
                    others.append((mapping, outcome))
            assert list(rest) == others, envelope
        assert folded.drain() == reference.drain(), config


def test_a_new_describe_recompiles_the_object() -> None:
    """A mapped field the old describe lacked goes the general way; the new one knows it."""
    config = random_config(random.Random(3), short_road=True)
    envelope = ChangeEnvelope("Account", "001RM0000000000001", "update", 1, fields={"Fax": "1"})
    assert compiled(config).on_short_road(envelope, SCHEMA)
    assert not compiled(config).on_short_road(envelope, None)
    assert compiled(config).on_short_road(envelope, SCHEMA)


@pytest.mark.parametrize(
    "fields",
    [
        {"BillingCity": "", "BillingAddress": {"City": "Oakland"}},
        {"BillingAddress": {"City": "Oakland"}, "BillingCity": None},
        {"BillingCity": "Oakland", "BillingAddress": {"City": ""}},
    ],
)
def test_a_component_sent_flat_and_nested_counts_once(fields: dict[str, Any]) -> None:
    """The last spelling of a field wins, as when the change is flattened first."""
    config = account_config({"BillingCity": "c"})
    envelope = ChangeEnvelope("Account", "001RM0000000000001", "update", 1, fields=fields)
    assert_folds_as_the_rules(config, envelope)


@pytest.mark.parametrize("op", ["create", "undelete", "update", "delete"])
@pytest.mark.parametrize(
    ("fields", "nulled"),
    [
        # A component carried under a parent named null: a whole record keeps it.
        ({"BillingAddress": {"Latitude": False}}, ("BillingAddress",)),
        # A plain value under a compound field sets no component of a whole record.
        ({"BillingAddress": "true", "Industry": "Energy"}, ()),
        ({"BillingAddress": None, "Industry": "Energy"}, ()),
        ({"Name": "Acme"}, ()),
    ],
)
@pytest.mark.parametrize("on_delete", ["ignore", "unset", "mark"])
def test_one_pass_changes_agree_with_the_rules(
    op: str, fields: dict[str, Any], nulled: tuple[str, ...], on_delete: str
) -> None:
    fields_mapped = ("Id", "Industry", "BillingAddress", "Since__c")
    config = account_config({name: name.lower() for name in fields_mapped}, on_delete)
    envelope = ChangeEnvelope(
        "Account",
        "001RM0000000000001",
        op,
        1,
        nulled=nulled,
        fields=fields,  # type: ignore[arg-type]
    )
    assert_folds_as_the_rules(config, envelope)


def assert_folds_as_the_rules(config: MappingConfig, envelope: ChangeEnvelope) -> None:
    """Folding ``envelope`` leaves the coalescer as adding the rules' outcomes does."""
    folded, reference = Coalescer(10), Coalescer(10)
    compiled(config).fold(envelope, SCHEMA, folded)
    for _, outcome in changes_for_config(envelope, config, SCHEMA):
        if isinstance(outcome, PropertyChanges):
            reference.add(outcome)
    assert folded.drain() == reference.drain()
