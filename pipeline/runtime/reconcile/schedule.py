"""When the next reconcile is due: pure functions of the schedule, the last run and the time.

Daily and hourly reconciles are wall-clock slots in UTC. The next one follows the
last run that *finished*, so a slot the service was down for runs as soon as it is
back, and a restart never runs one twice. A run interrupted part-way (killed, or
stopped) resumes at once from its checkpoint. A service that never finished one
waits for the next slot: a first start (right after a backfill, usually) does not
read every object again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pipeline.config.mapping import DailyReconcile, HourlyReconcile, ReconcileOff

Schedule = DailyReconcile | HourlyReconcile | ReconcileOff


def next_slot_after(schedule: Schedule, moment: datetime) -> datetime | None:
    """The first slot strictly after ``moment``; None when the reconcile is off."""
    if isinstance(schedule, ReconcileOff):
        return None
    if isinstance(schedule, HourlyReconcile):
        slot = moment.replace(minute=schedule.minute, second=0, microsecond=0)
        return slot if slot > moment else slot + timedelta(hours=1)
    hour, minute = (int(part) for part in schedule.at.split(":"))
    slot = moment.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return slot if slot > moment else slot + timedelta(days=1)


def next_run(
    schedule: Schedule,
    *,
    now: datetime,
    last_finished: datetime | None,
    interrupted: bool,
) -> datetime | None:
    """When the service should run the next reconcile (``now`` or earlier: at once).

    None when the schedule is off, even with an interrupted run: it resumes once a
    schedule is set again (or with ``sfamp reconcile``).
    """
    if isinstance(schedule, ReconcileOff):
        return None
    if interrupted:
        return now
    return next_slot_after(schedule, last_finished if last_finished is not None else now)


def describe(schedule: Schedule) -> str:
    """Human wording, for status output and logs."""
    return schedule.description
