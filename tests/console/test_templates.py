"""How pages word things: times, counts, and the text around template tags."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.config.settings import Settings
from pipeline.console.context import template_environment
from pipeline.console.moments import moment, relative

TEMPLATES = Path(__file__).resolve().parents[2] / "pipeline" / "console" / "templates"
NOW = datetime(2026, 3, 2, 4, 28, 37, tzinfo=UTC).timestamp()


def test_a_time_shows_its_utc_clock_and_how_long_ago() -> None:
    seen = moment("2026-03-02T04:28:25.242107+00:00", NOW)
    assert seen is not None
    assert seen.text == "04:28:25 UTC (11s ago)"
    assert seen.iso == "2026-03-02T04:28:25.242107+00:00"
    later = moment("2026-03-02T05:30:00+01:00", NOW)  # another zone: shown in UTC
    assert later is not None
    assert later.text == "04:30:00 UTC (in 1m)"
    other_day = moment("2026-03-01T23:00:00+00:00", NOW)
    assert other_day is not None
    assert other_day.text == "2026-03-01 23:00:00 UTC (5h 28m ago)"
    assert moment("soon", NOW) is None
    assert relative(0.4) == "now"


def test_the_moment_filter_keeps_the_exact_time_in_a_time_element() -> None:
    environment = template_environment(Settings())
    template = environment.from_string("{{ at | moment }}|{{ none | moment }}|{{ 'x<' | moment }}")
    html = template.render(at="2026-03-02T04:28:25.242107+00:00", none=None, now=NOW)
    assert html == (
        '<time datetime="2026-03-02T04:28:25.242107+00:00" '
        'title="2026-03-02T04:28:25.242107+00:00">04:28:25 UTC (11s ago)</time>|-|x&lt;'
    )


def test_the_status_page_words_the_mapping_reconcile_and_counts() -> None:
    service = {
        "role": "all",
        "ready": True,
        "mapping_revision": "sfamp.config revision 1",
        "cadence": "every 5s",
        "pending_groups": 0,
        "next_flush_at": "2026-03-02T04:28:40+00:00",
        "last_flush": {"at": "2026-03-02T04:28:35+00:00", "ok": True, "groups": 1, "changes": 1},
        "reconcile": {
            "schedule": "daily at 03:00 UTC",
            "next_at": "2026-03-03T03:00:00+00:00",
            "last": {
                "finished_at": "2026-03-02T03:00:12+00:00",
                "records_read": 1204,
                "properties_sent": 1,
                "groups": 1,
                "error": None,
            },
        },
    }
    kafka = {"lag_messages": 1, "lag_seconds": 0, "replay": [], "dlq_pending": 0}
    text = status_text(service, kafka)
    assert "sfamp.config revision 1; cadence every 5s" in text
    assert "revision sfamp.config" not in text
    assert "04:28:35 UTC (2s ago): ok, 1 group, 1 change, 0 requests" in text
    assert "daily at 03:00 UTC; next 2026-03-03 03:00:00 UTC (22h 31m)" not in text
    assert "daily at 03:00 UTC; next 2026-03-03 03:00:00 UTC (in 22h 31m)" in text
    assert (
        "finished 03:00:12 UTC (1h 28m ago): 1,204 records read, 1 property sent for 1 group"
        in text
    )
    assert "1 message;" in text
    assert "(s)" not in text
    assert "+00:00" not in text  # the exact times only in datetime and title attributes


def test_a_flush_that_dead_lettered_says_so_beside_ok() -> None:
    """Two groups Amplitude refused: the flush is ok (the rest landed), and says where
    those two went."""
    flush = {"at": "2026-03-02T04:28:35+00:00", "ok": True, "groups": 3, "changes": 3}
    service = {"role": "all", "ready": True, "last_flush": flush | {"rejected": 2, "dlq": 2}}
    text = status_text(service, {"error": "down"})
    assert "ok, 3 groups, 3 changes, 0 requests, 2 to the dead-letter queue" in text
    quiet = status_text(
        {"role": "all", "ready": True, "last_flush": flush | {"dlq": 0}}, {"error": "down"}
    )
    assert "dead-letter queue" not in quiet


def test_a_running_and_a_failed_reconcile_are_worded() -> None:
    service = {
        "role": "ingest",
        "ready": True,
        "reconcile": {
            "schedule": "hourly at minute 15",
            "running": {"started_at": "2026-03-02T04:15:00+00:00", "object": "Account"},
            "last": {"finished_at": "2026-03-02T03:15:09+00:00", "error": "Salesforce said no"},
        },
    }
    kafka = {"error": "down"}
    text = status_text(service, kafka)
    assert "running since 04:15:00 UTC (13m ago) (Account, 0 records read)" in text
    assert "failed 03:15:09 UTC (1h 13m ago): Salesforce said no" in text


def status_text(service: dict[str, Any], kafka: dict[str, Any]) -> str:
    """The text of the Status page's live part for ``service`` and ``kafka``, tags removed."""
    html = (
        template_environment(Settings())
        .get_template("_status_live.html")
        .render(service=service, kafka=kafka, chart=None, duration=str, poll_seconds=5, now=NOW)
    )
    return re.sub(r"<[^>]+>", "", html)


def test_no_words_run_together_after_a_template_tag() -> None:
    """A block tag ending a line eats the line's newline (trim_blocks): text on the next
    line would join the word before it ("…:8410)and the Amplitude project")."""
    glued = []
    for path in sorted(TEMPLATES.glob("*.html")):
        lines = path.read_text().splitlines()
        for number, (line, after) in enumerate(itertools.pairwise(lines), 1):
            text, following = line.strip(), after.strip()
            ends_in_tag = text.endswith("%}") and not text.endswith("-%}")
            only_tags = re.fullmatch(r"(\{%.*?%\}\s*)+", text) is not None
            words_follow = re.match(r"[\w(]|\{\{", following) is not None
            if ends_in_tag and not only_tags and words_follow:
                glued.append(f"{path.name}:{number}: {text[-40:]} + {following[:30]}")
    assert glued == []
