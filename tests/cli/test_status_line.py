"""The Service row of `sfamp status`, from the service's /status answer."""

from __future__ import annotations

from pipeline.cli.status_cmd import service_line

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


def test_a_flush_not_scheduled_yet_is_said_in_words() -> None:
    status = {"role": "deliver", "url": URL, "ready": False, "next_flush_at": None}
    line = service_line({**status, "cadence": "daily at 00:00 UTC"})
    assert "next flush not scheduled yet" in line
    assert "None" not in line
