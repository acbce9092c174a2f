"""Coalescing: one update per group, latest commit wins per property, bounded."""

from __future__ import annotations

from itertools import permutations

import pytest

from pipeline.amplitude.payload import to_identification
from pipeline.salesforce.change_events import envelopes_from_event
from pipeline.transform.apply import Order, PropertyChanges, changes_for
from pipeline.transform.coalesce import (
    Coalescer,
    CoalescerFullError,
    DrainedBySource,
    ReadOrders,
)
from pipeline.transform.envelope import ChangeEnvelope, decode, encode
from pipeline.transform.group_update import GroupUpdate, PropertyValue
from tests.transform.fixtures import (
    ACCOUNT_ID,
    OTHER_ACCOUNT_ID,
    UPDATE_BODY,
    UPDATE_CHANGED,
    account_schema,
    cdc_message,
    mapping,
)


def change(
    order: Order,
    values: dict[str, PropertyValue] | None = None,
    unset: set[str] | None = None,
    group: str = "A",
) -> PropertyChanges:
    return PropertyChanges(
        group_type="account",
        group_value=group,
        order=order,
        set=values or {},
        unset=frozenset(unset or ()),
    )


def drained(*changes: PropertyChanges) -> list[GroupUpdate]:
    coalescer = Coalescer(max_groups=100)
    for item in changes:
        coalescer.add(item)
    return coalescer.drain()


def test_changes_to_one_group_become_one_update() -> None:
    (update,) = drained(change((1, 0, 0), {"name": "Acme"}), change((2, 0, 0), {"tier": "gold"}))
    assert update == GroupUpdate("account", "A", {"name": "Acme", "tier": "gold"}, frozenset())


@pytest.mark.parametrize("arrival", list(permutations(range(3))))
def test_latest_commit_wins_whatever_the_arrival_order(arrival: tuple[int, ...]) -> None:
    history = [
        change((1000, 5, 1), {"name": "first"}),
        change((1000, 5, 2), {"name": "second"}),
        change((2000, 1, 1), {"name": "third"}),
    ]
    (update,) = drained(*(history[i] for i in arrival))
    assert update.set == {"name": "third"}


@pytest.mark.parametrize("reverse", [False, True])
def test_later_unset_beats_earlier_set(reverse: bool) -> None:
    pair = [change((1, 0, 0), {"fax": "555"}), change((2, 0, 0), unset={"fax"})]
    (update,) = drained(*(reversed(pair) if reverse else pair))
    assert update.set == {}
    assert update.unset == frozenset({"fax"})


@pytest.mark.parametrize("reverse", [False, True])
def test_later_set_beats_earlier_unset(reverse: bool) -> None:
    pair = [change((1, 0, 0), unset={"fax"}), change((1, 0, 1), {"fax": "555"})]
    (update,) = drained(*(reversed(pair) if reverse else pair))
    assert update.set == {"fax": "555"}
    assert update.unset == frozenset()


def test_commit_number_breaks_a_timestamp_tie() -> None:
    (update,) = drained(change((5, 9, 0), {"x": "late"}), change((5, 8, 7), {"x": "early"}))
    assert update.set == {"x": "late"}


def test_exact_tie_goes_to_the_later_arrival() -> None:
    (update,) = drained(change((5, 5, 5), {"x": "a"}), change((5, 5, 5), {"x": "b"}))
    assert update.set == {"x": "b"}


def test_drain_is_sorted_and_empties_the_buffer() -> None:
    coalescer = Coalescer(max_groups=10)
    for group in ("c", "a", "b"):
        coalescer.add(change((1, 0, 0), {"n": group}, group=group))
    coalescer.add(
        PropertyChanges("contact", "a", (1, 0, 0), {"z": 1, "m": 2}, frozenset({"q", "b"}))
    )
    assert coalescer.pending_groups == 4
    updates = coalescer.drain()
    assert [u.key for u in updates] == [
        ("account", "a"),
        ("account", "b"),
        ("account", "c"),
        ("contact", "a"),
    ]
    assert list(updates[3].set) == ["m", "z"]
    assert coalescer.pending_groups == 0
    assert coalescer.drain() == []


def test_full_coalescer_accepts_known_groups_and_refuses_new_ones() -> None:
    coalescer = Coalescer(max_groups=2)
    coalescer.add(change((1, 0, 0), {"n": 1}, group="a"))
    assert not coalescer.is_full()
    coalescer.add(change((1, 0, 0), {"n": 1}, group="b"))
    assert coalescer.is_full()
    coalescer.add(change((2, 0, 0), {"n": 2}, group="a"))
    with pytest.raises(CoalescerFullError, match="holds 2 groups"):
        coalescer.add(change((1, 0, 0), {"n": 1}, group="c"))
    assert coalescer.pending_groups == 2
    coalescer.drain()
    coalescer.add(change((1, 0, 0), {"n": 1}, group="c"))
    assert coalescer.pending_groups == 1


