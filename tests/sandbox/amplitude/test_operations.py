"""Property operations and identification parsing, without a server."""

from __future__ import annotations

import pytest

from sfamp_sandbox.amplitude.identify import (
    IdentifyLimits,
    RequestRefused,
    parse_identifications,
)
from sfamp_sandbox.amplitude.operations import (
    InvalidPropertiesError,
    apply_operations,
    normalize_operations,
)
from sfamp_sandbox.amplitude.state import HISTORY_PER_GROUP, GroupStore


def test_plain_dict_means_set() -> None:
    assert normalize_operations({"tier": "Gold"}) == {"$set": {"tier": "Gold"}}


def test_mixed_dict_keeps_only_operations_unless_strict() -> None:
    mixed = {"tier": "Gold", "$set": {"name": "Acme"}}
    assert normalize_operations(mixed) == {"$set": {"name": "Acme"}}
    with pytest.raises(InvalidPropertiesError, match="mixes"):
        normalize_operations(mixed, strict=True)


def test_operation_value_must_be_an_object() -> None:
    with pytest.raises(InvalidPropertiesError, match=r"\$set must be a JSON object"):
        normalize_operations({"$set": ["tier"]})


def test_operations_apply_in_amplitude_order() -> None:
    # unset runs before set, so the key named by both ends up set.
    props: dict[str, object] = {"old": 1, "seats": 2, "tags": ["a"], "created": "x"}
    apply_operations(
        props,
        {
            "$set": {"old": "back", "plan": "Enterprise"},
            "$unset": {"old": "-"},
            "$setOnce": {"created": "y", "first": "z"},
            "$add": {"seats": 3, "new_count": 1},
            "$append": {"tags": ["b", "c"]},
            "$prepend": {"tags": ["p", "q"]},
        },
    )
    assert props == {
        "old": "back",
        "plan": "Enterprise",
        "seats": 5,
        "new_count": 1,
        "tags": ["q", "p", "a", "b", "c"],
        "created": "x",
        "first": "z",
    }


def test_insert_remove_and_clear_all() -> None:
    props: dict[str, object] = {"tags": ["a", "b"], "name": "n"}
    apply_operations(props, {"$preInsert": {"tags": ["a", "z"]}, "$remove": {"tags": "b"}})
    assert props["tags"] == ["z", "a"]
    apply_operations(props, {"$clearAll": "-", "$set": {"fresh": True}})
    assert props == {"fresh": True}


def test_append_to_scalar_and_add_to_text() -> None:
    props: dict[str, object] = {"region": "EMEA", "name": "Acme"}
    apply_operations(props, {"$append": {"region": "NA"}, "$add": {"name": 1}})
    assert props == {"region": ["EMEA", "NA"], "name": "Acme"}


def test_strings_are_cut_at_1024_characters() -> None:
    props: dict[str, object] = {}
    apply_operations(props, {"$set": {"long": "é" * 2000, "list": ["x" * 1500]}})
    assert props["long"] == "é" * 1024
    assert props["list"] == ["x" * 1024]


def test_a_set_list_is_stored_as_a_copy_with_each_item_cut() -> None:
    sent: dict[str, object] = {
        "short": ["APAC", "EMEA"],
        "mixed": ["a", 1, None],
        "joined_long": ["y" * 600, "z" * 600],
        "one_long": ["w" * 1025],
    }
    props: dict[str, object] = {}
    apply_operations(props, {"$set": sent})
    assert props == {
        "short": ["APAC", "EMEA"],
        "mixed": ["a", 1, None],
        "joined_long": ["y" * 600, "z" * 600],
        "one_long": ["w" * 1024],
    }
    assert all(props[key] is not sent[key] for key in sent)


def test_identification_object_or_array() -> None:
    one = parse_identifications(
        '{"group_type":"account","group_value":7,"group_properties":{"a":1}}', IdentifyLimits()
    )
    assert [(i.group_type, i.group_value, i.operations) for i in one] == [
        ("account", "7", {"$set": {"a": 1}})
    ]


@pytest.mark.parametrize("raw", [None, "", "not json", "[]", '"text"', "42"])
def test_missing_event(raw: str | None) -> None:
    with pytest.raises(RequestRefused) as refused:
        parse_identifications(raw, IdentifyLimits())
    assert (refused.value.status, refused.value.body) == (400, "missing_event")


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ('{"group_value":"1","group_properties":{}}', "group_type must be a non-empty string"),
        ('{"group_type":"a","group_properties":{}}', "group_value must be"),
        ('{"group_type":"a","group_value":true}', "group_value must be"),
        ('{"group_type":"a","group_value":"1","group_properties":[1]}', "must be a JSON object"),
        ("[1]", "must be a JSON object"),
    ],
)
def test_invalid_identification_names_the_problem(item: str, problem: str) -> None:
    raw = item if item.startswith("[") else f'[{{"group_type":"ok","group_value":"x"}},{item}]'
    with pytest.raises(RequestRefused) as refused:
        parse_identifications(raw, IdentifyLimits())
    assert refused.value.status == 400
    assert refused.value.body.startswith("invalid_identification: identification[")
    assert problem in refused.value.body


def test_property_limit_counts_the_whole_request_by_default() -> None:
    items = ",".join(
        f'{{"group_type":"a","group_value":"{n}","group_properties":{{"p{n}":1,"q{n}":2}}}}'
        for n in range(513)
    )
    with pytest.raises(RequestRefused, match="too_many_properties: 1026 > 1024"):
        parse_identifications(f"[{items}]", IdentifyLimits())
    loose = IdentifyLimits(property_limit_per_request=False)
    assert len(parse_identifications(f"[{items}]", loose)) == 513


def test_history_keeps_each_groups_last_identifications_oldest_first() -> None:
    store = GroupStore()
    for request_id in range(HISTORY_PER_GROUP + 3):
        stamp = {"request_id": request_id, "at": float(request_id), "path": "/2/httpapi"}
        store.apply("account", "001A", {"$set": {"n": request_id}}, stamp)
    other = {"request_id": 99, "at": 9.0, "path": "/x"}
    store.apply("account", "001B", {"$unset": {"n": "-"}}, other)

    kept = store.history["account", "001A"]
    assert len(kept) == HISTORY_PER_GROUP
    assert kept[0] == {
        "request_id": 3,
        "at": 3.0,
        "path": "/2/httpapi",
        "operations": {"$set": {"n": 3}},
    }
    assert [record["request_id"] for record in kept] == list(range(3, HISTORY_PER_GROUP + 3))
    assert dict(store.history) == {
        ("account", "001A"): kept,
        ("account", "001B"): [
            {"request_id": 99, "at": 9.0, "path": "/x", "operations": {"$unset": {"n": "-"}}}
        ],
    }
    assert store.history.get(("account", "001C")) is None
