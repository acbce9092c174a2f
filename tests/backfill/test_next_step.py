"""What a backfill that stopped early tells its user to do next (BackfillSummary.next_step)."""

from __future__ import annotations

from pipeline.errors import AmplitudeUnavailableError, MappingError
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


def test_a_mapping_refused_before_any_read_says_fix_it_and_run_again() -> None:
    refused = MappingError("the mapping does not match the Salesforce org: 1 problem")
    summary = BackfillSummary(checkpoint="cp.json", error=refused)
    assert summary.next_step() == (
        "nothing was read or sent; run again once the problem above is fixed"
    )


def test_a_dry_run_stopped_early_says_run_it_again_not_that_nothing_was_delivered() -> None:
    failed = BackfillSummary(dry_run=True, error=AmplitudeUnavailableError("x"))
    assert failed.next_step() == (
        "a dry run keeps no checkpoint; run it again once the problem above is fixed"
    )
    stopped = BackfillSummary(dry_run=True, interrupted="SIGINT")
    assert stopped.next_step() == "a dry run keeps no checkpoint; run it again"
