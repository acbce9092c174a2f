"""The Service row of `sfamp status`, from the service's /status answer."""

from __future__ import annotations

from pipeline.cli.status_cmd import mapping_lines, service_line

URL = "http://127.0.0.1:8080"


def test_an_ingest_only_process_shows_no_flush() -> None:
    line = service_line({"role": "ingest", "url": URL, "ready": True, "next_flush_at": None})
    assert line == f"ingest at {URL}, ready"


def test_a_delivering_process_shows_its_cadence_and_flushes() -> None:
    status = {
        "role": "all",
        "url": URL,
        "ready": True,
        "cadence": "every 5s",
        "next_flush_at": "2026-11-29T02:51:10+00:00",
        "pending_groups": 2,
        "last_flush": {"at": "2026-11-29T02:51:05+00:00", "ok": True, "groups": 1, "requests": 1},
    }
    assert service_line(status) == (
        f"all at {URL}, ready; cadence every 5s, next flush 2026-11-29T02:51:10+00:00; "
        "2 groups pending; last flush 2026-11-29T02:51:05+00:00: ok, 1 group, 1 request"
    )


def test_a_flush_that_dead_lettered_says_how_many() -> None:
    flush = {"at": "2026-11-29T02:51:05+00:00", "ok": True, "groups": 3, "requests": 1}
    status = {"role": "all", "url": URL, "ready": True, "next_flush_at": None}
    line = service_line({**status, "last_flush": {**flush, "rejected": 2, "dlq": 2}})
    assert line.endswith("ok, 3 groups, 1 request, 2 to the DLQ")
    assert "DLQ" not in service_line({**status, "last_flush": {**flush, "dlq": 0}})


def test_a_flush_held_by_retries_says_what_amplitude_answers() -> None:
    status = {"role": "all", "url": URL, "ready": True, "next_flush_at": None}
    retrying = {"answer": "answers 503", "at": "2026-11-29T02:51:05+00:00", "tries": 4}
    since = "2026-11-29T02:50:05+00:00"
    line = service_line({**status, "flushing_since": since, "amplitude_retrying": retrying})
    retried = "(retrying: Amplitude answers 503, 4 times in this flush)"
    assert f"flushing since {since} {retried}" in line


def test_a_flush_not_scheduled_yet_is_said_in_words() -> None:
    status = {"role": "deliver", "url": URL, "ready": False, "next_flush_at": None}
    line = service_line({**status, "cadence": "daily at 00:00 UTC"})
    assert "next flush not scheduled yet" in line
    assert "None" not in line


def test_a_refused_mapping_is_said_beside_the_published_one() -> None:
    """sfamp.config holds the refused revision all the same; the service runs the one it had."""
    published = {"revision": 5, "cadence": "every 5s", "relations": ["Acount -> account"]}
    refused = {
        "source": "sfamp.config revision 5",
        "reason": "the mapping does not match the Salesforce org (1 problem)",
    }
    running = {"mapping_revision": "sfamp.config revision 4", "mapping_refused": refused}
    lines = mapping_lines(published, running)
    assert lines.splitlines() == [
        "revision 5, every 5s",
        "Acount -> account",
        "[red]the service refused sfamp.config revision 5: the mapping does not match the "
        "Salesforce org (1 problem); it runs sfamp.config revision 4[/]",
    ]
    assert mapping_lines(
        published, {"mapping_revision": "sfamp.config revision 5"}
    ).splitlines() == [
        "revision 5, every 5s",
        "Acount -> account",
    ]
    assert mapping_lines(None, {"error": "no service answers"}).startswith("none published")


def test_a_service_running_its_mapping_file_says_so_under_the_published_one() -> None:
    """The file is newer than the published revision: the Mapping row must not pass the
    published one for what runs (the Service row's cadence would then disagree with it)."""
    published = {"revision": 1, "cadence": "every 5s", "relations": ["Account -> account"]}
    running = {"mapping_revision": "file:/srv/mapping.json"}
    assert mapping_lines(published, running).splitlines() == [
        "revision 1, every 5s",
        "Account -> account",
        "[yellow]the service runs file:/srv/mapping.json, not this revision[/]",
    ]
    nothing = mapping_lines(None, running).splitlines()
    assert nothing == [
        "none published (sfamp config import FILE)",
        "[yellow]the service runs file:/srv/mapping.json[/]",
    ]


def test_a_refused_mappings_problems_are_listed_under_it() -> None:
    # "1 problem" alone sent the reader to the service's log to learn which.
    refused = {
        "source": "sfamp.config revision 7",
        "reason": "the mapping does not match the Salesforce org: 7 problems",
        "problems": [f"$.mappings[0].group_properties[{n}]: no field Nope{n}" for n in range(7)],
    }
    running = {"mapping_revision": "sfamp.config revision 4", "mapping_refused": refused}
    lines = mapping_lines(None, running).splitlines()
    assert lines[-6:] == [
        "[red]  $.mappings[0].group_properties[0]: no field Nope0[/]",
        "[red]  $.mappings[0].group_properties[1]: no field Nope1[/]",
        "[red]  $.mappings[0].group_properties[2]: no field Nope2[/]",
        "[red]  $.mappings[0].group_properties[3]: no field Nope3[/]",
        "[red]  $.mappings[0].group_properties[4]: no field Nope4[/]",
        "[red]  and 2 more (the service's log)[/]",
    ]


def test_a_refused_change_of_the_running_file_says_the_file_s_earlier_content_runs() -> None:
    refused = {"source": "file:/srv/m.json", "reason": "not valid JSON"}
    running = {"mapping_revision": "file:/srv/m.json", "mapping_refused": refused}
    assert mapping_lines(None, running).splitlines()[-1] == (
        "[red]the service refused file:/srv/m.json: not valid JSON; "
        "it runs what file:/srv/m.json held before[/]"
    )


def test_a_mapping_refused_at_start_says_the_service_waits() -> None:
    refused = {"source": "sfamp.config revision 2", "reason": "1 problem"}
    waiting = {"mapping_revision": "", "mapping_refused": refused}
    assert mapping_lines(None, waiting).splitlines()[-1] == (
        "[red]the service refused sfamp.config revision 2: 1 problem; "
        "it waits for a revision that passes[/]"
    )


def test_a_service_still_starting_says_what_it_waits_for() -> None:
    waiting = "waiting for Kafka: Kafka at k:9092 is not answering (connection refused)"
    status = {"role": "ingest", "url": URL, "ready": False, "waiting_for": [waiting]}
    assert service_line(status) == f"ingest at {URL}, not ready ({waiting})"


def test_a_flush_going_on_is_said_before_the_last_one() -> None:
    status = {
        "role": "deliver",
        "url": URL,
        "ready": True,
        "cadence": "every 5s",
        "next_flush_at": "2026-11-29T02:51:10+00:00",
        "pending_groups": 0,
        "flushing_since": "2026-11-29T02:51:05+00:00",
    }
    assert service_line(status).endswith(
        "0 groups pending; flushing since 2026-11-29T02:51:05+00:00; no flush yet"
    )


def test_times_are_shown_to_the_second() -> None:
    status = {
        "role": "deliver",
        "url": URL,
        "ready": True,
        "cadence": "every 5s",
        "next_flush_at": "2026-11-30T22:18:11.191089+00:00",
        "pending_groups": 0,
        "last_flush": {"at": "2026-11-30T22:18:06.5+00:00", "ok": True, "groups": 1, "requests": 1},
    }
    line = service_line(status)
    assert "next flush 2026-11-30T22:18:11+00:00;" in line
    assert "last flush 2026-11-30T22:18:06+00:00: ok" in line
