"""FlushWindow.take: the deliver pump's loop over a partition's records, without Kafka."""

from __future__ import annotations

from aiokafka import ConsumerRecord, TopicPartition

from pipeline.runtime.deliver.window import FlushWindow
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
    assert window.coalescer.pending_groups == 3
    assert window.offsets[TP] == 3
    assert window.changes == 3
    assert window.take(TP, records, taken, compiled(CONFIG), SCHEMAS, max_groups=3) == 3


def test_changes_to_held_groups_do_not_fill_the_window() -> None:
    records = [change(offset, "001RM0000000000001") for offset in range(10)]
    window = FlushWindow()
    assert window.take(TP, records, 0, compiled(CONFIG), SCHEMAS, max_groups=2) == 10
    assert window.coalescer.pending_groups == 1
    (update,) = window.coalescer.drain()
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
