"""Reads are placed after the changes of their record that came before them in a window."""

from __future__ import annotations

from pipeline.config.mapping import ObjectMapping
from pipeline.transform.apply import PropertyChanges, changes_for
from pipeline.transform.coalesce import Coalescer, ReadOrders
from pipeline.transform.envelope import ChangeEnvelope, Source
from pipeline.transform.reads import read_order, reread_envelope

SECOND_MS = 1_715_342_400_000  # 2024-05-10T12:00:00Z
STAMP = "2024-05-10T12:00:00.000+0000"


def envelope(industry: str, commit_ts: int, source: Source = "cdc") -> ChangeEnvelope:
    return ChangeEnvelope(
        object="Account",
        record_id="001A",
        op="update",
        commit_ts=commit_ts,
        commit_number=7 if source == "cdc" else 0,
        fields={"Industry": industry},
        full=source != "cdc",
        source=source,
    )


def change(env: ChangeEnvelope) -> PropertyChanges:
    industry = env.fields["Industry"]
    return PropertyChanges("account", "001A", env.ordering, {"industry": industry}, frozenset())


def industry_after(changes: list[PropertyChanges]) -> str:
    coalescer = Coalescer(10)
    for item in changes:
        coalescer.add(item)
    (update,) = coalescer.drain()
    return str(update.set["industry"])


def test_a_read_wins_over_an_earlier_event_of_its_stamps_second() -> None:
    orders = ReadOrders()
    event = orders.place(envelope("Media", SECOND_MS + 50))
    read = orders.place(envelope("Retail", SECOND_MS, "rest"))  # SystemModstamp: X.000

    assert read.ordering > event.ordering
    assert industry_after([change(event), change(read)]) == "Retail"
    # A change held for a flush-time lookup is added later, and still loses to the read.
    assert industry_after([change(read), change(event)]) == "Retail"


def test_an_event_after_the_read_keeps_its_own_order() -> None:
    orders = ReadOrders()
    first = orders.place(envelope("Media", SECOND_MS + 50))
    read = orders.place(envelope("Retail", SECOND_MS, "rest"))
    later = orders.place(envelope("Energy", SECOND_MS + 500))

    assert later.ordering > read.ordering > first.ordering
    assert industry_after([change(first), change(read), change(later)]) == "Energy"


def test_events_and_reads_of_other_records_are_not_moved() -> None:
    orders = ReadOrders()
    orders.place(envelope("Media", SECOND_MS + 50))
    other = ChangeEnvelope(
        object="Account", record_id="001B", op="update", commit_ts=SECOND_MS, source="rest"
    )
    event = envelope("Energy", SECOND_MS + 10)

    assert orders.place(other) == other
    assert orders.place(event) == event  # an event is never moved


def test_a_reread_is_ordered_no_earlier_than_its_gap_event() -> None:
    record = {"Id": "001A", "Industry": "Retail", "SystemModstamp": STAMP}
    assert read_order(record, SECOND_MS + 80) == SECOND_MS + 80
    assert read_order(record, 0) == SECOND_MS
    gone = reread_envelope("Account", "001A", None, floor_ms=SECOND_MS + 80)
    assert (gone.op, gone.commit_ts, gone.source) == ("delete", SECOND_MS + 80, "rest")
    deleted = reread_envelope("Account", "001A", {**record, "IsDeleted": True}, floor_ms=0)
    assert (deleted.op, deleted.commit_ts, deleted.full) == ("delete", SECOND_MS, True)


def test_a_read_of_a_deleted_record_carries_the_values_it_was_deleted_with() -> None:
    row = {"Id": "001A", "Industry": None, "IsDeleted": True, "SystemModstamp": STAMP}
    read = reread_envelope("Account", "001A", row, floor_ms=0)
    found = {}
    for policy in ("ignore", "mark", "unset"):
        mapping = ObjectMapping.model_validate(
            {
                "sfdc_object": "Account",
                "group_type": "account",
                "group_name_field": "Id",
                "group_properties": [{"sfdc_field": "Industry", "amplitude_property": "industry"}],
                "on_delete": policy,
            }
        )
        outcome = changes_for(read, mapping, None)
        assert isinstance(outcome, PropertyChanges), outcome
        found[policy] = (dict(outcome.set), sorted(outcome.unset))

    assert found == {
        "ignore": ({}, ["industry"]),  # a silent write cleared it before the delete
        "mark": ({"sfdc_deleted": True}, ["industry"]),
        "unset": ({}, ["industry"]),
    }
