"""The backfill's summary table for the cases a run rarely meets: what it says of a run
stopped early must not be read as the run's own doing."""

from __future__ import annotations

from pipeline.cli.backfill_summary import print_summary
from pipeline.cli.common import console
from pipeline.errors import KafkaUnavailableError
from pipeline.runtime.backfill import BackfillSummary
from pipeline.runtime.backfill.report import ObjectSummary


def _printed(summary: BackfillSummary) -> str:
    with console.capture() as captured:
        print_summary(summary)
    return captured.get()


def test_a_run_stopped_before_its_rejections_were_written_says_so() -> None:
    item = ObjectSummary("Account", rows_read=10, identifications=9, rejected=1, quiescent=False)
    summary = BackfillSummary(
        objects=[item], error=KafkaUnavailableError("Kafka at 127.0.0.1:1 is not answering")
    )
    text = _printed(summary)
    assert "1 -> not written (see the error)" in text
    assert "None" not in text
    # Stopped before its catch-up ended, not because records kept changing.
    assert "records kept changing" not in text


def test_a_finished_run_whose_records_kept_changing_says_so() -> None:
    item = ObjectSummary("Account", rows_read=10, identifications=10, quiescent=False)
    assert "records kept changing" in _printed(BackfillSummary(objects=[item]))


def test_identifications_count_what_amplitude_accepted() -> None:
    item = ObjectSummary("Account", rows_read=10, identifications=9)
    assert "identifications delivered" in _printed(BackfillSummary(objects=[item]))
