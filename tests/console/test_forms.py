"""The Mapping setup form as data: fields to document and back, paths to controls."""

from __future__ import annotations

from pipeline.config.validation import dump_mapping, validate_document
from pipeline.console.forms import (
    Change,
    control_for,
    control_ids,
    form_from_document,
    form_from_fields,
    in_form_order,
    messages_by_control,
)
from pipeline.errors import Problem

DOCUMENT = {
    "version": 1,
    "sync_cadence": {"mode": "interval", "every_seconds": 15},
    "reconcile": {"mode": "off"},
    "mappings": [
        {
            "sfdc_object": "Account",
            "group_type": "account",
            "group_name_field": "External_Id__c",
            "group_properties": [{"sfdc_field": "Name", "amplitude_property": "name"}],
            "on_delete": "mark",
        }
    ],
}


def test_a_document_survives_the_form_unchanged() -> None:
    form = form_from_document(DOCUMENT)
    assert form.document() == DOCUMENT
    model, problems = validate_document(form.document())
    assert problems == []
    assert model is not None
    assert dump_mapping(model).startswith('{\n  "version": 1,')


def test_posted_fields_are_read_in_number_order_and_empty_ones_are_left_out() -> None:
    form = form_from_fields(
        {
            "csrf_token": "ignored",
            "cadence_mode": "daily",
            "cadence_at": "07:15",
            "m1.sfdc_object": "Contact",
            "m0.sfdc_object": "Account",
            "m0.p2.sfdc_field": "Industry",
            "m0.p0.sfdc_field": "Name",
            "m0.p0.amplitude_property": " name ",
            "m0.group_type": "",
        }
    )
    document = form.document()
    assert document["sync_cadence"] == {"mode": "daily", "at": "07:15"}
    first, second = document["mappings"]
    assert first["sfdc_object"] == "Account"
    assert "group_type" not in first  # empty: "is required"
    assert first["group_properties"] == [
        {"sfdc_field": "Name", "amplitude_property": "name"},
        {"sfdc_field": "Industry"},
    ]
    assert second == {"sfdc_object": "Contact", "group_properties": [], "on_delete": "ignore"}


def test_a_non_number_interval_is_kept_for_validation_to_refuse() -> None:
    form = form_from_fields({"cadence_mode": "interval", "cadence_every": "soon"})
    _, problems = validate_document(form.document())
    assert "$.sync_cadence.every_seconds" in [p.path for p in problems]


def test_a_negative_number_is_refused_for_its_range_not_as_no_number() -> None:
    form = form_from_fields({
        "cadence_mode": "interval", "cadence_every": " -1 ",
        "reconcile_mode": "hourly", "reconcile_minute": "-5",
    })  # fmt: skip
    problems = {p.path: p.message for p in validate_document(form.document())[1]}
    assert problems["$.sync_cadence.every_seconds"] == "must be at least 1"
    assert problems["$.reconcile.minute"] == "must be at least 0"
    spelt = form_from_fields({"cadence_mode": "interval", "cadence_every": "1e3"})
    problems = {p.path: p.message for p in validate_document(spelt.document())[1]}
    assert problems["$.sync_cadence.every_seconds"] == "must be a whole number, not text '1e3'"


def test_structural_actions() -> None:
    form = form_from_document(DOCUMENT)
    assert form.apply("add_property:0") == Change("add_property", 0, 1)
    assert form.apply("add_mapping") == Change("add_mapping", 1)
    assert [len(s.rows) for s in form.sections] == [2, 1]
    assert form.apply("remove_property:0:0") == Change("remove_property", 0, 0)
    assert form.apply("remove_mapping:1") == Change("remove_mapping", 1)
    assert form.apply("remove_mapping:7") is None  # gone already: nothing happens
    assert [len(s.rows) for s in form.sections] == [1]
    assert form.sections[0].rows[0].sfdc_field == ""
    assert form.apply("object:0") == Change("object", 0)
    assert form.apply("cadence") == Change("cadence")


def test_sections_and_rows_keep_their_numbers_and_new_ones_take_the_next() -> None:
    form = form_from_fields(
        {"m3.sfdc_object": "Account", "m3.p1.sfdc_field": "Name", "m3.p4.sfdc_field": "Industry"}
    )
    [section] = form.sections
    assert (section.key, [row.key for row in section.rows]) == (3, [1, 4])
    assert form.apply("add_property:3") == Change("add_property", 3, 5)
    assert form.apply("add_mapping") == Change("add_mapping", 4)
    assert form.apply("remove_property:3:1") == Change("remove_property", 3, 1)
    assert [row.key for row in section.rows] == [4, 5]
    assert "m3-p4-sfdc_field" in control_ids(form)
    assert "m3-p1-sfdc_field" not in control_ids(form)


