"""Offline validation: each rule fails on a bad case and passes on a good one."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config.mapping import DailyCadence, HourlyCadence, IntervalCadence, MappingConfig
from pipeline.config.validation import (
    check_group_types,
    dump_mapping,
    load_mapping,
    parse_mapping,
    validate_document,
)
from pipeline.errors import MappingError
from pipeline.kafka.config_topic import StoredRevision


def good() -> dict[str, Any]:
    return {
        "version": 1,
        "sync_cadence": {"mode": "daily", "at": "02:30"},
        "mappings": [
            {
                "sfdc_object": "Account",
                "group_type": "account",
                "group_name_field": "Id",
                "group_properties": [
                    {"sfdc_field": "Name", "amplitude_property": "name"},
                    {"sfdc_field": "Industry", "amplitude_property": "industry"},
                ],
                "on_delete": "ignore",
            }
        ],
    }


def problems_of(document: object) -> dict[str, str]:
    model, problems = validate_document(document)
    assert (model is None) == bool(problems)
    return {p.path: p.message for p in problems}


def test_good_mapping_is_valid() -> None:
    assert problems_of(good()) == {}


def test_every_failure_is_reported_at_once() -> None:
    doc = good()
    doc["sync_cadence"] = {"mode": "interval", "every_seconds": 0}
    doc["mappings"][0]["group_type"] = ""
    doc["mappings"][0]["group_properties"][1]["sfdc_field"] = "Name"
    doc["mappings"][0]["surprise"] = True
    found = problems_of(doc)
    assert set(found) == {
        "$.sync_cadence.every_seconds",
        "$.mappings[0].group_type",
        "$.mappings[0].group_properties[1].sfdc_field",
        "$.mappings[0].surprise",
    }


@pytest.mark.parametrize("key", ["sfdc_object", "group_type", "group_name_field"])
def test_required_parts(key: str) -> None:
    doc = good()
    del doc["mappings"][0][key]
    assert problems_of(doc) == {f"$.mappings[0].{key}": "is required"}


def test_a_misspelt_key_gets_the_nearest_known_one() -> None:
    doc = good()
    doc["mappings"][0]["group_propertes"] = doc["mappings"][0].pop("group_properties")
    doc["mappings"][0]["colour"] = "blue"
    problems = problems_of(doc)
    assert problems["$.mappings[0].group_propertes"] == (
        "is not a known key of the mapping format (did you mean 'group_properties'?)"
    )
    assert problems["$.mappings[0].colour"] == "is not a known key of the mapping format"


def test_a_known_key_a_level_off_is_told_where_it_belongs() -> None:
    doc = good()
    doc["mappings"][0]["sync_cadence"] = {"mode": "hourly"}
    doc["mappings"][0]["group_properties"][0]["on_delete"] = "unset"
    problems = problems_of(doc)
    assert problems["$.mappings[0].sync_cadence"] == (
        "is not a key here: 'sync_cadence' belongs at the top level of the document, "
        "beside 'mappings' (one serves every mapping)"
    )
    assert problems["$.mappings[0].group_properties[0].on_delete"] == (
        "is not a key here: 'on_delete' belongs in a mapping (an entry of 'mappings')"
    )


def test_mappings_and_properties_must_not_be_empty() -> None:
    doc = good()
    doc["mappings"][0]["group_properties"] = []
    assert "$.mappings[0].group_properties" in problems_of(doc)
    doc["mappings"] = []
    assert problems_of(doc) == {"$.mappings": "must not be empty"}


def test_field_mapped_twice_within_a_mapping() -> None:
    doc = good()
    doc["mappings"][0]["group_properties"][1]["sfdc_field"] = "Name"
    found = problems_of(doc)
    assert list(found) == ["$.mappings[0].group_properties[1].sfdc_field"]
    assert "already mapped at group_properties[0]" in found[next(iter(found))]


def test_a_field_named_twice_in_two_cases_is_one_field() -> None:
    """Salesforce API names ignore case; Amplitude property names do not."""
    doc = good()
    doc["mappings"][0]["group_properties"][1]["sfdc_field"] = "NAME"
    assert problems_of(doc) == {
        "$.mappings[0].group_properties[1].sfdc_field": "Salesforce field 'NAME' is already "
        "mapped at group_properties[0] as 'Name' (Salesforce names ignore case); "
        "one field maps to one property"
    }
    doc = good()
    doc["mappings"][0]["group_properties"][1]["amplitude_property"] = "NAME"
    assert problems_of(doc) == {}


def test_property_written_twice_within_a_mapping() -> None:
    doc = good()
    doc["mappings"][0]["group_properties"][1]["amplitude_property"] = "name"
    found = problems_of(doc)
    assert list(found) == ["$.mappings[0].group_properties[1].amplitude_property"]
    assert next(iter(found.values())).endswith("; a property comes from one field")


@pytest.mark.parametrize("on_delete", ["ignore", "unset", "mark"])
def test_a_property_named_as_the_delete_mark_is_refused_when_marking(on_delete: str) -> None:
    doc = good()
    doc["mappings"][0]["on_delete"] = on_delete
    doc["mappings"][0]["group_properties"][1]["amplitude_property"] = "sfdc_deleted"
    found = problems_of(doc)
    if on_delete != "mark":
        assert found == {}
        return
    assert list(found) == ["$.mappings[0].group_properties[1].amplitude_property"]
    assert 'written by on_delete "mark"' in found[next(iter(found))]


def test_two_mappings_of_one_group_type_writing_one_property() -> None:
    doc = good()
    second = copy.deepcopy(doc["mappings"][0])
    second["sfdc_object"] = "Plan__c"
    second["group_properties"] = [{"sfdc_field": "Title__c", "amplitude_property": "name"}]
    doc["mappings"].append(second)
    found = problems_of(doc)
    assert list(found) == ["$.mappings[1].group_properties[0].amplitude_property"]
    assert "already written by mappings[0]" in found[next(iter(found))]


@pytest.mark.parametrize("second_on_delete", ["ignore", "unset", "mark"])
def test_one_mapping_of_a_group_type_marks_deletes(second_on_delete: str) -> None:
    """Two marks would both write sfdc_deleted: a Contact's delete would mark its live
    Account's group."""
    doc = good()
    doc["mappings"][0]["on_delete"] = "mark"
    second = copy.deepcopy(doc["mappings"][0])
    second["sfdc_object"] = "Plan__c"
    second["on_delete"] = second_on_delete
    second["group_properties"] = [{"sfdc_field": "Title__c", "amplitude_property": "title"}]
    doc["mappings"].append(second)
    found = problems_of(doc)
    if second_on_delete != "mark":
        assert found == {}
        return
    assert list(found) == ["$.mappings[1].on_delete"]
    assert found["$.mappings[1].on_delete"].startswith(
        "on_delete \"mark\" of group type 'account' is already set by mappings[0]"
    )


