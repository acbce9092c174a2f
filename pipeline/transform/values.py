"""Salesforce values to what Amplitude stores as group properties.

The same value reaches sfamp in several spellings: CometD CDC JSON
(``2024-04-26T18:38:05.000Z``), REST JSON (``2024-04-26T18:38:05.000+0000``),
Bulk CSV, where everything is a string and an empty cell is null, and the text
of a value looked up at flush time. This is the one conversion per Salesforce
field type, used by every path for property values and group names alike, so a
backfill, a re-read and a stream of the same record leave identical properties
in identically named groups:

- null and ``""`` -> ``None``, which the caller turns into ``$unset``
  (Salesforce stores no empty strings, so ``""`` only ever means null);
- numbers (``int``, ``long``, ``double``, ``currency``, ``percent``) -> ``int`` when
  integral, else ``float``; CSV text is parsed;
- ``boolean`` -> ``True``/``False``; CSV ``"true"``/``"false"`` too;
- ``multipicklist`` ``"A;B;C"`` -> ``["A", "B", "C"]``;
- ``date`` -> ``"YYYY-MM-DD"``; ``datetime`` -> ``"YYYY-MM-DDTHH:MM:SS.sssZ"`` in UTC;
- every other type, and any field without a known type, is kept as it came.

A value that does not parse as its type is kept as text rather than dropped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import orjson

from pipeline.transform.group_update import PropertyValue

# Integers beyond this are not exact in a JSON double; keep them as floats.
_MAX_EXACT: Final = 2**53
_DATETIME = re.compile(
    r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?"
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATE_CHARS: Final = len("YYYY-MM-DD")
_UTC_OFFSETS: Final = frozenset((None, "Z", "+0000", "+00:00", "-0000", "-00:00"))
_EPOCH_DAY: Final = date(1970, 1, 1)
_PLAIN: Final = frozenset((str, int, float, bool, list))


def to_property_value(value: Any, sf_type: str | None) -> PropertyValue | None:
    """The Amplitude form of ``value`` of Salesforce type ``sf_type``; ``None`` means unset."""
    if value is None or value == "":
        return None
    convert = _CONVERTERS.get(sf_type) if sf_type is not None else None
    if convert is not None:
        return convert(value)
    return value if type(value) in _PLAIN else keep_as_is(value)


def to_property_values(cells: Sequence[Any], sf_type: str | None) -> Sequence[Any]:
    """:func:`to_property_value` of every value of one field (a column of a result page),
    each list its own; ``cells`` itself when every value is kept as it is.

    Made for a column of one type (as a Bulk page's typed columns are): values kept as
    they are take no work per value, a number field's floats one list comprehension,
    dates as texts none, and any other type one call per distinct value.
    """
    kinds = set(map(type, cells)) - {type(None)}
    kept = kept_types(sf_type)
    if kinds <= kept or (sf_type == "date" and kinds == {str} and _dates_as_written(cells)):
        if str not in kinds or all(cells) or "" not in cells:  # (a truth test is quicker)
            return cells
        return [None if cell == "" else cell for cell in cells]
    if sf_type in _NUMBER_TYPES and kinds <= kept | {float}:
        return normalise_floats(cells)
    if len(kinds) == 1 and kinds <= _PLAIN - {list}:  # 1, 1.0 and True are one key
        table = {cell: to_property_value(cell, sf_type) for cell in dict.fromkeys(cells)}
        converted = [table[cell] for cell in cells]
    else:
        converted = [to_property_value(cell, sf_type) for cell in cells]
    if list not in set(map(type, converted)):
        return converted
    return [value.copy() if type(value) is list else value for value in converted]


def _dates_as_written(texts: Sequence[str | None]) -> bool:
    """Whether :func:`to_date` keeps each of ``texts`` as it is: one no longer than
    ``YYYY-MM-DD`` either is that date or holds none (then it is sent as it came)."""
    return max(map(len, filter(None, texts)), default=0) <= _DATE_CHARS


def to_group_value(value: Any, sf_type: str | None = None) -> str | None:
    """A group name from a field value of type ``sf_type``; ``None`` when null or empty.

    The value goes through the same conversion as a property first, so the name is
    the same whatever spelled it: ``250``, ``250.0`` and CSV ``"250.0"`` of a number
    field all name group ``250``; ``True`` and ``"true"`` name ``true``.
    """
    if value is None or value == "":
        return None
    if sf_type == "multipicklist":
        return str(value)  # "A;B" names one group; a list would not
    converted = to_property_value(value, sf_type)
    if converted is None:
        return None
    if isinstance(converted, bool):
        return "true" if converted else "false"
    if isinstance(converted, int | float):
        return str(to_number(converted))
    if isinstance(converted, str):
        return converted
    return orjson.dumps(converted, default=str).decode()


def compound_property(prop: str, component: str) -> str:
    """The property a component of a mapped compound field lands in: ``billing_address.City``."""
    return f"{prop}.{component}"


def kept_types(sf_type: str | None) -> frozenset[type]:
    """The types of value that :func:`to_property_value` returns unchanged for ``sf_type``
    (unless empty): a caller converting many values can skip the call for them. Lists are
    never among them, as every update must own its lists."""
    if sf_type is None or sf_type not in _CONVERTERS:
        return _KEPT_UNTYPED
    return _KEPT[sf_type]


def normalise_float(number: float) -> int | float:
    """A ``float`` of a number field as :func:`to_property_value` has it: integral ones
    as ``int`` (when exact)."""
    if number.is_integer() and abs(number) < _MAX_EXACT:
        return int(number)
    return number


def normalise_floats(values: Iterable[Any]) -> list[Any]:
    """:func:`normalise_float` of each ``float`` among ``values``, in one list comprehension;
    any other value as it is."""
    big = _MAX_EXACT
    return [
        int(v) if v.__class__ is float and v.is_integer() and -big < v < big else v for v in values
    ]


def keep_as_is(value: Any) -> PropertyValue:
    if isinstance(value, str | bool | int | float | list):
        return value
    # Amplitude has no nested objects; a structured value is kept readable as JSON text.
    return orjson.dumps(value, default=str).decode()


def to_number(value: Any) -> PropertyValue:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return normalise_float(value)
    if isinstance(value, str):
        return _parse_number(value)
    return keep_as_is(value)


def _parse_number(text: str) -> PropertyValue:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return normalise_float(number) if math.isfinite(number) else text


def to_boolean(value: Any) -> PropertyValue:
    if isinstance(value, str):
        lowered = value.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
    return keep_as_is(value)


def to_multipicklist(value: Any) -> PropertyValue:
    if isinstance(value, str):
        return [item for item in value.split(";") if item]
    return keep_as_is(value)


def to_date(value: Any) -> PropertyValue:
    if isinstance(value, str):
        match = _DATE.match(value)
        return match.group(0) if match else value
    if isinstance(value, int) and not isinstance(value, bool):
        # Pub/Sub spells dates as days since the epoch.
        try:
            return (_EPOCH_DAY + timedelta(days=value)).isoformat()
        except OverflowError:  # beyond year 9999: no date, so sent as it came
            return keep_as_is(value)
    return keep_as_is(value)


def to_datetime(value: Any) -> PropertyValue:
    if isinstance(value, str):
        return _parse_datetime(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        # Pub/Sub spells datetimes as epoch milliseconds.
        try:
            return _format_utc(datetime.fromtimestamp(value / 1000, UTC))
        except (OverflowError, OSError, ValueError):  # no such moment: sent as it came
            return keep_as_is(value)
    return keep_as_is(value)


def _parse_datetime(text: str) -> str:
    match = _DATETIME.fullmatch(text)
    if match is None:
        return text
    day, clock, fraction, offset = match.groups()
    millis = (fraction or "").ljust(3, "0")[:3]
    if offset in _UTC_OFFSETS:
        # The common case needs no calendar arithmetic.
        return f"{day}T{clock}.{millis}Z"
    if ":" not in offset:
        offset = f"{offset[:3]}:{offset[3:]}"
    try:
        moment = datetime.fromisoformat(f"{day}T{clock}.{millis}{offset}")
    except ValueError:
        return text
    return _format_utc(moment)


def _format_utc(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


_NUMBER_TYPES: Final = ("int", "long", "double", "currency", "percent")
_CONVERTERS: Final[dict[str, Callable[[Any], PropertyValue]]] = {
    **dict.fromkeys(_NUMBER_TYPES, to_number),
    "boolean": to_boolean,
    "multipicklist": to_multipicklist,
    "date": to_date,
    "datetime": to_datetime,
}
_KEPT_UNTYPED: Final = frozenset((str, int, float, bool))
_KEPT: Final[dict[str, frozenset[type]]] = {
    **dict.fromkeys(_NUMBER_TYPES, frozenset((int, bool))),  # not floats: see to_number
    "boolean": frozenset((bool, int, float)),
    "multipicklist": frozenset((bool, int, float)),
    "date": frozenset((bool, float)),
    "datetime": frozenset((bool,)),
}
