"""The service runs the reconcile on the mapping's schedule, shows it, and reschedules it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.config.validation import load_mapping
from pipeline.runtime.reconcile.run import run_reconcile
from pipeline.sandbox_stack import SandboxStack
from tests.runtime.conftest import Org, running, settings_for, wait_until
from tests.runtime.test_reconcile import MAPPING
from tests.support.clock import FakeClock


def _write(path: Path, reconcile: dict[str, Any]) -> Path:
    path.write_text(json.dumps({**MAPPING, "reconcile": reconcile}))
    return path


async def test_the_reconcile_runs_at_its_slot_and_a_new_revision_reschedules_it(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(stack, topic_prefix, runtime={"state_dir": str(tmp_path / "state")})
    await org.seed("Account", 4)  # silently: nothing was ever sent for them
    mapping = _write(tmp_path / "mapping.json", {"mode": "daily", "at": "03:00"})
    clock = FakeClock(datetime(2026, 11, 29, 2, 0, tzinfo=UTC))
    async with running(settings, mapping, role="ingest", clock=clock) as service:
        reconcile = service.state.reconcile
        await wait_until(
            lambda: reconcile.get("next_at") == "2026-11-29T03:00:00+00:00",
            what="the first slot, not a run at start",
        )
        assert "last" not in reconcile
        assert reconcile["schedule"] == "daily at 03:00 UTC"

        clock.now = datetime(2026, 11, 29, 3, 0, 1, tzinfo=UTC)
        await wait_until(lambda: "last" in reconcile, what="the scheduled reconcile")
        last = reconcile["last"]
        assert last["ok"], last
        assert (last["records_read"], last["properties_sent"], last["groups"]) == (4, 4, 4)
        assert reconcile["next_at"] == "2026-11-30T03:00:00+00:00"
        metrics = service.metrics.render().decode()
        assert 'sfamp_reconcile_runs_total{outcome="ok"} 1.0' in metrics
        assert 'sfamp_reconcile_records_read_total{object="Account"} 4.0' in metrics
        assert 'sfamp_reconcile_properties_sent_total{object="Account"} 4.0' in metrics
        assert "sfamp_reconcile_last_success_timestamp_seconds 1.7" in metrics
        assert service.state.to_status()["reconcile"]["last"] == last

        _write(mapping, {"mode": "hourly", "minute": 30})
        await wait_until(
            lambda: reconcile.get("next_at") == "2026-11-29T03:30:00+00:00",
            what="the new revision's schedule",
        )
        assert reconcile["schedule"] == "hourly at minute 30"
        _write(mapping, {"mode": "off"})
        await wait_until(lambda: reconcile.get("schedule") == "off", what="the reconcile off")
        assert reconcile["next_at"] is None
    assert (tmp_path / "state" / "reconcile-checkpoint.json").exists()

    # Started again, the service reports the last run from the checkpoint before any run.
    async with running(settings, mapping, role="ingest", clock=clock) as again:
        await wait_until(lambda: "last" in again.state.reconcile, what="the checkpoint read")
        finished = datetime.fromisoformat(again.state.reconcile["last"]["finished_at"])
        gauge = again.metrics.reconcile_last_success.collect()[0].samples[0].value
        assert gauge == finished.timestamp() > 0


async def test_a_reconcile_run_beside_the_service_is_shown_without_a_restart(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    """A scheduled reconcile off and ``sfamp reconcile`` in a cron job instead: the service
    shows that run, and the stale-reconcile alert's gauge follows it."""
    settings = settings_for(stack, topic_prefix, runtime={"state_dir": str(tmp_path / "state")})
    await org.seed("Account", 2)
    mapping = _write(tmp_path / "mapping.json", {"mode": "off"})
    async with running(settings, mapping, role="ingest") as service:
        reconcile = service.state.reconcile
        await wait_until(lambda: reconcile.get("schedule") == "off", what="the schedule shown")
        assert "last" not in reconcile
        summary = await run_reconcile(settings, load_mapping(mapping))
        assert summary.completed, summary.error
        await wait_until(lambda: "last" in reconcile, what="the run beside it, shown")
        finished = datetime.fromisoformat(reconcile["last"]["finished_at"])
        assert reconcile["last"]["ok"] is True
        gauge = service.metrics.reconcile_last_success.collect()[0].samples[0].value
        assert gauge == finished.timestamp() > 0
