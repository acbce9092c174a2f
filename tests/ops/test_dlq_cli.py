"""`sfamp dlq list|replay` against the real broker and the Amplitude sandbox."""

from __future__ import annotations

import json
import time

import pytest

from pipeline.config.settings import KafkaSettings
from pipeline.kafka.envelope import encode
from pipeline.kafka.records import DlqEntry
from pipeline.kafka.topics import TopicNames
from pipeline.sandbox.amplitude import AmplitudeSandbox
from tests.ops.conftest import BLOCKED_GROUP, Cli, change, produce

pytestmark = pytest.mark.integration


def now_ms() -> int:
    return int(time.time() * 1000)


def rejected(group_value: str, props: dict[str, object], unset: tuple[str, ...] = ()) -> DlqEntry:
    identification = {
        "group_type": "account",
        "group_value": group_value,
        "group_properties": {"$set": props}
        | ({"$unset": dict.fromkeys(unset, "-")} if unset else {}),
    }
    return DlqEntry(
        id=f"rejected:account:{group_value}:{now_ms()}",
        reason="rejected",
        detail="Amplitude answered 400: invalid_identification",
        at_ms=now_ms(),
        key=f"account:{group_value}",
        payload=identification,
    )


def from_source(topic: str, offset: int, payload: str, reason: str = "malformed") -> DlqEntry:
    return DlqEntry(
        id=f"{topic}:0:{offset}",
        reason=reason,  # type: ignore[arg-type]
        detail="envelope is not JSON",
        at_ms=now_ms(),
        key="001K",
        payload=payload,
        source_topic=topic,
        source_partition=0,
        source_offset=offset,
    )


async def dead_letter(kafka: KafkaSettings, *entries: DlqEntry) -> None:
    await produce(kafka, [(TopicNames(kafka.topic_prefix).dlq, *e.encode()) for e in entries])


async def listing(cli: Cli) -> dict[str, dict[str, object]]:
    result = await cli("dlq", "list", "--json")
    assert result.exit_code == 0, result.output
    return {row["id"]: row for row in json.loads(result.stdout)}


async def test_list_empty(topics: KafkaSettings, cli: Cli) -> None:
    result = await cli("dlq", "list")
    assert result.exit_code == 0
    assert "is empty" in result.stdout


async def test_list_shows_entries_and_unreadable_records(topics: KafkaSettings, cli: Cli) -> None:
    changes = TopicNames(topics.topic_prefix).changes("Account")
    entry = from_source(changes, 3, "{oops")
    await dead_letter(topics, rejected("001L", {"name": "Acme"}), entry)
    await produce(topics, [(TopicNames(topics.topic_prefix).dlq, b"k", b"not a dlq entry")])
    rows = await listing(cli)
    assert len(rows) == 3
    listed = rows[entry.id]
    assert (listed["reason"], listed["key"], listed["source_topic"]) == (
        "malformed",
        "001K",
        changes,
    )
    assert listed["replayed_at"] is None
    assert sum(1 for row in rows.values() if row["malformed"]) == 1

    table = await cli("dlq", "list")
    assert "3 entries, 3 not replayed" in table.stdout
    assert "envelope is not JSON" in table.stdout
    assert "malformed" in table.stdout


async def test_replay_rejected_sends_to_amplitude_and_marks(
    topics: KafkaSettings, cli: Cli, amplitude: AmplitudeSandbox
) -> None:
    good = rejected("001M", {"name": "Acme", "industry": "Energy"}, unset=("fax",))
    await dead_letter(topics, good)
    result = await cli("dlq", "replay", "--id", good.id, amplitude_url=amplitude.base_url)
    assert result.exit_code == 0, result.output
    assert "accepted" in result.stdout
    stored = amplitude.state.store("us").groups[("account", "001M")]
    assert stored == {"name": "Acme", "industry": "Energy"}

    rows = await listing(cli)
    assert list(rows) == [good.id]  # the marker is folded into its entry
    assert rows[good.id]["replayed_how"] == "amplitude"
    assert rows[good.id]["replayed_at"] is not None
    again = await cli("dlq", "replay", "--all", amplitude_url=amplitude.base_url)
    assert again.exit_code == 0
    assert "nothing to replay" in again.stdout


async def test_replay_still_rejected_stays_unreplayed(
    topics: KafkaSettings, cli: Cli, amplitude: AmplitudeSandbox
) -> None:
    bad, fine = rejected(BLOCKED_GROUP, {"name": "Nope"}), rejected("001N", {"name": "Fine"})
    await dead_letter(topics, bad, fine)
    result = await cli("dlq", "replay", "--all", "--json", amplitude_url=amplitude.base_url)
    assert result.exit_code == 1
    outcomes = {o["id"]: o for o in json.loads(result.stdout)}
    assert outcomes[fine.id]["ok"] is True
    assert outcomes[bad.id]["ok"] is False
    assert "rejected again (400)" in outcomes[bad.id]["detail"]
    rows = await listing(cli)
    assert rows[bad.id]["replayed_at"] is None
    assert rows[fine.id]["replayed_at"] is not None


async def test_replay_malformed_reproduces_to_source_topic(topics: KafkaSettings, cli: Cli) -> None:
    changes = TopicNames(topics.topic_prefix).changes("Account")
    fixed = encode(change("001K", now_ms(), replay_id=9)).decode()
    entry = from_source(changes, 0, fixed, reason="unresolved")
    await dead_letter(topics, entry)
    result = await cli("dlq", "replay", "--id", entry.id)
    assert result.exit_code == 0, result.output
    assert f"produced again to {changes}" in result.stdout

    tail = await cli("topics", "tail", changes, "--key", "001K", "--json")
    (row,) = [json.loads(line) for line in tail.stdout.splitlines()]
    assert (row["record_id"], row["replay_id"], row["malformed"]) == ("001K", 9, None)
    assert (await listing(cli))[entry.id]["replayed_how"] == "reproduce"


async def test_entry_without_source_cannot_be_replayed(topics: KafkaSettings, cli: Cli) -> None:
    cdc = DlqEntry(
        "cdc:/data/AccountChangeEvent:5",
        "malformed",
        "CDC event not understood",
        now_ms(),
        "/data/AccountChangeEvent",
        "{}",
        extra={"channel": "/data/AccountChangeEvent"},
    )
    await dead_letter(topics, cdc)
    result = await cli("dlq", "replay", "--id", cdc.id)
    assert result.exit_code == 1
    assert "nothing to send again" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--id", "no-such-id"), "no DLQ entry with id no-such-id"),
        ((), "--id ID"),
        (("--all", "--id", "x"), "not both"),
    ],
)
async def test_replay_selection_errors_are_one_line(
    topics: KafkaSettings, cli: Cli, args: tuple[str, ...], message: str
) -> None:
    result = await cli("dlq", "replay", *args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