def test_a_path_names_the_control_by_the_keys_of_its_section_and_row() -> None:
    form = form_from_fields({"m3.sfdc_object": "Account", "m3.p4.sfdc_field": "Industry"})
    path = "$.mappings[0].group_properties[0].sfdc_field"
    assert control_for(path) == "m0-p0-sfdc_field"
    assert control_for(path, form) == "m3-p4-sfdc_field"
    assert control_for("$.mappings[0].group_properties", form) == "m3-add_property"
    assert control_for("$.mappings[5].group_type", form) == "m5-group_type"  # not drawn
    problems = [Problem("$.mappings[0].group_type", "is required")]
    assert messages_by_control(problems, form) == {"m3-group_type": ["is required"]}


def test_every_path_validation_reports_names_its_control() -> None:
    assert control_for("$.sync_cadence.every_seconds") == "cadence_every"
    assert control_for("$.reconcile.minute") == "reconcile_minute"
    assert control_for("$.mappings") == "add_mapping"
    assert control_for("$.mappings[2]") == "m2-section"
    assert control_for("$.mappings[0].group_type") == "m0-group_type"
    assert control_for("$.mappings[1].group_properties") == "m1-add_property"
    assert control_for("$.mappings[1].group_properties[3]") == "m1-p3-row"
    assert control_for("$.mappings[1].group_properties[3].sfdc_field") == "m1-p3-sfdc_field"
    assert control_for("$.version") is None
    problems = [Problem("$.mappings[0].group_type", "is required"), Problem("$", "x")]
    assert messages_by_control(problems) == {"m0-group_type": ["is required"]}


def test_only_the_schedule_controls_shown_carry_messages() -> None:
    ids = control_ids(form_from_document(DOCUMENT))
    assert "cadence_every" in ids
    assert "cadence_at" not in ids
    assert "reconcile_at" not in ids
    assert "m0-p0-amplitude_property" in ids


def test_failures_are_listed_in_the_order_the_form_draws_their_controls() -> None:
    """Schedules first, then each section top to bottom (rows in order)."""
    fields = {"cadence_mode": "daily", "cadence_at": "24:00", "reconcile_mode": "hourly"}
    fields |= {"reconcile_minute": "61"}
    for m in (0, 1, 2):
        fields |= {f"m{m}.sfdc_object": "Account", f"m{m}.group_name_field": "Id"}
        fields |= {f"m{m}.p0.sfdc_field": "Name", f"m{m}.p1.sfdc_field": "Name"}
    _, problems = validate_document(form_from_fields(fields).document())
    paths = [problem.path for problem in in_form_order(problems)]

    assert paths[:2] == ["$.sync_cadence.at", "$.reconcile.minute"]
    section_1 = [path for path in paths if path.startswith("$.mappings[1].")]
    assert section_1 == [
        "$.mappings[1].group_type",
        "$.mappings[1].group_properties[0].amplitude_property",
        "$.mappings[1].group_properties[1].sfdc_field",
        "$.mappings[1].group_properties[1].amplitude_property",
    ]
    sections = [int(path.split("[")[1].split("]")[0]) for path in paths[2:]]
    assert sections == sorted(sections)
    assert sorted(paths) != paths  # a text sort puts the sections before the schedules


def test_the_form_order_puts_unknown_keys_first_and_the_list_of_sections_last() -> None:
    problems = [
        Problem("$.mappings[10].group_type", "is required"),
        Problem("$.mappings[2].group_type", "is required"),
        Problem("$.mappings", "must not be empty"),
        Problem("$.mappings[0].on_delete", "x"),
        Problem("$.mappings[0].group_properties", "y"),
        Problem("$.mappings[0].group_properties[0]", "z"),
        Problem("$.mappings[0]", "duplicate relation"),
        Problem("$.reconcile", "r"),
        Problem("$.sync_cadence.mode", "m"),
        Problem("$.extra", "not allowed"),
    ]
    assert [p.path for p in in_form_order(problems)] == [
        "$.extra",
        "$.sync_cadence.mode",
        "$.reconcile",
        "$.mappings[0]",
        "$.mappings[0].group_properties[0]",
        "$.mappings[0].group_properties",
        "$.mappings[0].on_delete",
        "$.mappings[2].group_type",
        "$.mappings[10].group_type",  # by number: a text sort puts it before [2]
        "$.mappings",
    ]


def test_a_time_typed_empty_is_refused_not_replaced_by_the_default() -> None:
    typed = form_from_fields({"cadence_mode": "daily", "cadence_at": " ", "reconcile_at": ""})
    _, problems = validate_document(typed.document())
    assert {p.path for p in problems} >= {"$.sync_cadence.at", "$.reconcile.at"}
    drawn_later = form_from_fields({"cadence_mode": "daily"})  # was hourly: no time field yet
    assert drawn_later.document()["sync_cadence"] == {"mode": "daily", "at": "00:00"}
