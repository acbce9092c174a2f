"""Offline validation, loading and export of the mapping.

Validation reports every failure at once, each with a JSON path such as
``$.mappings[0].group_properties[2].amplitude_property``: the structural rules
come from the pydantic model, the cross-field rules (no field or property twice,
no two mappings of one group type writing the same property) are checked on the
raw document so they are reported even when other parts are malformed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import orjson
from pydantic import ValidationError

from pipeline.config.error_words import json_path, problem_of
from pipeline.config.mapping import MappingConfig
from pipeline.errors import MappingError, Problem
from pipeline.transform.apply import DELETED_PROPERTY
from pipeline.wording import plural


def _structure_problems(document: object) -> tuple[MappingConfig | None, list[Problem]]:
    try:
        return MappingConfig.model_validate(document), []
    except ValidationError as exc:
        return None, [problem_of(error) for error in exc.errors()]


def _entries(document: object) -> Iterator[tuple[int, dict[str, Any]]]:
    mappings = document.get("mappings") if isinstance(document, dict) else None
    if isinstance(mappings, list):
        for index, mapping in enumerate(mappings):
            if isinstance(mapping, dict):
                yield index, mapping


def _properties(mapping: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    properties = mapping.get("group_properties")
    if isinstance(properties, list):
        for index, prop in enumerate(properties):
            if isinstance(prop, dict):
                yield index, prop


def _one_to_one_problems(document: object) -> list[Problem]:
    """Within a mapping, neither a Salesforce field nor an Amplitude property repeats.

    Salesforce API names ignore case (``Name`` and ``name`` are one field); Amplitude
    property names do not.
    """
    problems = []
    rules = (
        ("sfdc_field", "Salesforce field", str.lower, "one field maps to one property"),
        ("amplitude_property", "property", str, "a property comes from one field"),
    )
    for m, mapping in _entries(document):
        for key, what, same, rule in rules:
            first_seen: dict[str, tuple[int, str]] = {}
            for p, prop in _properties(mapping):
                value = prop.get(key)
                if not isinstance(value, str):
                    continue
                seen = first_seen.setdefault(same(value), (p, value))
                if seen[0] == p:
                    continue
                spelt = (
                    "" if seen[1] == value else f" as {seen[1]!r} (Salesforce names ignore case)"
                )
                problems.append(
                    Problem(
                        f"$.mappings[{m}].group_properties[{p}].{key}",
                        f"{what} {value!r} is already mapped at "
                        f"group_properties[{seen[0]}]{spelt}; {rule}",
                    )
                )
    return problems


def _shared_group_type_problems(document: object) -> list[Problem]:
    """Two mappings of one group type must not write the same property."""
    writers: dict[tuple[str, str], int] = {}
    problems = []
    for m, mapping in _entries(document):
        group_type = mapping.get("group_type")
        if not isinstance(group_type, str):
            continue
        seen_here: set[str] = set()
        for p, prop in _properties(mapping):
            name = prop.get("amplitude_property")
            if not isinstance(name, str) or name in seen_here:
                continue
            seen_here.add(name)
            owner = writers.setdefault((group_type, name), m)
            if owner != m:
                problems.append(
                    Problem(
                        f"$.mappings[{m}].group_properties[{p}].amplitude_property",
                        f"property {name!r} of group type {group_type!r} is already written "
                        f"by mappings[{owner}]",
                    )
                )
    return problems


# Group properties a mapping may write in all, as Amplitude's own Salesforce source
# validates its mapping (a project keeps at most 1,000 group properties).
MAX_GROUP_PROPERTIES: Final = 1_000


def _property_count_problems(document: object) -> list[Problem]:
    written = {
        (str(mapping.get("group_type")), str(prop.get("amplitude_property")))
        for _, mapping in _entries(document)
        for _, prop in _properties(mapping)
    }
    if len(written) <= MAX_GROUP_PROPERTIES:
        return []
    return [
        Problem(
            "$.mappings",
            f"writes {len(written):,} group properties; Amplitude keeps at most "
            f"{MAX_GROUP_PROPERTIES:,} per project: map fewer fields",
        )
    ]


def _marked_property_problems(document: object) -> list[Problem]:
    """``on_delete: "mark"`` writes ``sfdc_deleted`` on its group type: no mapping of that
    group type may map a field to it too."""
    marked = {
        mapping.get("group_type")
        for _, mapping in _entries(document)
        if mapping.get("on_delete") == "mark" and isinstance(mapping.get("group_type"), str)
    }
    return [
        Problem(
            f"$.mappings[{m}].group_properties[{p}].amplitude_property",
            f"property {DELETED_PROPERTY!r} of group type {mapping.get('group_type')!r} is "
            'written by on_delete "mark"; map the field to another property',
        )
        for m, mapping in _entries(document)
        if isinstance(mapping.get("group_type"), str) and mapping.get("group_type") in marked
        for p, prop in _properties(mapping)
        if prop.get("amplitude_property") == DELETED_PROPERTY
    ]


def _marked_twice_problems(document: object) -> list[Problem]:
    """One mapping per group type may mark deletes: two would both write ``sfdc_deleted``,
    and a delete of either object's record would mark a group whose other record lives."""
    marking: dict[str, int] = {}
    problems = []
    for m, mapping in _entries(document):
        group_type = mapping.get("group_type")
        if mapping.get("on_delete") != "mark" or not isinstance(group_type, str):
            continue
        owner = marking.setdefault(group_type, m)
        if owner != m:
            problems.append(
                Problem(
                    f"$.mappings[{m}].on_delete",
                    f'on_delete "mark" of group type {group_type!r} is already set by '
                    f"mappings[{owner}], and both would write {DELETED_PROPERTY!r}; mark "
                    'deletes in one mapping of the group type ("ignore" or "unset" here)',
                )
            )
    return problems