def test_two_group_types_may_share_property_names() -> None:
    doc = good()
    second = copy.deepcopy(doc["mappings"][0])
    second["group_type"] = "company"
    doc["mappings"].append(second)
    assert problems_of(doc) == {}


def test_at_most_1000_group_properties_in_all() -> None:
    doc = good()
    doc["mappings"][0]["group_properties"] = [
        {"sfdc_field": f"F{n}__c", "amplitude_property": f"p{n}"} for n in range(600)
    ]
    second = copy.deepcopy(doc["mappings"][0])
    second["sfdc_object"], second["group_type"] = "Contact", "contact"
    second["group_properties"] = second["group_properties"][:400]
    doc["mappings"].append(second)
    assert problems_of(doc) == {}  # 1,000: 600 of one group type, 400 of another
    second["group_properties"].append({"sfdc_field": "Extra__c", "amplitude_property": "extra"})
    assert problems_of(doc) == {
        "$.mappings": "writes 1,001 group properties; Amplitude keeps at most 1,000 per "
        "project: map fewer fields"
    }


def test_duplicate_relation() -> None:
    doc = good()
    second = copy.deepcopy(doc["mappings"][0])
    second["group_properties"] = [{"sfdc_field": "Phone", "amplitude_property": "phone"}]
    doc["mappings"].append(second)
    assert "$.mappings[1]" in problems_of(doc)


@pytest.mark.parametrize("name", ["Account", "Plan__c", "ns__Plan__c", "Billing_City2"])
def test_well_formed_salesforce_names(name: str) -> None:
    doc = good()
    doc["mappings"][0]["sfdc_object"] = name
    assert problems_of(doc) == {}


@pytest.mark.parametrize("name", ["1Account", "Acc ount", "Plan__c__c__d", "Bad_", "A.B", ""])
def test_malformed_salesforce_names(name: str) -> None:
    doc = good()
    doc["mappings"][0]["group_properties"][0]["sfdc_field"] = name
    assert "$.mappings[0].group_properties[0].sfdc_field" in problems_of(doc)