def test_max_groups_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(max_groups=0)


def test_cdc_to_group_identification_end_to_end() -> None:
    basic = mapping({"Industry": "industry", "Fax": "fax", "BillingCity": "city"})
    schema = account_schema()
    later = cdc_message(
        "UPDATE",
        [ACCOUNT_ID, OTHER_ACCOUNT_ID],
        {"Industry": "Energy", "Fax": "555"},
        changed=["Industry", "Fax"],
        commit_ts=1714158000000,
    )
    earlier = cdc_message("UPDATE", body=UPDATE_BODY, changed=UPDATE_CHANGED)
    coalescer = Coalescer(max_groups=10)
    for message in (later, earlier):  # arrives out of commit order
        for env in envelopes_from_event(message):
            outcome = changes_for(decode(encode(env)), basic, schema)
            assert isinstance(outcome, PropertyChanges)
            coalescer.add(outcome)
    first, second = coalescer.drain()
    assert to_identification(first) == {
        "group_type": "account",
        "group_value": ACCOUNT_ID,
        "group_properties": {"$set": {"city": "Oakland", "fax": "555", "industry": "Energy"}},
    }
    assert second.key == ("account", OTHER_ACCOUNT_ID)


def test_older_change_still_writes_properties_nobody_newer_wrote() -> None:
    newer = change((9, 0, 0), {"name": "new"})
    older = change((1, 0, 0), {"name": "old", "tier": "gold"}, unset={"fax"})
    (update,) = drained(newer, older)
    assert update.set == {"name": "new", "tier": "gold"}
    assert update.unset == frozenset({"fax"})


def test_drained_by_source_takes_each_property_from_its_latest_commit() -> None:
    # Two records in two partitions naming one group: each coalesces apart.
    first, second = Coalescer(max_groups=10), Coalescer(max_groups=10)
    first.add(change((3, 0, 0), {"name": "newer", "tier": "gold"}))
    first.add(change((1, 0, 0), {"n": 1}, group="only-first"))
    second.add(change((2, 0, 0), {"name": "older", "region": "EMEA"}, unset={"tier"}))
    second.add(change((4, 0, 0), {"n": 2}, group="only-second"))

    drained = DrainedBySource({"p1": first, "p2": second})

    both = {"name": "newer", "region": "EMEA", "tier": "gold"}
    assert drained.updates() == [
        GroupUpdate("account", "A", both, frozenset()),
        GroupUpdate("account", "only-first", {"n": 1}, frozenset()),
        GroupUpdate("account", "only-second", {"n": 2}, frozenset()),
    ]
    assert (first.pending_groups, second.pending_groups) == (0, 0), "drained"
    assert drained.updates(leaving_out={"p1"}) == [
        GroupUpdate("account", "A", {"name": "older", "region": "EMEA"}, frozenset({"tier"})),
        GroupUpdate("account", "only-second", {"n": 2}, frozenset()),
    ]
    assert drained.updates(leaving_out={"p1", "p2"}) == []
    assert drained.updates()[0].set == both, "asking again leaves nothing out"
    assert drained.holds({"p2"})
    assert not drained.holds({"p3"})


def test_drained_by_source_holds_a_source_only_through_its_groups() -> None:
    shared, alone, empty = Coalescer(10), Coalescer(10), Coalescer(10)
    shared.add(change((1, 0, 0), {"n": 1}, group="A"))
    alone.add(change((2, 0, 0), {"n": 2}, group="A"))
    alone.add(change((2, 0, 0), {"n": 2}, group="B"))
    drained = DrainedBySource({"shared": shared, "alone": alone, "empty": empty})
    assert drained.holds({"shared"}), "a source whose only group others changed too"
    assert not drained.holds({"empty"})


def test_reads_are_placed_per_object_and_record() -> None:
    """A read moves after its own record's changes only: one of another object with the
    same id (a ``gap_overflow`` names none) leaves it where it is."""
    orders = ReadOrders()
    orders.place(ChangeEnvelope("Account", "", "gap_overflow", 2000, 5, source="rest"))
    other = ChangeEnvelope("Contact", "", "gap_overflow", 1000, source="rest")
    assert orders.place(other) == other
    read = orders.place(ChangeEnvelope("Account", "", "gap_overflow", 1000, source="rest"))
    assert read.ordering == (2000, 5, 1)
    first = ChangeEnvelope("Contact", "003A", "update", 3000, full=True, source="rest")
    assert orders.place(first) == first, "a record's first change stays as it is"
