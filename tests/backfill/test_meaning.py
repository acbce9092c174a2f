"""A read's meaning (pipeline/runtime/backfill/meaning.py) equals the stream transform's.

ReadMeaning answers flat live reads without building envelopes and views; every
answer must be the one changes_for_config gives for the same full envelope, for
every kind of value, absent and null fields, group name fields and on_delete policy.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest

from pipeline.config.mapping import MappingConfig
from pipeline.errors import EnvelopeError
from pipeline.runtime.backfill.meaning import (
    BatchMeaning,
    ReadMeaning,
    _block_outcomes,
    _by_read,
    _row_sets,
    read_key,
)
from pipeline.salesforce.bulk_csv import RowColumns
from pipeline.transform.apply import PropertyChanges, changes_for_config
from pipeline.transform.envelope import Source
from pipeline.transform.reads import envelope_from_record
from pipeline.transform.schema import schema_from_describe

FIELDS: list[dict[str, Any]] = [
    {"name": "Id", "type": "id"},
    {"name": "Name", "type": "string"},
    {"name": "AccountNumber", "type": "string", "unique": True},
    {"name": "AnnualRevenue", "type": "currency"},
    {"name": "NumberOfEmployees", "type": "int"},
    {"name": "Regions__c", "type": "multipicklist"},
    {"name": "Is_Active__c", "type": "boolean"},
    {"name": "Renewal_Date__c", "type": "date"},
    {"name": "Last_Touch__c", "type": "datetime"},
    {"name": "BillingAddress", "type": "address"},
    {"name": "BillingCity", "type": "string", "compoundFieldName": "BillingAddress"},
    {"name": "BillingCountry", "type": "string", "compoundFieldName": "BillingAddress"},
    {"name": "SystemModstamp", "type": "datetime"},
    {"name": "IsDeleted", "type": "boolean"},
]
SCHEMA = schema_from_describe({"name": "Account", "fields": FIELDS})
PROPERTIES = {
    "Name": "name",
    "AnnualRevenue": "revenue",
    "NumberOfEmployees": "employees",
    "Regions__c": "regions",
    "Is_Active__c": "active",
    "Renewal_Date__c": "renewal",
    "Last_Touch__c": "touched",
    "BillingAddress": "billing",
}
VALUES: dict[str, list[Any]] = {
    "Name": ["Acme", "", None, "x" * 1100, "Zoë"],
    "AccountNumber": ["A-1", "", None, "250.0", "250"],
    "AnnualRevenue": [1500000.0, 2.5, "1500000.0", None, 0, "n/a"],
    "NumberOfEmployees": [12, 12.0, "12", None],
    "Regions__c": ["APAC;EMEA", "APAC", None, ""],
    "Is_Active__c": [True, False, "true", "false", None],
    "Renewal_Date__c": ["2025-05-05", None, "2025-13-40"],
    "Last_Touch__c": ["2024-04-09T20:26:27.000+0000", "2024-04-09T20:26:27.000Z", None],
    "BillingCity": ["Oakland", None],
    "BillingCountry": ["US", None],
    "BillingAddress": [None],
    "SystemModstamp": ["2024-04-09T20:26:27.000+0000"],
    "IsDeleted": [False, "false", True, "true"],
}


def config(name_field: str, on_delete: str, *, twice: bool = False) -> MappingConfig:
    mapping = {
        "sfdc_object": "Account",
        "group_type": "account",
        "group_name_field": name_field,
        "group_properties": [
            {"sfdc_field": field, "amplitude_property": prop} for field, prop in PROPERTIES.items()
        ],
        "on_delete": on_delete,
    }
    mappings = [mapping]
    if twice:
        mappings.append({**mapping, "group_type": "company", "group_name_field": "Id"})
    return MappingConfig.model_validate(
        {"version": 1, "sync_cadence": {"mode": "hourly"}, "mappings": mappings}
    )


def record(rng: random.Random, number: int) -> dict[str, Any]:
    """A read of some fields (others not selected), values of every spelling."""
    found: dict[str, Any] = {"Id": f"001{number:015d}"}
    for name, values in VALUES.items():
        if rng.random() < 0.8:
            found[name] = rng.choice(values)
    if rng.random() < 0.1:
        found["BillingAddress"] = {"city": "Oakland"}  # REST nests a compound field
    if rng.random() < 0.05:
        found["attributes"] = {"type": "Account"}
    if rng.random() < 0.05:
        found["Owner.Name"] = "Ada"  # a Bulk relationship column
    return found


@pytest.mark.parametrize("name_field", ["Id", "AccountNumber"])
@pytest.mark.parametrize("on_delete", ["ignore", "unset", "mark"])
@pytest.mark.parametrize("twice", [False, True])
def test_every_read_means_what_the_stream_transform_says(
    name_field: str, on_delete: str, twice: bool
) -> None:
    cfg = config(name_field, on_delete, twice=twice)
    meaning = ReadMeaning("Account", cfg, SCHEMA)
    rng = random.Random(f"{name_field}-{on_delete}-{twice}")
    for number in range(600):
        read = record(rng, number)
        # Only REST nests a value (a compound field, attributes); a Bulk row is flat.
        source: Source = "rest" if dict in map(type, read.values()) else "bulk"
        envelope = envelope_from_record("Account", read, source=source, now_ms=number)
        expected = changes_for_config(envelope, cfg, SCHEMA)
        assert meaning.outcomes(read, source=source, now_ms=number) == expected, read


def test_flat_reads_take_the_fast_path() -> None:
    meaning = ReadMeaning("Account", config("Id", "ignore"), SCHEMA)
    assert meaning._flat is not None
    formula = [*FIELDS, {"name": "Score__c", "type": "double", "calculated": True,
                         "calculatedFormula": "NumberOfEmployees * 2"}]  # fmt: skip
    schema = schema_from_describe({"name": "Account", "fields": formula})
    cfg = config("Id", "ignore").model_dump(mode="json")
    cfg["mappings"][0]["group_properties"].append(
        {"sfdc_field": "Score__c", "amplitude_property": "score"}
    )
    following = ReadMeaning("Account", MappingConfig.model_validate(cfg), schema)
    assert following._flat is None  # formulas that follow fields: the general rules


def test_a_read_without_an_id_fails_as_the_envelope_does() -> None:
    meaning = ReadMeaning("Account", config("Id", "ignore"), SCHEMA)
    with pytest.raises(EnvelopeError):
        meaning.outcomes({"Name": "Acme"}, source="bulk", now_ms=0)


def test_digests_and_keys_follow_the_meaning_not_the_spelling() -> None:
    meaning = ReadMeaning("Account", config("Id", "ignore"), SCHEMA)
    stamp = "2024-04-09T20:26:27.000"
    bulk = {"Id": "001A", "AnnualRevenue": 1500000.0, "SystemModstamp": stamp + "Z"}
    rest = {"Id": "001A", "AnnualRevenue": 1500000, "SystemModstamp": stamp + "+0000",
            "IsDeleted": False, "attributes": {"type": "Account"}}  # fmt: skip
    changed = {**rest, "AnnualRevenue": 1500001}
    keys = [read_key(r["Id"], meaning.digest_of(r)) for r in (bulk, rest, changed)]
    assert keys[0] == keys[1] != keys[2]


def test_a_round_keeps_only_reads_that_differ_as_read_and_by_meaning() -> None:
    from datetime import UTC, datetime

    from pipeline.runtime.backfill.catch_up import catch_up_for

    class NoOrg:
        async def server_time(self) -> datetime | None:
            return None

        def query(self, soql: str, *, all_rows: bool = False) -> Any:
            raise AssertionError("not read here")

    fields = ["Id", "AnnualRevenue", "SystemModstamp"]
    start = datetime(2024, 4, 9, 20, 26, tzinfo=UTC)
    catch_up = catch_up_for(
        NoOrg(), "Account", fields, start, meaning=(config("Id", "mark"), SCHEMA)
    )
    stamp = "2024-04-09T20:26:27.000"
    bulk = {"Id": "001A", "AnnualRevenue": 1500000.0, "SystemModstamp": stamp + "+0000"}
    catch_up.track([bulk])
    assert catch_up.raw_key(bulk) in catch_up.raw_keys

    same = {**bulk, "IsDeleted": False}  # read again through Bulk (queryAll)
    spelled = {**bulk, "AnnualRevenue": 1500000, "attributes": {"type": "Account"}}  # REST
    changed = {**bulk, "AnnualRevenue": 1500001.0}
    deleted = {**bulk, "IsDeleted": True}
    assert catch_up.raw_key(spelled) not in catch_up.raw_keys
    assert catch_up.changed([same, spelled, changed, deleted]) == [changed, deleted]


BLOCK_COLUMNS = ["Id", *(name for name in VALUES if name != "BillingAddress")]


# What a Bulk page's typed columns hold (rest_converters): one type per column but None.
TYPED: dict[str, list[Any]] = {
    "Name": ["Acme", None, "Zoë"],
    "AnnualRevenue": [1500000.0, 2.5, 0.0, None, 1e20, float("nan")],
    "NumberOfEmployees": [12, None, 0],
    "Regions__c": ["APAC;EMEA", "APAC", None],
    "Is_Active__c": [True, False, None],
    "Renewal_Date__c": ["2025-05-05", None, "2025-13-40"],
    "Last_Touch__c": ["2024-04-09T20:26:27.000+0000", None],
}


LIVE: list[Any] = [False, None, "false"]  # IsDeleted of rows that are not deleted


def block(
    rng: random.Random,
    rows: int,
    columns: list[str] = BLOCK_COLUMNS,
    *,
    whole: bool = False,
    given: Mapping[str, list[Any]] = MappingProxyType({}),
) -> RowColumns:
    """Full-width Bulk rows of live records held column by column as a page's block:
    each column of one type as Bulk types it, or (one in three) of every spelling;
    ``whole``: every mapped value typed and present (no null, no empty text);
    ``given``: columns as they are given."""
    cells: list[list[Any]] = []
    for name in columns:
        typed = TYPED.get(name)
        values: list[Any]
        if name == "Id":
            values = [f"001{number:015d}" for number in range(rows)]
        elif name == "IsDeleted":
            values = [rng.choice(LIVE) for _ in range(rows)]
        elif whole:
            kinds = [v for v in typed or VALUES[name] if v is not None and v != ""]
            values = [rng.choice(kinds) for _ in range(rows)]
        else:
            kinds = typed if typed is not None and rng.random() < 0.67 else VALUES[name]
            values = [rng.choice(kinds) for _ in range(rows)]
        cells.append(given.get(name, values))
    return RowColumns(columns, cells)


@pytest.mark.parametrize("name_field", ["Id", "AccountNumber"])
@pytest.mark.parametrize("on_delete", ["ignore", "unset", "mark"])
@pytest.mark.parametrize("twice", [False, True])
def test_a_block_worked_out_column_by_column_means_what_each_row_means(
    name_field: str, on_delete: str, twice: bool
) -> None:
    cfg = config(name_field, on_delete, twice=twice)
    meaning = ReadMeaning("Account", cfg, SCHEMA)
    assert meaning._flat is not None
    rng = random.Random(f"block-{name_field}-{on_delete}-{twice}")
    for number in range(12):
        rows = block(rng, 300, whole=number < 3)
        by_columns = _block_outcomes(meaning._flat, rows, 7)
        assert by_columns is not None, "a block of live rows is worked out column by column"
        by_rows = [meaning.outcomes(row, source="bulk", now_ms=7) for row in rows]
        # repr tells 1 from 1.0 and True, which == does not.
        assert repr(_by_read(meaning._flat, by_columns)) == repr(by_rows)
        assert by_rows == [
            changes_for_config(envelope_from_record("Account", row, source="bulk", now_ms=7),
                               cfg, SCHEMA)
            for row in rows
        ]  # fmt: skip
        assert repr(meaning.outcomes_of(rows, source="bulk", now_ms=7)) == repr(by_rows)
        read = meaning.meaning_of(rows, source="bulk", now_ms=7)
        assert_batch_meaning(read, by_rows)
        if number < 3 and not twice:  # every row names a group: the changes alone
            assert read.each is None


def assert_batch_meaning(read: BatchMeaning, by_rows: list[Any]) -> None:
    """``read`` holds the changes of ``by_rows`` (each read's outcomes) in order."""
    changes = [o for outcomes in by_rows for _, o in outcomes if isinstance(o, PropertyChanges)]
    assert repr(read.changes) == repr(changes)
    assert read.others == sum(map(len, by_rows)) - len(changes)
    assert repr([read.outcomes(index) for index in range(len(by_rows))]) == repr(by_rows)


def test_each_update_of_a_block_owns_its_lists() -> None:
    meaning = ReadMeaning("Account", config("Id", "ignore"), SCHEMA)
    assert meaning._flat is not None
    rows = block(random.Random(0), 2, given={"Regions__c": ["APAC;EMEA", "APAC;EMEA"]})
    assert _block_outcomes(meaning._flat, rows, 0) is not None
    first, second = (
        outcomes[0][1] for outcomes in meaning.outcomes_of(rows, source="bulk", now_ms=0)
    )
    assert isinstance(first, PropertyChanges)
    assert isinstance(second, PropertyChanges)
    assert first.set["regions"] == second.set["regions"] == ["APAC", "EMEA"]
    assert first.set["regions"] is not second.set["regions"]


@pytest.mark.parametrize(
    "change",
    ["a deleted row", "a column not read", "a row without an Id"],
)
def test_a_block_that_needs_other_rules_is_worked_out_row_by_row(change: str) -> None:
    meaning = ReadMeaning("Account", config("AccountNumber", "mark"), SCHEMA)
    assert meaning._flat is not None
    assert _block_outcomes(meaning._flat, block(random.Random(change), 50), 7) is not None
    if change == "a deleted row":
        rows = block(random.Random(change), 50, given={"IsDeleted": [False] * 49 + ["true"]})
    elif change == "a column not read":
        rows = block(random.Random(change), 50, [c for c in BLOCK_COLUMNS if c != "Name"])
    else:
        ids: list[Any] = [f"001{number:015d}" for number in range(49)]
        rows = block(random.Random(change), 50, given={"Id": [*ids, None]})
    assert _block_outcomes(meaning._flat, rows, 7) is None
    if change == "a row without an Id":
        with pytest.raises(EnvelopeError):
            meaning.outcomes_of(rows, source="bulk", now_ms=7)
        return
    by_rows = [meaning.outcomes(row, source="bulk", now_ms=7) for row in rows]
    assert repr(meaning.outcomes_of(rows, source="bulk", now_ms=7)) == repr(by_rows)
    assert_batch_meaning(meaning.meaning_of(rows, source="bulk", now_ms=7), by_rows)


@pytest.mark.parametrize(
    "props",
    [
        (),
        ("name",),
        ("k1", "v0", "rows", "a b", "é", "{}", "'", "__builtins__"),
        tuple(map(str, range(300))),
    ],
)
def test_row_sets_are_dicts_of_the_properties_and_each_row(props: tuple[str, ...]) -> None:
    rows = [tuple(f"{row}:{prop}" for prop in props) for row in range(3)]

    sets = _row_sets(props)(iter(rows))

    assert sets == [dict(zip(props, row, strict=True)) for row in rows]
    assert [list(values) for values in sets] == [list(props)] * 3  # in the plan's order
    assert len({id(values) for values in sets}) == 3  # a dict of its own per row


@pytest.mark.parametrize("column", ["Name", "NumberOfEmployees", "Is_Active__c"])
def test_a_null_in_the_last_row_of_a_whole_block_is_unset(column: str) -> None:
    meaning = ReadMeaning("Account", config("Id", "ignore"), SCHEMA)
    assert meaning._flat is not None
    rows = block(random.Random(column), 40, whole=True)
    cells = list(rows.column(column) or [])
    rows = block(random.Random(column), 40, whole=True, given={column: [*cells[:-1], None]})

    by_rows = [meaning.outcomes(row, source="bulk", now_ms=7) for row in rows]

    assert repr(meaning.outcomes_of(rows, source="bulk", now_ms=7)) == repr(by_rows)
    last = by_rows[-1][0][1]
    assert isinstance(last, PropertyChanges)
    assert last.unset
    assert None not in last.set.values()