@pytest.mark.parametrize("name", ["$set", " name", "name ", "a\tb", "x" * 1025])
def test_malformed_property_names(name: str) -> None:
    doc = good()
    doc["mappings"][0]["group_properties"][0]["amplitude_property"] = name
    assert "$.mappings[0].group_properties[0].amplitude_property" in problems_of(doc)


def test_unknown_keys_rejected_everywhere() -> None:
    doc = good()
    doc["extra"] = 1
    doc["sync_cadence"]["tz"] = "UTC"
    doc["mappings"][0]["group_properties"][0]["note"] = "x"
    assert set(problems_of(doc)) == {
        "$.extra",
        "$.sync_cadence.tz",
        "$.mappings[0].group_properties[0].note",
    }


def test_on_delete_values() -> None:
    doc = good()
    doc["mappings"][0]["on_delete"] = "purge"
    assert "$.mappings[0].on_delete" in problems_of(doc)
    for policy in ("ignore", "mark", "unset"):
        doc["mappings"][0]["on_delete"] = policy
        assert problems_of(doc) == {}


def test_version_must_be_1() -> None:
    doc = good()
    doc["version"] = 2
    assert "$.version" in problems_of(doc)


@pytest.mark.parametrize(
    ("cadence", "expected"),
    [
        ({"mode": "daily", "at": "00:00"}, DailyCadence(mode="daily", at="00:00")),
        ({"mode": "daily", "at": "23:59"}, DailyCadence(mode="daily", at="23:59")),
        ({"mode": "hourly"}, HourlyCadence(mode="hourly")),
        (
            {"mode": "interval", "every_seconds": 1},
            IntervalCadence(mode="interval", every_seconds=1),
        ),
        (
            {"mode": "interval", "every_seconds": 86400},
            IntervalCadence(mode="interval", every_seconds=86400),
        ),
    ],
)
def test_cadence_parsing(cadence: dict[str, Any], expected: object) -> None:
    doc = good()
    doc["sync_cadence"] = cadence
    model, problems = validate_document(doc)
    assert problems == []
    assert model is not None
    assert model.sync_cadence == expected


@pytest.mark.parametrize(
    ("cadence", "path"),
    [
        ({"mode": "daily", "at": "24:00"}, "$.sync_cadence.at"),
        ({"mode": "daily", "at": "7:00"}, "$.sync_cadence.at"),
        ({"mode": "interval", "every_seconds": 0}, "$.sync_cadence.every_seconds"),
        ({"mode": "interval", "every_seconds": 86401}, "$.sync_cadence.every_seconds"),
        ({"mode": "interval"}, "$.sync_cadence.every_seconds"),
        ({"mode": "weekly"}, "$.sync_cadence"),
        ({}, "$.sync_cadence"),
    ],
)
def test_cadence_out_of_range(cadence: dict[str, Any], path: str) -> None:
    doc = good()
    doc["sync_cadence"] = cadence
    assert path in problems_of(doc)


@pytest.mark.parametrize("value", ["5", True, 5.0])
@pytest.mark.parametrize(
    ("section", "cadence", "field"),
    [
        ("sync_cadence", {"mode": "interval"}, "every_seconds"),
        ("reconcile", {"mode": "hourly"}, "minute"),
    ],
)
def test_a_number_of_seconds_or_minutes_is_a_json_integer(
    section: str, cadence: dict[str, Any], field: str, value: object
) -> None:
    """A quoted "5" or a true (which lax parsing reads as 1) is refused, not guessed at."""
    doc = good()
    doc[section] = cadence | {field: value}
    assert f"$.{section}.{field}" in problems_of(doc)


def test_export_round_trip_is_equal_and_stable() -> None:
    model = parse_mapping(
        b'{"mappings":[{"group_properties":[{"amplitude_property":"n","sfdc_field":"Name"}],'
        b'"group_name_field":"Id","group_type":"account","sfdc_object":"Account"}],'
        b'"sync_cadence":{"mode":"hourly"}}'
    )
    exported = dump_mapping(model)
    again = parse_mapping(exported)
    assert again == model
    assert dump_mapping(again) == exported
    # Normalized: defaults written out, keys in the documented order.
    assert exported.index('"version"') < exported.index('"sync_cadence"')
    assert '"on_delete": "ignore"' in exported