def _duplicate_relation_problems(document: object) -> list[Problem]:
    seen: dict[tuple[str, str], int] = {}
    problems = []
    for m, mapping in _entries(document):
        pair = (mapping.get("sfdc_object"), mapping.get("group_type"))
        if not all(isinstance(v, str) for v in pair):
            continue
        first = seen.setdefault(pair, m)  # type: ignore[arg-type]
        if first != m:
            problems.append(
                Problem(
                    f"$.mappings[{m}]",
                    f"relation {pair[0]} -> {pair[1]} is already defined at mappings[{first}]",
                )
            )
    return problems


def group_type_problems(document: object, limit: int) -> list[Problem]:
    """Amplitude tracks at most ``limit`` group types per project and ignores any beyond.

    It accepts identifications of a further type and drops them, so a mapping
    with too many types would lose whole relations without an error anywhere.
    """
    seen: list[str] = []
    problems = []
    for m, mapping in _entries(document):
        group_type = mapping.get("group_type")
        if not isinstance(group_type, str) or group_type in seen:
            continue
        seen.append(group_type)
        if len(seen) > limit:
            problems.append(
                Problem(
                    f"$.mappings[{m}].group_type",
                    f"group type {group_type!r} is number {len(seen)}: Amplitude tracks at most "
                    f"{limit} group types per project and ignores the others "
                    "(SFAMP_AMPLITUDE__MAX_GROUP_TYPES)",
                )
            )
    return problems


def check_group_types(mapping: MappingConfig, limit: int) -> None:
    """Raise MappingError when ``mapping`` writes more group types than Amplitude tracks."""
    problems = group_type_problems(mapping.model_dump(mode="json"), limit)
    if problems:
        raise MappingError(f"the mapping has more than {limit} group types", problems)


