"""Pydantic's validation errors of a mapping document in the mapping's own words: a JSON
path (``$.mappings[0].on_delete``) and a message that names what was expected and what
was given, the mode a key belongs to, or the nearest known key to a misspelt one."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import get_args

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from pipeline.config.mapping import MappingConfig, ObjectMapping, PropertyMapping
from pipeline.errors import Problem
from pipeline.wording import nearest, not_one_of


def problem_of(error: ErrorDetails) -> Problem:
    """One pydantic error as a :class:`Problem` at the path the user wrote."""
    return Problem(json_path(_loc(error)), _message(error))


# The keys whose value is a union told apart by its "mode", and the modes of each.
_MODES = {"sync_cadence": ("daily", "hourly", "interval"), "reconcile": ("daily", "hourly", "off")}
_FRIENDLY = {
    "missing": "is required",
    "extra_forbidden": "is not a known key of the mapping format",
    "too_short": "must not be empty",
}


def json_path(loc: Sequence[int | str]) -> str:
    path = "$"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _message(error: ErrorDetails) -> str:
    modes = _MODES.get(str(error["loc"][0])) if error["loc"] else None
    if modes is not None and error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        if error["type"] == "union_tag_invalid":
            given = str(error.get("ctx", {}).get("tag", ""))
            return (
                f"mode {given!r} is not one of " + ", ".join(map(repr, modes)) + _hint(given, modes)
            )
        return f"needs a 'mode': {modes[0]!r}, {modes[1]!r} or {modes[2]!r}"
    if error["type"] == "literal_error":
        return not_one_of(error.get("input"), error.get("ctx", {}).get("expected", ""))
    friendly = _FRIENDLY.get(error["type"])
    if friendly and error["type"] == "extra_forbidden" and error["loc"]:
        key = str(error["loc"][-1])
        if modes is not None and len(error["loc"]) == 3:
            return _not_a_key_of_mode(str(error["loc"][0]), str(error["loc"][1]), key)
        if key in _known_keys():  # a known key, one level off
            return f"is not a key here: {key!r} belongs {_where_keys_go(key)}"
        return friendly + _hint(key, _known_keys())
    if friendly:
        return friendly
    wanted = _WANTED.get(error["type"])
    if wanted is not None:
        return f"{wanted}, not {json_kind(error.get('input'))}"
    bound = _BOUNDS.get(error["type"])
    if bound is not None:
        word, key = bound
        return f"must be {word} {error.get('ctx', {}).get(key)}"
    message = error["msg"]
    return message.removeprefix("Value error, ")


# What a value of the wrong JSON kind should have been, by pydantic error type.
_WANTED = {
    "model_type": "must be a JSON object ({...})",
    "model_attributes_type": "must be a JSON object ({...})",
    "dict_type": "must be a JSON object ({...})",
    "list_type": "must be a JSON list ([...])",
    "string_type": "must be text (a JSON string)",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_type": "must be true or false",
}
_BOUNDS = {
    "greater_than_equal": ("at least", "ge"),
    "less_than_equal": ("at most", "le"),
    "greater_than": ("more than", "gt"),
    "less_than": ("less than", "lt"),
}


def json_kind(value: object) -> str:
    """A value as the JSON a user wrote it: ``an object``, ``a list``, ``text '-1'``,
    ``1.5``, ``true``, ``null``."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:40] + "..."
        return f"text {shown!r}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _not_a_key_of_mode(section: str, mode: str, key: str) -> str:
    """``"at"`` under ``"mode": "hourly"``: which keys this mode takes, and which mode has it
    (or the key of any mode it is a misspelling of)."""
    keys = _mode_keys(section)
    takes = [name for name in keys[mode] if name != "mode"]
    own = f"is not a key of mode {mode!r}, which takes " + (
        ", ".join(map(repr, takes)) if takes else "no other key"
    )
    close = nearest(key, [name for names in keys.values() for name in names if name != "mode"])
    if close is None:
        return own
    if close in takes:
        return f"{own} (did you mean {close!r}?)"
    other = next(name for name, names in keys.items() if close in names)
    if close == key:
        return f"{own}; {key!r} belongs to mode {other!r}"
    return f"{own}; {close!r} belongs to mode {other!r} (did you mean it?)"


@functools.cache
def _mode_keys(section: str) -> dict[str, list[str]]:
    """Per mode of ``sync_cadence`` or ``reconcile``, the keys its model takes."""
    variants = get_args(MappingConfig.model_fields[section].annotation)
    return {
        get_args(variant.model_fields["mode"].annotation)[0]: list(variant.model_fields)
        for variant in variants
        if isinstance(variant, type) and issubclass(variant, BaseModel)
    }


def _where_keys_go(key: str) -> str:
    """Where a key of the mapping format goes (:func:`_message`, for one put a level off)."""
    top = "at the top level of the document, beside 'mappings' (one serves every mapping)"
    places: list[tuple[type[BaseModel], str]] = [
        (MappingConfig, top),
        (ObjectMapping, "in a mapping (an entry of 'mappings')"),
        (PropertyMapping, "in a group property (an entry of 'group_properties')"),
    ]
    found = [place for model, place in places if key in model.model_fields]
    return " or ".join(found) or "under 'sync_cadence' or 'reconcile'"


def _hint(word: str, known: Sequence[str]) -> str:
    close = nearest(word, known)
    return f" (did you mean {close!r}?)" if close else ""


@functools.cache
def _known_keys() -> list[str]:
    """Every key the mapping format knows, at any depth (what a misspelt one is near)."""
    schema = MappingConfig.model_json_schema()
    models = [schema, *schema.get("$defs", {}).values()]
    return sorted({key for model in models for key in model.get("properties", {})})


def _loc(error: ErrorDetails) -> list[int | str]:
    loc = list(error["loc"])
    # Discriminated unions add the tag to the path; users never wrote it.
    if len(loc) > 1 and loc[1] in _MODES.get(str(loc[0]), ()):
        del loc[1]
    return loc
