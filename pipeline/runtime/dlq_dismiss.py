"""Dismissing dead letters (``sfamp dlq dismiss``): settle entries no replay can deliver.

A DLQ entry that names no record (an undecodable change envelope, a CDC event
without a readable header, a group type no mapping writes any more), or a
record of ``sfamp.dlq`` that is not even a DLQ entry, can never be replayed: it
would stay "not replayed" in ``sfamp status`` and fail every ``dlq replay
--all``. An operator who has looked at it dismisses it: a dismissal marker is
appended to the DLQ (see :mod:`pipeline.kafka.dlq`), the entry itself stays for
the record, and it no longer counts as waiting.

``--unreplayable`` picks exactly the entries a replay would refuse before
reading Salesforce, judged with the mapping that runs now; ``--id`` dismisses
any entry the operator names, replayable or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.kafka.dlq import (
    DlqItem,
    append_markers,
    by_ids,
    check_one_choice,
    dismissal_marker,
    read_dlq,
)
from pipeline.kafka.inspect import KafkaInspector, iso_time, now_ms
from pipeline.runtime.dlq_targets import targets_of
from pipeline.runtime.mapping_source import initial_mapping

NO_NOTE: Final = "dismissed by an operator"


@dataclass(frozen=True, slots=True)
class Dismissal:
    """What became of one chosen entry: dismissed now, or already settled before."""

    id: str
    key: str
    dismissed: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "key": self.key, "dismissed": self.dismissed, "detail": self.detail}


def unreplayable(items: Sequence[DlqItem], config: MappingConfig | None) -> dict[str, str]:
    """Why each waiting item can never be replayed, by id; replayable ones are left out.

    ``config`` may be None only when no item is a readable entry (those need the
    mapping to tell).
    """
    found: dict[str, str] = {}
    for item in items:
        if item.settled:
            continue
        if item.entry is None:
            found[item.id] = item.problem or "not a DLQ entry"
            continue
        assert config is not None, "readable entries are judged with the mapping"
        targets = targets_of(item.entry, config)
        if isinstance(targets, str):
            found[item.id] = targets
    return found


def dismissals(
    chosen: Sequence[DlqItem], reasons: dict[str, str], note: str | None
) -> list[Dismissal]:
    """One outcome per chosen item; the marker of each ``dismissed`` one says ``note`` (or
    why it cannot be replayed)."""
    outcomes: list[Dismissal] = []
    for item in chosen:
        if item.settled:
            when = iso_time(item.replayed_at_ms)
            detail = f"already {'dismissed' if item.dismissed else 'replayed'} at {when}"
            outcomes.append(Dismissal(item.id, item.key, False, detail))
        else:
            detail = note or reasons.get(item.id) or NO_NOTE
            outcomes.append(Dismissal(item.id, item.key, True, detail))
    return outcomes


async def dismiss_dead_letters(
    settings: Settings,
    inspector: KafkaInspector,
    ids: Sequence[str],
    unreplayable_only: bool,
    mapping_file: Path | None,
    note: str | None = None,
) -> list[Dismissal]:
    """``sfamp dlq dismiss``: the entries named by ``ids``, or every waiting one no replay
    can deliver (``unreplayable_only``, judged with the mapping that runs now); a marker
    is written for each one not settled yet."""
    check_one_choice(ids, unreplayable_only, "--unreplayable")
    items = (await read_dlq(inspector)).items
    reasons: dict[str, str] = {}
    if ids:
        chosen = by_ids(items, ids)
    else:
        waiting = [item for item in items if not item.settled]
        config = None
        if any(item.entry is not None for item in waiting):
            version, _ = await initial_mapping(settings.kafka, mapping_file)
            config = version.mapping
        reasons = unreplayable(waiting, config)
        chosen = [item for item in waiting if item.id in reasons]
    outcomes = dismissals(chosen, reasons, note)
    at = now_ms()
    dismissed = {outcome.id: outcome.detail for outcome in outcomes if outcome.dismissed}
    markers = [dismissal_marker(i, dismissed[i.id], at) for i in chosen if i.id in dismissed]
    await append_markers(settings.kafka, markers)
    return outcomes