def test_a_key_given_twice_in_one_object_is_a_problem_where_it_is() -> None:
    """JSON parsers keep the last of two: a copy-paste slip would rename a property."""
    text = (
        b'{"version": 1, "version": 1, "sync_cadence": {"mode": "hourly"}, "mappings": ['
        b'{"sfdc_object": "Account", "group_type": "account", "group_name_field": "Id",'
        b' "group_properties": [{"sfdc_field": "Name", "amplitude_property": "name",'
        b' "amplitude_property": "nm", "amplitude_property": "n"}]}]}'
    )
    with pytest.raises(MappingError, match="has 2 problems") as info:
        parse_mapping(text)
    assert [str(p) for p in info.value.problems] == [
        "$.mappings[0].group_properties[0].amplitude_property: is given 3 times; give it once",
        "$.version: is given 2 times; give it once",
    ]
    parse_mapping(
        text.replace(b'"version": 1, "version": 1', b'"version": 1').replace(
            b', "amplitude_property": "nm", "amplitude_property": "n"', b""
        )
    )  # the same keys in different objects are fine


def test_parse_mapping_errors() -> None:
    with pytest.raises(MappingError, match="not valid JSON"):
        parse_mapping(b"{nope")
    with pytest.raises(MappingError) as info:
        parse_mapping(b"[]")
    assert [str(p) for p in info.value.problems] == ["$: must be a JSON object ({...}), not a list"]
    for document, kind in ((b'"x"', "a string"), (b"3", "a number"), (b"null", "null")):
        _, problems = validate_document(orjson.loads(document))
        assert [p.message for p in problems] == [f"must be a JSON object ({{...}}), not {kind}"]


