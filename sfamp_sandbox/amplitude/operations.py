"""Group property operations, applied the way Amplitude's servers apply them.

Pure functions over plain dicts. The order in which the operations of one
identification take effect is Amplitude's server order (the official SDKs keep
the same order so that client and server agree):
clearAll → unset → set → setOnce → add → append → prepend → preInsert →
postInsert → remove.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OPERATION_ORDER = (
    "$clearAll",
    "$unset",
    "$set",
    "$setOnce",
    "$add",
    "$append",
    "$prepend",
    "$preInsert",
    "$postInsert",
    "$remove",
)
KNOWN_OPERATIONS = frozenset(OPERATION_ORDER)
MAX_STRING_LENGTH = 1024


class InvalidPropertiesError(ValueError):
    """``group_properties`` cannot be applied; the message names the problem."""


def normalize_operations(group_properties: object, *, strict: bool = False) -> dict[str, Any]:
    """Turn ``group_properties`` into an operation map.

    A plain dict (no ``$`` keys) means ``$set`` of every key. A dict mixing plain
    keys and operations is refused in strict mode; otherwise only the operations
    are kept, as Amplitude's docs say ordinary properties belong inside ``$set``.
    Unknown ``$`` keys are ignored, as the server ignores what it does not know.
    """
    if not isinstance(group_properties, dict):
        raise InvalidPropertiesError("group_properties must be a JSON object")
    if len(group_properties) == 1 and isinstance(group_properties.get("$set"), dict):
        return {"$set": group_properties["$set"]}  # what clients send most, checked at once
    operation_keys = [key for key in group_properties if key.startswith("$")]
    if not operation_keys:
        return {"$set": group_properties} if group_properties else {}
    if strict and len(operation_keys) != len(group_properties):
        raise InvalidPropertiesError("group_properties mixes plain keys and operations")
    operations: dict[str, Any] = {}
    for key in operation_keys:
        if key not in KNOWN_OPERATIONS:
            continue
        value = group_properties[key]
        if key != "$clearAll" and not isinstance(value, dict):
            raise InvalidPropertiesError(f"group_properties.{key} must be a JSON object")
        operations[key] = value
    return operations


def is_normalized(group_properties: object) -> bool:
    """True when ``group_properties`` is already what :func:`normalize_operations` returns
    for it (known operations only, each an object but ``$clearAll``), so it can serve as
    the operation map itself."""
    if type(group_properties) is not dict:
        return False
    for key, value in group_properties.items():
        if key not in KNOWN_OPERATIONS or (type(value) is not dict and key != "$clearAll"):
            return False
    return True


def count_property_keys(operations: Mapping[str, Any]) -> int:
    """Property keys named by an operation map (what the 1024-property limit counts)."""
    return sum(len(value) for key, value in operations.items() if key != "$clearAll")


_UNCUT = frozenset((int, float, bool, type(None)))


def truncate_value(value: Any) -> Any:
    """Cut every string (also inside arrays and objects) to Amplitude's 1024 characters."""
    if type(value) in _UNCUT:
        return value  # the common case first: a backfill sends mostly numbers and short text
    if isinstance(value, str):
        return value if len(value) <= MAX_STRING_LENGTH else value[:MAX_STRING_LENGTH]
    if isinstance(value, list):
        return [truncate_value(item) for item in value]
    if isinstance(value, dict):
        return {key: truncate_value(item) for key, item in value.items()}
    return value


def apply_operations(properties: dict[str, Any], operations: Mapping[str, Any]) -> None:
    """Apply one identification's operations to a group's stored properties, in place."""
    values, unset = operations.get("$set"), operations.get("$unset")
    if len(operations) == (values is not None) + (unset is not None):
        # What clients send most, $set and sometimes $unset, without the walk through
        # every operation name (unset applies first, as in OPERATION_ORDER).
        if unset:
            for key in unset:
                properties.pop(key, None)
        if values:
            set_all(properties, values)
        return
    for name in OPERATION_ORDER:
        if name not in operations:
            continue
        if name == "$clearAll":
            properties.clear()
            continue
        for key, value in operations[name].items():
            _APPLY[name](properties, key, truncate_value(value))


def set_all(props: dict[str, Any], values: Mapping[str, Any]) -> None:
    """``$set`` of every key of ``values``, strings cut as :func:`truncate_value` cuts them.

    Every value is stored as it is first (one C-level update, in the order of
    ``values``), then the few that need a cut or a copy are replaced in place: a
    backfill sends mostly numbers and short strings, which then cost a type check each.
    """
    props.update(values)
    for key, value in values.items():
        kind = type(value)
        if kind in _UNCUT or (kind is str and len(value) <= MAX_STRING_LENGTH):
            continue
        if kind is list and _short_strings(value):
            props[key] = list(value)  # a copy, as truncate_value makes
        else:
            props[key] = truncate_value(value)


def _short_strings(items: list[Any]) -> bool:
    """True when every item is a string and none is longer than the cut (checked in C)."""
    try:
        return len("".join(items)) <= MAX_STRING_LENGTH
    except TypeError:
        return False


def _set(props: dict[str, Any], key: str, value: Any) -> None:
    props[key] = value


def _unset(props: dict[str, Any], key: str, _value: Any) -> None:
    props.pop(key, None)


def _set_once(props: dict[str, Any], key: str, value: Any) -> None:
    props.setdefault(key, value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _add(props: dict[str, Any], key: str, value: Any) -> None:
    current = props.get(key, 0)
    # Adding to (or adding) a non-number is ignored rather than refused.
    if _is_number(value) and _is_number(current):
        props[key] = current + value


def _as_list(current: Any) -> list[Any]:
    if current is None:
        return []
    return list(current) if isinstance(current, list) else [current]


def _items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _append(props: dict[str, Any], key: str, value: Any) -> None:
    props[key] = _as_list(props.get(key)) + _items(value)


def _prepend(props: dict[str, Any], key: str, value: Any) -> None:
    props[key] = list(reversed(_items(value))) + _as_list(props.get(key))


def _pre_insert(props: dict[str, Any], key: str, value: Any) -> None:
    current = _as_list(props.get(key))
    new = [item for item in _items(value) if item not in current]
    props[key] = list(reversed(new)) + current


def _post_insert(props: dict[str, Any], key: str, value: Any) -> None:
    current = _as_list(props.get(key))
    props[key] = current + [item for item in _items(value) if item not in current]


def _remove(props: dict[str, Any], key: str, value: Any) -> None:
    if key in props:
        drop = _items(value)
        props[key] = [item for item in _as_list(props[key]) if item not in drop]


_APPLY = {
    "$set": _set,
    "$unset": _unset,
    "$setOnce": _set_once,
    "$add": _add,
    "$append": _append,
    "$prepend": _prepend,
    "$preInsert": _pre_insert,
    "$postInsert": _post_insert,
    "$remove": _remove,
}
