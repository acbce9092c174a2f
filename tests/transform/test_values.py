"""Value conversion per Salesforce type, from CometD, REST and Bulk CSV spellings."""

from __future__ import annotations

import random
from typing import Any

import pytest

from pipeline.transform.values import (
    compound_property,
    kept_types,
    normalise_float,
    to_group_value,
    to_property_value,
    to_property_values,
)


@pytest.mark.parametrize(
    ("sf_type", "value", "expected"),
    [
        # null: JSON null everywhere, the empty cell in CSV
        ("string", None, None),
        ("string", "", None),
        ("double", "", None),
        ("boolean", "", None),
        # strings and string-like types stay as they are
        ("string", "Acme", "Acme"),
        ("picklist", "Hot", "Hot"),
        ("reference", "005RM000001hv4SYAQ", "005RM000001hv4SYAQ"),
        ("time", "20:26:27.000Z", "20:26:27.000Z"),
        # numbers: JSON numbers and CSV text read the same
        ("int", 42, 42),
        ("int", "42", 42),
        ("long", "9007199254740993", 9007199254740993),
        ("double", 2.5, 2.5),
        ("double", "2.5", 2.5),
        ("currency", 1500000.0, 1500000),
        ("currency", "1500000.0", 1500000),
        ("currency", 1500000, 1500000),
        ("percent", "12.75", 12.75),
        ("double", "-0.5", -0.5),
        ("double", "1e21", 1e21),
        ("double", "not a number", "not a number"),
        ("double", "NaN", "NaN"),
        # booleans
        ("boolean", True, True),
        ("boolean", False, False),
        ("boolean", "true", True),
        ("boolean", "false", False),
        ("boolean", "TRUE", True),
        ("boolean", "maybe", "maybe"),
        # multi-select picklists
        ("multipicklist", "A;B;C", ["A", "B", "C"]),
        ("multipicklist", "Only", ["Only"]),
        ("multipicklist", ["A", "B"], ["A", "B"]),
        # dates
        ("date", "2024-04-09", "2024-04-09"),
        ("date", 19822, "2024-04-09"),
        # datetimes: CometD, REST, CSV, Pub/Sub forms -> ISO 8601 UTC with milliseconds
        ("datetime", "2024-04-26T18:38:05.000Z", "2024-04-26T18:38:05.000Z"),
        ("datetime", "2024-04-09T20:26:27.000+0000", "2024-04-09T20:26:27.000Z"),
        ("datetime", "2024-04-09T20:26:27Z", "2024-04-09T20:26:27.000Z"),
        ("datetime", "2024-04-09T20:26:27.5+00:00", "2024-04-09T20:26:27.500Z"),
        ("datetime", "2024-04-09T20:26:27.123456Z", "2024-04-09T20:26:27.123Z"),
        ("datetime", "2024-04-09T22:26:27.000+0200", "2024-04-09T20:26:27.000Z"),
        ("datetime", "2024-04-09T00:30:00.000-05:30", "2024-04-09T06:00:00.000Z"),
        ("datetime", 1714156685000, "2024-04-26T18:38:05.000Z"),
        ("datetime", "yesterday", "yesterday"),
        # unknown and untyped: kept as they came
        ("anyType", "x", "x"),
        ("complexvalue", {"a": 1}, '{"a":1}'),
        (None, "2024-04-09T20:26:27.000+0000", "2024-04-09T20:26:27.000+0000"),
        (None, "true", "true"),
        (None, 7, 7),
        (None, ["x"], ["x"]),
        (None, "", None),
    ],
)
def test_conversion(sf_type: str | None, value: Any, expected: Any) -> None:
    converted = to_property_value(value, sf_type)
    assert converted == expected
    assert type(converted) is type(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Acme", "Acme"),
        ("", None),
        (None, None),
        (42, "42"),
        (42.0, "42"),
        (True, "true"),
    ],
)
def test_group_value(value: Any, expected: str | None) -> None:
    assert to_group_value(value) == expected