def validate_document(
    document: object, *, max_group_types: int | None = None
) -> tuple[MappingConfig | None, list[Problem]]:
    """Validate a parsed JSON document; the model is None unless there are no problems.

    ``max_group_types`` also checks Amplitude's group-type limit (a setting).
    """
    if not isinstance(document, dict):
        kinds = {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
        kind = kinds.get(type(document), "a number")
        return None, [Problem("$", f"must be a JSON object ({{...}}), not {kind}")]
    model, problems = _structure_problems(document)
    problems += _one_to_one_problems(document)
    problems += _shared_group_type_problems(document)
    problems += _property_count_problems(document)
    problems += _marked_property_problems(document)
    problems += _marked_twice_problems(document)
    problems += _duplicate_relation_problems(document)
    if max_group_types is not None:
        problems += group_type_problems(document, max_group_types)
    problems.sort(key=lambda p: p.path)
    return (model if not problems else None), problems


def parse_mapping(text: str | bytes, *, source: str = "mapping") -> MappingConfig:
    """Parse and validate mapping JSON, raising MappingError with every problem."""
    return _require_valid(_loads(text, source), source)


def _loads(text: str | bytes, source: object) -> object:
    """JSON, after a UTF-8 byte-order mark if there is one (Windows editors write one)."""
    if isinstance(text, bytes):
        text = text.removeprefix(b"\xef\xbb\xbf")
    else:
        text = text.removeprefix("\ufeff")
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if isinstance(text, bytes):
            _check_utf8(text, source)  # says so when the file is not UTF-8 text at all
        raise MappingError(f"{source} is not valid JSON: {exc}") from exc
    repeated = _repeated_keys(text)
    if repeated:
        raise MappingError(f"{source} has {plural(len(repeated), 'problem')}", repeated)
    return document


class _Pairs(list[tuple[str, Any]]):
    """A JSON object's members in order, repeated keys included."""


def _repeated_keys(text: str | bytes) -> list[Problem]:
    """A key given twice in one object: JSON parsers keep the last, so a copy-paste slip
    (two ``amplitude_property`` in one entry) would otherwise change a mapping unseen."""
    try:
        tree = json.loads(text, object_pairs_hook=_Pairs)
    except (RecursionError, ValueError):  # orjson read it: nothing more to find here
        return []
    problems: list[Problem] = []
    pending: list[tuple[object, list[int | str]]] = [(tree, [])]
    while pending:
        node, loc = pending.pop()
        if isinstance(node, _Pairs):
            counts: dict[str, int] = {}
            for key, value in node:
                counts[key] = counts.get(key, 0) + 1
                pending.append((value, [*loc, key]))
            problems += [
                Problem(json_path([*loc, key]), f"is given {count} times; give it once")
                for key, count in counts.items()
                if count > 1
            ]
        elif isinstance(node, list):
            pending += [(item, [*loc, index]) for index, item in enumerate(node)]
    return sorted(problems, key=lambda p: p.path)


# The byte-order marks of the encodings editors offer besides UTF-8 ("Unicode" in Notepad).
_OTHER_ENCODINGS: Final = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def _check_utf8(raw: bytes, source: object) -> None:
    """Raise :class:`MappingError` for bytes that are not UTF-8 text (JSON is UTF-8)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        encoding = next((name for mark, name in _OTHER_ENCODINGS if raw.startswith(mark)), None)
        if encoding is not None:
            raise MappingError(f"{source} is {encoding} text, not UTF-8: save it as UTF-8") from exc
        raise MappingError(
            f"{source} is not UTF-8 text (byte {exc.start + 1} is 0x{raw[exc.start]:02x}): "
            "save it as UTF-8"
        ) from exc


def read_document(path: Path) -> object:
    """Read a mapping file as JSON, with one clear error for unreadable files."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise MappingError(f"mapping file {path} does not exist") from exc
    except OSError as exc:
        raise MappingError(f"cannot read mapping file {path}: {exc.strerror}") from exc
    return _loads(raw, path)


def load_mapping(path: Path, *, max_group_types: int | None = None) -> MappingConfig:
    """Read and validate a mapping file (and its group types, given the limit)."""
    return _require_valid(read_document(path), str(path), max_group_types)


def _require_valid(
    document: object, source: str, max_group_types: int | None = None
) -> MappingConfig:
    model, problems = validate_document(document, max_group_types=max_group_types)
    if model is None:
        raise MappingError(f"{source} has {plural(len(problems), 'problem')}", problems)
    return model


def dump_mapping(config: MappingConfig) -> str:
    """Normalized JSON: every key present, fixed key order, two-space indent, newline at end."""
    return orjson.dumps(
        config.model_dump(mode="json"), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
    ).decode()
