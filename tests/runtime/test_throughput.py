"""The per-minute history in /status: changes ingested and groups flushed, last hour."""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.console.chart import minute_chart
from pipeline.runtime.state import ServiceState
from pipeline.runtime.throughput import MinuteCounts

T0 = 1_800_000_000.0  # a minute boundary (divisible by 60)


def test_counts_land_in_their_minute_and_the_hour_ends_now() -> None:
    counts = MinuteCounts()
    counts.add("changes_ingested", 3, T0 + 5)
    counts.add("changes_ingested", 2, T0 + 59)
    counts.add("groups_flushed", 4, T0 + 61)

    hour = counts.last_hour(T0 + 90)
    assert len(hour) == 60
    assert hour[-1] == {
        "minute": "2027-01-15T08:01:00+00:00",
        "changes_ingested": 0,
        "groups_flushed": 4,
    }
    assert hour[-2]["changes_ingested"] == 5
    assert sum(m["changes_ingested"] for m in hour[:-2]) == 0


def test_minutes_older_than_an_hour_are_gone() -> None:
    counts = MinuteCounts()
    counts.add("changes_ingested", 7, T0)
    counts.add("changes_ingested", 1, T0 + 60 * 60)  # an hour later: the first minute drops

    hour = counts.last_hour(T0 + 60 * 60)
    assert sum(m["changes_ingested"] for m in hour) == 1
    assert len(counts._counts) == 1


def test_status_json_carries_the_last_hour() -> None:
    state = ServiceState(role="all")
    state.per_minute.add("groups_flushed", 2, T0)
    minutes = state.to_status()["per_minute"]
    assert len(minutes) == 60
    assert set(minutes[0]) == {"minute", "changes_ingested", "groups_flushed"}


def test_the_chart_scales_both_series_to_a_round_maximum() -> None:
    counts = MinuteCounts()
    counts.add("changes_ingested", 7, T0)
    counts.add("groups_flushed", 3, T0)
    chart = minute_chart(counts.last_hour(T0))

    changes, groups = chart.series
    assert (changes.total, changes.peak, groups.total) == (7, 7, 3)
    assert [label for _, label in chart.y_ticks] == ["0", "5", "10"]
    assert changes.points.endswith(f"{chart.width - chart.right}.0,{chart.top + 0.3 * 186:.1f}")
    assert [label for _, label in chart.x_ticks] == ["-59m", "-44m", "-29m", "-14m", "now"]


def test_amplitude_retries_are_counted_per_flush_and_shown_only_while_flushing() -> None:
    state = ServiceState("all")
    state.amplitude_answered(True, "answers 503")  # a flush that gave up
    state.flushing_since = datetime(2026, 11, 29, tzinfo=UTC)  # the next one
    assert state.to_status()["amplitude_retrying"] is None, "the last flush's retries"
    state.amplitude_answered(True, "answers 503")
    state.amplitude_answered(False, "answers 200")  # another request, side by side
    state.amplitude_answered(True, "does not answer (timeout)")
    shown = state.to_status()["amplitude_retrying"]
    assert (shown["answer"], shown["tries"]) == ("does not answer (timeout)", 2)
    state.flushing_since = None
    assert state.to_status()["amplitude_retrying"] is None