@pytest.mark.parametrize(
    ("sf_type", "spellings", "expected"),
    [
        # CDC and REST JSON, Bulk CSV, and str() of a value read at flush time
        ("double", [250, 250.0, "250", "250.0"], "250"),
        ("currency", [1500000.5, "1500000.5"], "1500000.5"),
        ("int", [7, "7", "7.0"], "7"),
        ("boolean", [True, "true", "True"], "true"),
        ("boolean", [False, "false", "False"], "false"),
        (
            "datetime",
            ["2024-04-26T18:38:05.000Z", "2024-04-26T18:38:05.000+0000"],
            "2024-04-26T18:38:05.000Z",
        ),
        ("date", ["2024-04-09"], "2024-04-09"),
        ("multipicklist", ["A;B"], "A;B"),
        ("string", ["007", "250.0"], None),
    ],
)
def test_group_value_is_the_same_whatever_spelled_it(
    sf_type: str, spellings: list[Any], expected: str | None
) -> None:
    names = {to_group_value(spelling, sf_type) for spelling in spellings}
    if expected is None:  # text stays exactly as it is
        assert names == {str(spelling) for spelling in spellings}
    else:
        assert names == {expected}


def test_compound_property_name() -> None:
    assert compound_property("billing_address", "City") == "billing_address.City"


@pytest.mark.parametrize(
    ("value", "sf_type"),
    [(10**12, "date"), (-(10**12), "date"), (10**20, "datetime"), (1e300, "datetime")],
)
def test_a_number_beyond_the_calendar_is_sent_as_it_came(value: Any, sf_type: str) -> None:
    # A malformed event must not stop the pump: no date exists past year 9999.
    assert to_property_value(value, sf_type) == value


SAMPLES: list[Any] = ["Acme", "2025-05-05", "true", "A;B", 0, 12, 19_000, True, False, 2.5, 3.0]
TYPES = ["string", "picklist", "int", "double", "currency", "boolean", "multipicklist",
         "date", "datetime", "time", None]  # fmt: skip


@pytest.mark.parametrize("sf_type", TYPES)
def test_kept_types_are_the_values_converted_to_themselves(sf_type: str | None) -> None:
    kept = kept_types(sf_type)
    for value in SAMPLES:
        converted = to_property_value(value, sf_type)
        if type(value) in kept:
            assert converted is value, (sf_type, value)
    assert list not in kept  # every update owns its lists
    assert float not in kept or sf_type not in ("int", "double", "currency")


def test_a_number_fields_float_is_normalised_as_to_property_value_does() -> None:
    for number in (3.0, 2.5, -0.0, 2.0**60, float("nan"), float("inf")):
        expected = to_property_value(number, "double")
        assert repr(normalise_float(number)) == repr(expected)


# Values a column of each type may hold: as Bulk types them, and in other spellings.
COLUMN_VALUES: list[Any] = [
    *SAMPLES, None, "", "2025-13-40", "2025-05-05T10:00:00Z", "2025-05-05x", "2025-05",
    "1.5E3", "A;;B", ";",
    "2024-04-09T20:26:27.000+0000", 2.0**60, float("nan"), -0.0, 1e20, 20_000, 2**62, [1, 2],
]  # fmt: skip


@pytest.mark.parametrize("sf_type", TYPES)
def test_a_column_converts_as_each_of_its_values_does(sf_type: str | None) -> None:
    rng = random.Random(str(sf_type))
    by_type: dict[type, list[Any]] = {}
    for value in COLUMN_VALUES:
        by_type.setdefault(type(value), []).append(value)
    columns = [[rng.choice([*values, None]) for _ in range(200)] for values in by_type.values()]
    columns += [[rng.choice(COLUMN_VALUES) for _ in range(200)] for _ in range(5)]
    columns += [["2025-05-05", None, "2025-05-06"] * 3, ["2025-05-05", "2025-05-05x", ""]]
    columns += [[None] * 4, ["A;B", "A;B", None]]
    for cells in columns:
        converted = to_property_values(cells, sf_type)
        # repr tells 1 from 1.0 and True, and nan compares.
        assert repr(list(converted)) == repr([to_property_value(c, sf_type) for c in cells])
        lists = [id(value) for value in converted if type(value) is list]
        assert len(set(lists)) == len(lists), "every value owns its list"
        assert not set(lists) & {id(cell) for cell in cells}
