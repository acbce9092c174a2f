"""Validation of a ``/groupidentify`` request, in the order the emulator checks it.

Pure: parameters in, parsed identifications or a :class:`RequestRefused` out.
Amplitude rejects the whole request when any identification is invalid, with a
short text body naming the problem; the client's bisection relies on that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from sfamp_sandbox.amplitude.operations import (
    InvalidPropertiesError,
    count_property_keys,
    normalize_operations,
)

MAX_REQUEST_BYTES = 1_000_000
MAX_IDENTIFICATIONS = 1024
MAX_PROPERTY_KEYS = 1024


@dataclass(frozen=True, slots=True)
class IdentifyLimits:
    """Limits of ``/groupidentify``.

    Amplitude documents "1024 group properties per request" without saying
    whether that is per identification or summed over the request; the default
    is the stricter reading (summed), which a client that passes here also
    passes on the real service.
    """

    max_request_bytes: int = MAX_REQUEST_BYTES
    max_identifications: int = MAX_IDENTIFICATIONS
    max_property_keys: int = MAX_PROPERTY_KEYS
    property_limit_per_request: bool = True
    strict_operations: bool = False
    # Group values refused with a 400, to rehearse a rejected identification (tests, demo).
    blocked_group_values: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Identification:
    group_type: str
    group_value: str
    operations: dict[str, Any]


class RequestRefused(Exception):
    """The request is refused as a whole with ``status`` and a text ``body``."""

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{status} {body}")


def parse_identifications(raw: str | None, limits: IdentifyLimits) -> list[Identification]:
    """Parse the ``identification`` parameter (one JSON object or an array of them)."""
    if not raw:
        raise RequestRefused(400, "missing_event")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestRefused(400, "missing_event") from exc
    if isinstance(document, dict):
        items: list[Any] = [document]
    elif isinstance(document, list) and document:
        items = document
    else:
        raise RequestRefused(400, "missing_event")
    if len(items) > limits.max_identifications:
        raise RequestRefused(
            400, f"too_many_identifications: {len(items)} > {limits.max_identifications}"
        )
    parsed = [_identification(index, item, limits) for index, item in enumerate(items)]
    if limits.property_limit_per_request:
        total = sum(count_property_keys(item.operations) for item in parsed)
        if total > limits.max_property_keys:
            raise RequestRefused(
                400, f"too_many_properties: {total} > {limits.max_property_keys} in one request"
            )
    return parsed


def _identification(index: int, item: object, limits: IdentifyLimits) -> Identification:
    if not isinstance(item, dict):
        raise _invalid(index, "must be a JSON object")
    group_type = item.get("group_type")
    if not isinstance(group_type, str) or not group_type:
        raise _invalid(index, "group_type must be a non-empty string")
    group_value = _group_value(item.get("group_value"))
    if group_value is None:
        raise _invalid(index, "group_value must be a non-empty string or a number")
    if group_value in limits.blocked_group_values:
        raise _invalid(index, f"group_value {group_value!r} is not allowed")
    try:
        operations = normalize_operations(
            item.get("group_properties", {}), strict=limits.strict_operations
        )
    except InvalidPropertiesError as exc:
        raise _invalid(index, str(exc)) from exc
    if not limits.property_limit_per_request:
        keys = count_property_keys(operations)
        if keys > limits.max_property_keys:
            raise _invalid(index, f"too many properties: {keys} > {limits.max_property_keys}")
    return Identification(group_type, group_value, operations)


def _group_value(value: object) -> str | None:
    # A number is let through and stored as text, as third-party clients send them.
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and value:
        return value
    return None


def _invalid(index: int, problem: str) -> RequestRefused:
    return RequestRefused(400, f"invalid_identification: identification[{index}]: {problem}")
