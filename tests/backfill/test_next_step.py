"""What a backfill that stopped early tells its user to do next (BackfillSummary.next_step)."""

from __future__ import annotations

from pipeline.errors import AmplitudeUnavailableError
from pipeline.runtime.backfill import BackfillSummary


def test_a_new_run_stopped_before_delivering_says_run_again() -> None:
    summary = BackfillSummary(checkpoint="cp.json", interrupted="SIGINT")
    assert summary.next_step() == "no batch was confirmed delivered yet; run again"


def test_a_resumed_run_stopped_early_still_points_at_its_checkpoint() -> None:
    # Running again without --resume would start the whole backfill over.
    for summary in (
        BackfillSummary(resumed=True, checkpoint="cp.json", interrupted="SIGTERM"),
        BackfillSummary(resumed=True, checkpoint="cp.json", error=AmplitudeUnavailableError("x")),
    ):
        assert summary.next_step() == "checkpoint kept: cp.json; rerun with --resume"
