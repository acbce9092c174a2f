"""Field values: how they are stored, parsed from request bodies and printed per wire format.

Stored forms: datetimes as epoch milliseconds (int), dates as ``YYYY-MM-DD`` strings (which sort
correctly as text), booleans, ints, floats, and plain strings for every text-like type.

Numbers: ``int`` fields hold ints; ``double``, ``currency`` and ``percent`` fields hold floats
rounded half up to the field's scale on write (a ``Number(9, 0)`` given 250.4 stores 250.0).
REST and change events carry them as JSON numbers (``250.0``); Bulk API 2.0 CSV prints them as
Java prints a double: ``250.0``, and ``1.5E7`` from ten million up.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any

from sfamp_sandbox.salesforce.api_error import ApiError, json_parser_error
from sfamp_sandbox.salesforce.ids import to_18
from sfamp_sandbox.salesforce.schema import FieldDef

_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?"
    r"(Z|[+-]\d{2}:?\d{2})?$"
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_datetime_ms(text: str) -> int:
    """ISO 8601 as Salesforce accepts it (``Z``, ``+0000`` or ``+00:00``) -> epoch ms."""
    match = _DATETIME.match(text)
    if not match:
        raise ValueError(f"not a datetime: {text}")
    year, month, day, hour, minute = (int(match.group(i)) for i in range(1, 6))
    second = int(match.group(6) or 0)
    millis = int((match.group(7) or "0").ljust(3, "0")[:3])
    moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    offset = match.group(8) or "Z"
    offset_seconds = 0
    if offset != "Z":
        digits = offset[1:].replace(":", "")
        offset_seconds = int(digits[:2]) * 3600 + int(digits[2:]) * 60
        offset_seconds *= 1 if offset[0] == "+" else -1
    return (int(moment.timestamp()) - offset_seconds) * 1000 + millis


def parse_date(text: str) -> str:
    if not _DATE.match(text):
        raise ValueError(f"not a date: {text}")
    date.fromisoformat(text)
    return text


@lru_cache(maxsize=65536)
def _iso_millis(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{millis:03d}"


def datetime_rest(ms: int) -> str:
    """REST JSON form: ``2024-04-09T20:26:27.000+0000``."""
    return _iso_millis(ms) + "+0000"


def datetime_z(ms: int) -> str:
    """Bulk CSV and CometD form: ``2024-04-09T20:26:27.000Z``."""
    return _iso_millis(ms) + "Z"


def date_of_ms(ms: int) -> str:
    return _iso_millis(ms)[:10]


def to_rest(field: FieldDef, value: Any) -> Any:
    if value is None:
        return None
    if field.type == "datetime":
        return datetime_rest(value)
    return value


def to_cdc(field: FieldDef, value: Any) -> Any:
    if value is None:
        return None
    if field.type == "datetime":
        return datetime_z(value)
    return value


def java_double(value: float) -> str:
    """A double as Java's ``Double.toString`` prints it, which is what Bulk API CSV holds:
    ``250.0``, ``0.005``, ``1.5E7``, ``1.6147805824397E13``."""
    number = float(value)
    if number == 0 or 1e-3 <= abs(number) < 1e7:
        return repr(number)  # positional in this range, with at least one decimal, as Java
    sign = "-" if number < 0 else ""
    if number.is_integer() and abs(number) < 2**53:
        # Every integer below 2**53 is a double, so its own digits are the shortest.
        whole = str(int(abs(number)))
        significant = whole.rstrip("0")
        return f"{sign}{significant[0]}.{significant[1:] or '0'}E{len(whole) - 1}"
    if not math.isfinite(number):
        return _java_double_decimal(number)
    # Python's repr holds the shortest digits that round-trip, as Java's do: move its point.
    mantissa, _, exponent = repr(abs(number)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    significant = digits.lstrip("0")
    power = len(whole) + int(exponent or 0) - (len(digits) - len(significant)) - 1
    significant = significant.rstrip("0")
    return f"{sign}{significant[0]}.{significant[1:] or '0'}E{power}"


def _java_double_decimal(number: float) -> str:
    sign, digits, exponent = Decimal(repr(number)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    power = len(text) - 1 + exponent
    return f"{'-' if sign else ''}{text[0]}.{text[1:] or '0'}E{power}"


def _round_to_scale(number: float, scale: int) -> float:
    quantum = Decimal(1).scaleb(-scale)
    return float(Decimal(repr(number)).quantize(quantum, rounding=ROUND_HALF_UP))


def _coerce_number(field: FieldDef, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(value)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    if field.type == "int":
        if not number.is_integer():
            raise ValueError(value)
        return int(number)
    return _round_to_scale(number, field.scale)


def _coerce_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    raise ValueError(value)


def _coerce_text(field: FieldDef, value: Any) -> str:
    if isinstance(value, bool | dict | list):
        raise ValueError(value)
    text = str(value)
    if field.type == "reference":
        return to_18(text)
    if field.length and len(text) > field.length:
        raise ApiError(
            400,
            "STRING_TOO_LONG",
            f"{field.label}: data value too large: {text[:20]}... (max length={field.length})",
            (field.name,),
        )
    return text


def coerce(field: FieldDef, value: Any) -> Any:
    """A value from a JSON request body in its stored form; ApiError when it does not fit."""
    if value is None:
        return False if field.type == "boolean" and not field.nillable else None
    try:
        if field.type in {"int", "double", "currency", "percent"}:
            return _coerce_number(field, value)
        if field.type == "boolean":
            return _coerce_boolean(value)
        if field.type == "date":
            return parse_date(str(value))
        if field.type == "datetime":
            return parse_datetime_ms(str(value))
        return _coerce_text(field, value)
    except ValueError as exc:
        raise json_parser_error(
            f"Cannot deserialize instance of {field.type} from value {value!r} "
            f"for field {field.name}"
        ) from exc