def test_a_mapping_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Windows editors may start a UTF-8 file with one; JSON parsers refuse it."""
    text = orjson.dumps(good()).decode()
    assert parse_mapping(b"\xef\xbb\xbf" + text.encode()) == parse_mapping(text)
    assert parse_mapping("\ufeff" + text) == parse_mapping(text)
    path = tmp_path / "mapping.json"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_mapping(path) == parse_mapping(text)


@pytest.mark.parametrize(
    ("encoding", "said"),
    [
        ("utf-16", "is UTF-16 text, not UTF-8: save it as UTF-8"),
        ("utf-32", "is UTF-32 text, not UTF-8: save it as UTF-8"),
        ("latin-1", "is not UTF-8 text (byte {at} is 0xe9): save it as UTF-8"),
    ],
)
def test_a_mapping_not_in_utf8_is_named_so(tmp_path: Path, encoding: str, said: str) -> None:
    """Not "not valid JSON: str is not valid UTF-8: surrogates not allowed"."""
    document = good()
    document["mappings"][0]["group_properties"][0]["amplitude_property"] = "r\u00e9gion"
    text = orjson.dumps(document).decode()
    path = tmp_path / "mapping.json"
    path.write_bytes(text.encode(encoding))
    with pytest.raises(MappingError) as info:
        load_mapping(path)
    assert str(info.value) == f"{path} {said.format(at=text.index(chr(0xE9)) + 1)}"


def with_group_types(count: int) -> dict[str, Any]:
    doc = good()
    relation = doc["mappings"][0]
    doc["mappings"] = [{**relation, "group_type": f"type_{n}"} for n in range(count)]
    return doc


def test_more_group_types_than_amplitude_tracks_are_reported() -> None:
    model, problems = validate_document(with_group_types(7), max_group_types=5)
    assert model is None
    assert [p.path for p in problems] == ["$.mappings[5].group_type", "$.mappings[6].group_type"]
    assert "'type_5' is number 6: Amplitude tracks at most 5 group types" in problems[0].message
    assert "SFAMP_AMPLITUDE__MAX_GROUP_TYPES" in problems[0].message


def test_the_group_type_limit_counts_distinct_types_and_follows_the_setting() -> None:
    doc = with_group_types(5)
    again = {"sfdc_field": "Email", "amplitude_property": "email"}
    doc["mappings"].append(  # type_0 again, from another object
        {**doc["mappings"][0], "sfdc_object": "Contact", "group_properties": [again]}
    )
    assert validate_document(doc, max_group_types=5)[1] == []
    assert validate_document(with_group_types(6), max_group_types=6)[1] == []
    assert validate_document(with_group_types(6))[1] == [], "no limit unless asked"


def test_check_group_types_refuses_a_loaded_mapping() -> None:
    mapping = parse_mapping(orjson.dumps(with_group_types(6)))
    check_group_types(mapping, 6)
    with pytest.raises(MappingError) as info:
        check_group_types(mapping, 5)
    assert [p.path for p in info.value.problems] == ["$.mappings[5].group_type"]


def test_cadence_periods() -> None:
    assert DailyCadence(mode="daily").period_seconds == 86_400
    assert HourlyCadence(mode="hourly").period_seconds == 3_600
    assert IntervalCadence(mode="interval", every_seconds=90).period_seconds == 90


ANY_JSON: tuple[Any, ...] = (None, True, 0, 1.5, "", "x", [], ["a"], [{}], {}, {"a": 1})


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += _paths(value, (*prefix, index))
    return found


@pytest.mark.parametrize("on_delete", ["ignore", "mark"])
def test_any_json_anywhere_is_a_problem_never_an_exception(on_delete: str) -> None:
    """A value of any JSON type in place of any part: reported, as the console and a
    published mapping are validated too (``"group_type": ["account"]`` raised before)."""
    base = good()
    base["mappings"][0]["on_delete"] = on_delete
    for path in _paths(base)[1:]:
        for value in ANY_JSON:
            document = copy.deepcopy(base)
            parent = document
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = value
            model, problems = validate_document(document, max_group_types=5)
            assert model is not None or problems, (path, value)


def test_a_value_outside_its_set_is_named_with_the_one_meant() -> None:
    doc = good()
    doc["mappings"][0]["on_delete"] = "unst"
    doc["sync_cadence"] = {"mode": "intervall", "every_seconds": 5}
    assert problems_of(doc) == {
        "$.mappings[0].on_delete": "'unst' is not one of 'ignore', 'mark', 'unset' "
        "(did you mean 'unset'?)",
        "$.sync_cadence": "mode 'intervall' is not one of 'daily', 'hourly', 'interval' "
        "(did you mean 'interval'?)",
    }


def test_what_a_revision_adds_is_what_a_backfill_must_bring() -> None:
    before = MappingConfig.model_validate(good())
    same = good()
    same["sync_cadence"] = {"mode": "hourly"}
    assert MappingConfig.model_validate(same).objects_to_backfill(before) == []
    for policy in ("mark", "unset"):  # the recycle bin, and sfdc_deleted on live groups
        deletes = good()
        deletes["mappings"][0]["on_delete"] = policy
        marked = MappingConfig.model_validate(deletes)
        assert marked.objects_to_backfill(before) == ["Account"]
        assert before.objects_to_backfill(marked) == []  # back to ignore
    fewer = good()
    del fewer["mappings"][0]["group_properties"][1]
    assert MappingConfig.model_validate(fewer).objects_to_backfill(before) == []
    more = good()
    more["mappings"][0]["group_properties"].append(
        {"sfdc_field": "Phone", "amplitude_property": "phone"}
    )
    assert MappingConfig.model_validate(more).objects_to_backfill(before) == ["Account"]
    renamed = good()
    renamed["mappings"][0]["group_name_field"] = "Name"
    assert MappingConfig.model_validate(renamed).objects_to_backfill(before) == ["Account"]
    assert before.objects_to_backfill(None) == ["Account"]


@pytest.mark.parametrize(
    ("version", "said"), [(2, "must be 1, not 2"), ("1", "must be 1, not '1'")]
)
def test_a_format_version_other_than_1_says_which(version: object, said: str) -> None:
    doc = good()
    doc["version"] = version
    assert problems_of(doc) == {"$.version": said}


def test_a_stored_revision_this_version_refuses_is_still_compared_with() -> None:
    """What a replacement adds is worked out against it, as far as the format reads it."""
    twice = good()
    twice["mappings"][0]["on_delete"] = "mark"
    twice["mappings"].append({**twice["mappings"][0], "sfdc_object": "Plan__c"})
    stored = StoredRevision(3, None, MappingError("two marks"), 0, twice)
    assert stored.mapping is not None
    more = good()
    more["mappings"][0]["group_properties"].append(
        {"sfdc_field": "Phone", "amplitude_property": "phone"}
    )
    assert MappingConfig.model_validate(more).objects_to_backfill(stored.mapping) == ["Account"]
    assert StoredRevision(3, None, MappingError("not JSON"), 0, "{").mapping is None
