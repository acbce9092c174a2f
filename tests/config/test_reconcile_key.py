"""The mapping's ``reconcile`` key: its forms, its default, its problems with JSON paths."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.config.mapping import DailyReconcile, HourlyReconcile, ReconcileOff
from pipeline.config.validation import dump_mapping, parse_mapping, validate_document


def document(**top: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "sync_cadence": {"mode": "hourly"},
        **top,
        "mappings": [
            {
                "sfdc_object": "Account",
                "group_type": "account",
                "group_name_field": "Id",
                "group_properties": [{"sfdc_field": "Name", "amplitude_property": "name"}],
            }
        ],
    }


def problems_of(doc: dict[str, Any]) -> dict[str, str]:
    _, problems = validate_document(doc)
    return {p.path: p.message for p in problems}


@pytest.mark.parametrize(
    ("reconcile", "expected"),
    [
        ({"mode": "daily"}, DailyReconcile(mode="daily", at="03:00")),
        ({"mode": "daily", "at": "22:15"}, DailyReconcile(mode="daily", at="22:15")),
        ({"mode": "hourly"}, HourlyReconcile(mode="hourly", minute=0)),
        ({"mode": "hourly", "minute": 30}, HourlyReconcile(mode="hourly", minute=30)),
        ({"mode": "off"}, ReconcileOff(mode="off")),
    ],
)
def test_the_three_modes(reconcile: dict[str, Any], expected: object) -> None:
    model, problems = validate_document(document(reconcile=reconcile))
    assert problems == []
    assert model is not None
    assert model.reconcile == expected


def test_the_default_is_daily_at_three() -> None:
    model, _ = validate_document(document())
    assert model is not None
    assert model.reconcile == DailyReconcile(mode="daily", at="03:00")


@pytest.mark.parametrize(
    ("reconcile", "path", "message"),
    [
        ({"mode": "weekly"}, "$.reconcile", "mode 'weekly' is not one of 'daily', 'hourly', 'off'"),
        ({"mode": "of"}, "$.reconcile", "'off' (did you mean 'off'?)"),
        ({}, "$.reconcile", "needs a 'mode': 'daily', 'hourly' or 'off'"),
        ({"mode": "daily", "at": "24:00"}, "$.reconcile.at", "must be a UTC time HH:MM"),
        ({"mode": "hourly", "minute": 60}, "$.reconcile.minute", "must be at most 59"),
        (
            {"mode": "off", "at": "01:00"},
            "$.reconcile.at",
            "is not a key of mode 'off', which takes no other key; 'at' belongs to mode 'daily'",
        ),
        (
            {"mode": "hourly", "at": "30"},
            "$.reconcile.at",
            "is not a key of mode 'hourly', which takes 'minute'; 'at' belongs to mode 'daily'",
        ),
        (
            {"mode": "daily", "minute": 5},
            "$.reconcile.minute",
            "is not a key of mode 'daily', which takes 'at'; 'minute' belongs to mode 'hourly'",
        ),
        (
            {"mode": "hourly", "minutes": 5},
            "$.reconcile.minutes",
            "is not a key of mode 'hourly', which takes 'minute' (did you mean 'minute'?)",
        ),
        (
            {"mode": "daily", "minut": 5},
            "$.reconcile.minut",
            "is not a key of mode 'daily', which takes 'at'; 'minute' belongs to mode 'hourly' "
            "(did you mean it?)",
        ),
        (
            {"mode": "hourly", "At": "01:00"},
            "$.reconcile.At",
            "is not a key of mode 'hourly', which takes 'minute'; 'at' belongs to mode 'daily' "
            "(did you mean it?)",
        ),
        ("daily", "$.reconcile", "must be a JSON object ({...}), not text 'daily'"),
    ],
)
def test_problems_name_their_path(reconcile: object, path: str, message: str) -> None:
    found = problems_of(document(reconcile=reconcile))
    assert list(found) == [path]
    assert message in found[path]


def test_problems_of_the_cadence_keep_their_own_modes() -> None:
    found = problems_of(document(sync_cadence={"mode": "off"}))
    assert found == {"$.sync_cadence": "mode 'off' is not one of 'daily', 'hourly', 'interval'"}


def test_every_problem_of_both_keys_at_once() -> None:
    doc = document(reconcile={"mode": "daily", "at": "7pm"})
    doc["sync_cadence"] = {"mode": "daily", "at": "7pm"}
    assert set(problems_of(doc)) == {"$.reconcile.at", "$.sync_cadence.at"}


def test_export_writes_the_key_and_reads_back_equal() -> None:
    default = parse_mapping(json.dumps(document()))
    exported = dump_mapping(default)
    assert json.loads(exported)["reconcile"] == {"mode": "daily", "at": "03:00"}
    hourly = parse_mapping(json.dumps(document(reconcile={"mode": "hourly", "minute": 5})))
    assert json.loads(dump_mapping(hourly))["reconcile"] == {"mode": "hourly", "minute": 5}
    for model in (default, hourly):
        assert parse_mapping(dump_mapping(model)) == model
