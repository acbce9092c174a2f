"""FlushWindow.take: the deliver pump's loop over a partition's records, without Kafka."""

from __future__ import annotations

from aiokafka import ConsumerRecord, TopicPartition

from pipeline.kafka.consumer import Partition
from pipeline.runtime.deliver.window import REREAD_SECONDS, FlushWindow, Reread
from pipeline.transform.compiled import compiled
from pipeline.transform.envelope import ChangeEnvelope, encode
from tests.transform.fixtures import account_config, account_schema

TOPIC = "sfamp.changes.Account"
TP = TopicPartition(TOPIC, 0)
CONFIG = account_config({"Industry": "industry"})
SCHEMAS = {"Account": account_schema()}


def record(offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(TOPIC, 0, offset, 0, 0, b"key", value, None, 3, len(value), [])


def change(
    offset: int, record_id: str, sfdc_object: str = "Account"
) -> ConsumerRecord[bytes, bytes]:
    envelope = ChangeEnvelope(
        sfdc_object, record_id, "update", 1000 + offset, fields={"Industry": f"I{offset}"}
    )
    return record(offset, encode(envelope))


def test_take_stops_when_the_window_holds_max_groups() -> None:
    records = [change(offset, f"001RM{offset:013d}") for offset in range(10)]
    window = FlushWindow()
    taken = window.take(TP, records, 0, compiled(CONFIG), SCHEMAS, max_groups=3)
    assert taken == 3, "the third new group fills the window"
    assert window.pending_groups == 3
    assert window.offsets[TP] == 3
    assert window.changes == 3
    assert window.take(TP, records, taken, compiled(CONFIG), SCHEMAS, max_groups=3) == 3


def test_changes_to_held_groups_do_not_fill_the_window() -> None:
    records = [change(offset, "001RM0000000000001") for offset in range(10)]
    window = FlushWindow()
    assert window.take(TP, records, 0, compiled(CONFIG), SCHEMAS, max_groups=2) == 10
    assert window.pending_groups == 1
    (update,) = window.drain().updates()
    assert update.set == {"industry": "I9"}, "the newest change wins"


def test_malformed_and_unmapped_messages_move_the_offset_without_changes() -> None:
    records = [
        record(0, b"{not json"),
        change(1, "003RM0000000000001", sfdc_object="Contact"),
        change(2, "001RM0000000000002"),
    ]
    window = FlushWindow()
    assert window.take(TP, records, 0, compiled(CONFIG), SCHEMAS, max_groups=100) == 3
    assert window.offsets[TP] == 3
    assert window.changes == 1
    assert [entry.reason for entry in window.dlq] == ["malformed"]
    assert window.dlq[0].source_offset == 0


def test_held_names_the_run_of_offsets_the_window_took() -> None:
    """What a rewind keeps instead of reading again: from the first record taken on."""
    records = [change(offset, f"001RM{offset:013d}") for offset in range(5, 12)]
    window = FlushWindow()
    assert window.taken_runs() == {}
    taken = window.take(TP, records, 0, compiled(CONFIG), SCHEMAS, max_groups=3)
    window.take(TP, records, taken, compiled(CONFIG), SCHEMAS, max_groups=100)
    assert window.taken_runs() == {TP: (5, 12)}


def test_each_partition_coalesces_apart_and_a_flush_can_leave_one_out() -> None:
    other = TopicPartition(TOPIC, 1)
    window = FlushWindow()
    shared, own = "001RM0000000000001", "001RM0000000000002"
    table = compiled(CONFIG)
    window.take(TP, [change(0, shared), change(1, own)], 0, table, SCHEMAS, max_groups=10)
    # A later commit of the same record, read from another partition (a re-keyed topic).
    window.take(other, [change(5, shared)], 0, table, SCHEMAS, max_groups=10)

    assert window.pending_groups == 3, "one group per partition that changed it"
    drained = window.drain()
    assert window.pending_groups == 0
    assert {u.group_value: u.set for u in drained.updates()} == {
        shared: {"industry": "I5"},
        own: {"industry": "I1"},
    }
    assert {u.group_value: u.set for u in drained.updates(leaving_out={other})} == {
        shared: {"industry": "I0"},
        own: {"industry": "I1"},
    }
    assert [u.group_value for u in drained.updates(leaving_out={TP})] == [shared]


def test_the_window_counts_every_partition_toward_max_groups() -> None:
    other = TopicPartition(TOPIC, 1)
    window = FlushWindow()
    table = compiled(CONFIG)
    first = [change(offset, f"001RM{offset:013d}") for offset in range(2)]
    assert window.take(TP, first, 0, table, SCHEMAS, max_groups=3) == 2
    second = [change(offset, f"001RM{offset + 10:013d}") for offset in range(5)]
    assert window.take(other, second, 0, table, SCHEMAS, max_groups=3) == 1, "room for one more"


def test_a_flush_waits_until_what_a_rewind_dropped_is_read_again() -> None:
    """Else it would send the first fetch of it, and the rest a cadence period later."""
    first, second = Partition("t", 0), Partition("t", 1)
    reread = Reread()
    reread.add({first: 500, second: 40})
    assert not reread.done({first: 200}, now=1_000.0)  # the wait starts at this first look
    assert not reread.done({first: 500}, now=1_001.0)  # second still behind
    assert reread.held == {second: 40}  # what was reached left the wait, whatever window
    assert reread.done({second: 40}, now=1_002.0)
    assert reread.done({}, now=1_003.0)  # nothing held: nothing to wait for
    reread.add({first: 500, second: 40})
    reread.keep({first})  # a rebalance gave the other partition away
    assert reread.held == {first: 500}
    assert not reread.done({}, now=5_000.0)
    assert reread.done({}, now=5_000.0 + REREAD_SECONDS)  # not for ever
