"""Strings are cut to the 1,024 characters Amplitude keeps before they are sent.

A long text field then costs no more than Amplitude stores, so an identification it
would have pushed over the request limit is delivered instead of dead-lettered. Only an
identification still too large after cutting is refused, alone, with the reason.
"""

from __future__ import annotations

import orjson
from structlog.testing import capture_logs

from pipeline.amplitude import AmplitudeClient
from pipeline.amplitude.httpapi import encode_event
from pipeline.amplitude.planning import (
    MAX_STRING_CHARS,
    cut_properties,
    cut_strings,
    form_prefix,
    plan_chunks,
)
from pipeline.config.settings import AmplitudeSettings
from pipeline.transform.group_update import GroupUpdate
from sfamp_sandbox.amplitude import AmplitudeSandbox


def test_strings_and_strings_in_arrays_are_cut() -> None:
    update = GroupUpdate(
        "account",
        "001A",
        {"notes": "x" * 5000, "tags": ["short", "y" * 2000], "seats": 250, "name": "Acme"},
        frozenset({"fax"}),
    )
    cut, names = cut_strings(update)
    assert names == ("notes", "tags")
    assert cut.set == {
        "notes": "x" * MAX_STRING_CHARS,
        "tags": ["short", "y" * MAX_STRING_CHARS],
        "seats": 250,
        "name": "Acme",
    }
    assert cut.unset == update.unset
    assert cut_strings(cut) == (cut, ())


def test_an_update_with_nothing_too_long_is_left_as_it_is() -> None:
    update = GroupUpdate("account", "001A", {"name": "é" * MAX_STRING_CHARS, "n": 1})
    same, names = cut_strings(update)
    assert same is update
    assert names == ()


def test_requests_are_planned_and_measured_with_the_cut_values() -> None:
    updates = [GroupUpdate("account", str(n), {"notes": "x" * 100_000}) for n in range(20)]
    chunks = plan_chunks(updates, len(form_prefix("key")))
    assert len(chunks) == 1, "20 cut values fit one request; 2 MB of uncut text would not"
    assert all(len(item.update.set["notes"]) == MAX_STRING_CHARS for item in chunks[0].items)
    assert cut_properties(chunks) == {("account", "notes"): 20}


async def test_long_values_are_delivered_cut_and_logged_once_per_property(
    amplitude_sandbox: AmplitudeSandbox, sandbox_settings: AmplitudeSettings
) -> None:
    # 300 values of 5,000 characters: 1.5 MB as they are, over Amplitude's request limit.
    wide = GroupUpdate("account", "001WIDE", {f"p{n}": "a" * 5000 for n in range(300)})
    plain = GroupUpdate("account", "001PLAIN", {"name": "Acme"})
    async with AmplitudeClient(sandbox_settings) as client:
        with capture_logs() as logs:
            first = await client.send([wide, plain])
            again = await client.send([wide])
    assert (first.delivered, first.rejected) == (2, [])
    assert first.truncated == {("account", f"p{n}"): 1 for n in range(300)}
    assert again.truncated == first.truncated
    stored = amplitude_sandbox.state.store("us").groups[("account", "001WIDE")]
    assert stored["p0"] == "a" * MAX_STRING_CHARS
    cuts = [entry for entry in logs if entry["event"] == "amplitude_value_truncated"]
    assert sorted(entry["property"] for entry in cuts) == sorted(f"p{n}" for n in range(300))


async def test_an_identification_too_large_even_cut_fails_alone_with_the_reason(
    amplitude_sandbox: AmplitudeSandbox, sandbox_settings: AmplitudeSettings
) -> None:
    # 300 values of 1,024 "é" still encode to about 1.8 MB once cut.
    huge = GroupUpdate("account", "001HUGE", {f"p{n}": "é" * 5000 for n in range(300)})
    neighbours = [GroupUpdate("account", f"001N{n}", {"name": f"n{n}"}) for n in range(3)]
    async with AmplitudeClient(sandbox_settings) as client:
        report = await client.send([neighbours[0], huge, *neighbours[1:]])
    assert report.delivered == 3
    (rejected,) = report.rejected
    assert (rejected.update.group_value, rejected.status) == ("001HUGE", 413)
    assert "this identification alone is" in rejected.reason
    assert all(
        ("account", u.group_value) in amplitude_sandbox.state.store("us").groups for u in neighbours
    )


def test_http_v2_events_carry_cut_strings_and_keep_values_that_fit() -> None:
    long = GroupUpdate("account", "001A", {"notes": "x" * 5000, "tags": ["y" * 2000]})
    item = encode_event(long, "sfamp-1", 5)
    assert item.cut == ("notes", "tags")
    event = orjson.loads(item.json)
    assert event["group_properties"]["$set"] == {
        "notes": "x" * MAX_STRING_CHARS,
        "tags": ["y" * MAX_STRING_CHARS],
    }
    assert item.encoded_size == len(item.json)
    # As many characters as Amplitude keeps, in more bytes than that: nothing to cut.
    fits = GroupUpdate("account", "001B", {"name": "é" * MAX_STRING_CHARS}, frozenset({"fax"}))
    kept = encode_event(fits, "sfamp-2", 5)
    assert kept.cut == ()
    assert orjson.loads(kept.json) == {
        "event_type": "$groupidentify",
        "groups": {"account": "001B"},
        "group_properties": {"$set": {"name": "é" * MAX_STRING_CHARS}, "$unset": {"fax": "-"}},
        "insert_id": "sfamp-2",
        "time": 5,
        "library": "sfamp",
    }
