"""`sfamp dlq list|replay` against the real broker and the Amplitude sandbox."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
from typer.testing import CliRunner

from pipeline.config.settings import KafkaSettings
from pipeline.kafka.records import DlqEntry
from pipeline.kafka.topics import TopicNames
from pipeline.sandbox_stack import SandboxStack
from pipeline.transform.envelope import encode
from sfamp_sandbox.amplitude.state import parse_fault
from tests.ops.conftest import BLOCKED_GROUP, Cli, change, cli_app, environment, produce
from tests.runtime.conftest import Org, group, wait_until
from tests.support.ports import unused_port

pytestmark = pytest.mark.integration


def now_ms() -> int:
    return int(time.time() * 1000)


def rejected(
    group_value: str,
    props: dict[str, object],
    unset: tuple[str, ...] = (),
    group_type: str = "account",
) -> DlqEntry:
    identification = {
        "group_type": group_type,
        "group_value": group_value,
        "group_properties": {"$set": props}
        | ({"$unset": dict.fromkeys(unset, "-")} if unset else {}),
    }
    return DlqEntry(
        id=f"rejected:{group_type}:{group_value}:{now_ms()}",
        reason="rejected",
        detail="Amplitude answered 400: invalid_identification",
        at_ms=now_ms(),
        key=f"{group_type}:{group_value}",
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


async def test_list_on_a_fresh_cluster_is_empty(kafka: KafkaSettings, cli: Cli) -> None:
    """No DLQ topic yet (nothing was ever dead-lettered): empty, exit 0, nothing on stderr."""
    result = await cli("dlq", "list")
    assert result.exit_code == 0, result.output
    assert "is empty" in result.stdout
    assert result.stderr == ""
    as_json = await cli("dlq", "list", "--json")
    assert (as_json.exit_code, json.loads(as_json.stdout)) == (0, [])
    replay = await cli("dlq", "replay", "--all")
    assert (replay.exit_code, replay.stdout.strip()) == (0, "nothing to replay")


async def test_replay_sends_the_record_as_salesforce_holds_it_now(
    topics: KafkaSettings, sfamp: Cli, org: Org, stack: SandboxStack
) -> None:
    record = await org.create("Account", Name="Acme", Industry="Media")
    stale = rejected(record, {"name": "Acme", "industry": "Energy"}, unset=("fax",))
    await dead_letter(topics, stale)
    result = await sfamp("dlq", "replay", "--id", stale.id)
    assert result.exit_code == 0, result.output
    assert "sent 1 group as Salesforce holds it now" in result.stdout
    assert group(stack, "account", record) == {
        "name": "Acme",
        "industry": "Media",
        "sfdc_deleted": False,
    }

    rows = await listing(sfamp)
    assert list(rows) == [stale.id]  # the marker is folded into its entry
    assert rows[stale.id]["replayed_how"] == "reread"
    assert rows[stale.id]["replayed_at"] is not None
    again = await sfamp("dlq", "replay", "--all")
    assert again.exit_code == 0
    assert "nothing to replay" in again.stdout


async def test_replay_of_a_deleted_record_follows_on_delete(
    topics: KafkaSettings, sfamp: Cli, org: Org, stack: SandboxStack
) -> None:
    record = await org.create("Account", Name="Gone Inc", Industry="Energy")
    await org.update("Account", record, Industry="Retail")
    await org.delete("Account", record)
    stale = rejected(record, {"name": "Gone Inc", "industry": "Energy"})
    await dead_letter(topics, stale)
    result = await sfamp("dlq", "replay", "--all", "--json")
    assert result.exit_code == 0, result.output
    (outcome,) = json.loads(result.stdout)
    assert (outcome["ok"], outcome["groups"]) == (True, 1)
    # on_delete=mark: the group is marked and holds the values the record was deleted
    # with, read from Salesforce; the stale payload's industry is not sent.
    assert group(stack, "account", record) == {
        "name": "Gone Inc",
        "industry": "Retail",
        "sfdc_deleted": True,
    }


async def test_replay_rejected_again_stays_with_the_reason(
    topics: KafkaSettings, sfamp: Cli, org: Org, stack: SandboxStack
) -> None:
    await org.create("Account", Name="Blocked", External_Id__c=BLOCKED_GROUP, Tier__c="Growth")
    fine = await org.create("Account", Name="Fine", Industry="Retail")
    bad = rejected(BLOCKED_GROUP, {"name": "Blocked"}, group_type="account_ext")
    good = rejected(fine, {"name": "Fine"})
    await dead_letter(topics, bad, good)
    result = await sfamp("dlq", "replay", "--all", "--json")
    assert result.exit_code == 1
    outcomes = {o["id"]: o for o in json.loads(result.stdout)}
    assert outcomes[good.id]["ok"] is True
    assert outcomes[bad.id]["ok"] is False
    assert "rejected again (400)" in outcomes[bad.id]["detail"]
    rows = await listing(sfamp)
    assert rows[bad.id]["replayed_at"] is None
    assert rows[good.id]["replayed_at"] is not None


async def test_entry_whose_record_cannot_be_read_stays_with_the_reason(
    topics: KafkaSettings, sfamp: Cli, org: Org
) -> None:
    record = await org.create("Account", Name="Acme")
    stale = rejected(record, {"name": "Old"})
    await dead_letter(topics, stale)
    await org.fault("request_limit", count=50)
    result = await sfamp("dlq", "replay", "--id", stale.id, "--json")
    assert result.exit_code == 1
    (outcome,) = json.loads(result.stdout)
    assert outcome["ok"] is False
    assert "cannot re-read the record from Salesforce" in outcome["detail"]
    assert "request limit" in outcome["detail"]
    assert (await listing(sfamp))[stale.id]["replayed_at"] is None


async def test_unresolved_change_is_replayed_from_the_current_record(
    topics: KafkaSettings, sfamp: Cli, org: Org, stack: SandboxStack
) -> None:
    changes = TopicNames(topics.topic_prefix).changes("Account")
    record = await org.create("Account", Name="Acme", Industry="Media")
    envelope = encode(change(record, now_ms(), replay_id=9)).decode()  # Industry "value-9"
    entry = from_source(changes, 0, envelope, reason="unresolved")
    await dead_letter(topics, entry)
    result = await sfamp("dlq", "replay", "--id", entry.id)
    assert result.exit_code == 0, result.output
    properties = group(stack, "account", record)
    assert properties is not None
    assert properties["industry"] == "Media"
    assert (await listing(sfamp))[entry.id]["replayed_how"] == "reread"


async def test_entry_naming_no_record_cannot_be_replayed(topics: KafkaSettings, sfamp: Cli) -> None:
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
    result = await sfamp("dlq", "replay", "--id", cdc.id)
    assert result.exit_code == 1
    assert "cannot tell which record" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--id", "no-such-id"), "no DLQ entry with id no-such-id"),
        ((), "error: say which entries: --id ID (repeatable), or --all"),
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("replay",), "error: say which entries: --id ID (repeatable), or --all"),
        (("dismiss",), "error: say which entries: --id ID (repeatable), or --unreplayable"),
        (
            ("dismiss", "--unreplayable", "--id", "x"),
            "error: name entries with --id ID (repeatable) or use --unreplayable, not both",
        ),
    ],
)
async def test_a_selection_error_is_told_before_kafka_is_asked(
    kafka: KafkaSettings, cli: Cli, args: tuple[str, ...], message: str
) -> None:
    """What the command line lacks is said even when Kafka is down (not the Kafka error)."""
    unreachable = kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{unused_port()}"})
    result = await asyncio.to_thread(
        CliRunner().invoke, cli_app, ["dlq", *args], env=environment(unreachable)
    )
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [message]


async def test_a_change_made_while_the_replay_sends_is_sent_after_it(
    topics: KafkaSettings, sfamp: Cli, org: Org, stack: SandboxStack
) -> None:
    """The read after the send catches a change made in between: the newer value goes last."""
    assert stack.amplitude is not None
    record = await org.create("Account", Name="Acme", Industry="Media")
    await dead_letter(topics, rejected(record, {"industry": "Energy"}))
    held = parse_fault({"kind": "timeout", "count": 1, "delay_seconds": 2})
    stack.amplitude.state.add_fault(held)  # the first send is held, then answered 504
    replay = asyncio.create_task(sfamp("dlq", "replay", "--all", "--json"))
    await wait_until(lambda: not stack.amplitude.state.faults, what="the held send")
    await org.update("Account", record, Industry="Retail")
    result = await replay
    assert result.exit_code == 0, result.output
    properties = group(stack, "account", record)
    assert properties is not None
    assert properties["industry"] == "Retail"


async def test_a_bad_record_id_fails_its_own_entry_alone(
    topics: KafkaSettings, sfamp: Cli, org: Org, stack: SandboxStack
) -> None:
    fine = await org.create("Account", Name="Fine", Industry="Retail")
    # Well formed, but its last three characters are not the checksum of the first fifteen.
    bad = rejected("001RM0000000001AAE", {"name": "Ghost"})
    good = rejected(fine, {"name": "Old"})
    await dead_letter(topics, bad, good)
    result = await sfamp("dlq", "replay", "--all", "--json")
    assert result.exit_code == 1
    outcomes = {o["id"]: o for o in json.loads(result.stdout)}
    assert outcomes[good.id]["ok"] is True
    assert outcomes[bad.id]["ok"] is False
    assert "001RM0000000001AAE" in outcomes[bad.id]["detail"]
    assert group(stack, "account", fine) == {
        "name": "Fine",
        "industry": "Retail",
        "sfdc_deleted": False,
    }


async def test_an_unreplayable_entry_is_dismissed_and_stops_counting(
    topics: KafkaSettings, sfamp: Cli
) -> None:
    changes = TopicNames(topics.topic_prefix).changes("Account")
    nameless = from_source(changes, 7, "{oops")  # an undecodable change names no record
    await dead_letter(topics, nameless)
    await produce(topics, [(TopicNames(topics.topic_prefix).dlq, b"k", b"not a dlq entry")])
    # The unreadable record waits too: status, list and replay --all count it alike.
    status = await sfamp("status")
    assert "2 entries not replayed" in status.stdout, status.stdout
    assert "2 entries, 2 not replayed" in (await sfamp("dlq", "list")).stdout
    replay = await sfamp("dlq", "replay", "--all", "--json")
    assert replay.exit_code == 1
    outcomes = {o["id"]: o["detail"] for o in json.loads(replay.stdout)}
    unreadable = f"{TopicNames(topics.topic_prefix).dlq}:0:1"
    assert set(outcomes) == {nameless.id, unreadable}
    assert all("'sfamp dlq dismiss --unreplayable' settles it" in d for d in outcomes.values())
    assert outcomes[unreadable].startswith("the record is unreadable; nothing can replay it")
    narrow = await sfamp("dlq", "replay", "--all", env={"COLUMNS": "40"})
    lines = narrow.stdout.splitlines()
    assert lines[0] == "replayed 0 of 2"
    assert {nameless.id, unreadable} <= set(lines), narrow.stdout  # whole, to copy into --id

    dismissed = await sfamp("dlq", "dismiss", "--unreplayable", "--json")
    assert dismissed.exit_code == 0, dismissed.output
    outcomes = {o["id"]: o for o in json.loads(dismissed.stdout)}
    assert set(outcomes) == {nameless.id, f"{TopicNames(topics.topic_prefix).dlq}:0:1"}
    assert all(o["dismissed"] for o in outcomes.values())
    assert "cannot tell which record" in outcomes[nameless.id]["detail"]

    rows = await listing(sfamp)
    assert rows[nameless.id]["replayed_how"] == "dismissed"
    table = await sfamp("dlq", "list")
    assert "2 entries, 0 not replayed, 2 dismissed" in table.stdout
    assert "  malformed · k · - · dismissed 20" in table.stdout, table.stdout  # not "replayed"
    assert "replayed" not in table.stdout.replace("not replayed", "")
    assert "0 entries not replayed" in (await sfamp("status")).stdout
    again = await sfamp("dlq", "replay", "--all")
    assert (again.exit_code, again.stdout.strip()) == (0, "nothing to replay")
    twice = await sfamp("dlq", "dismiss", "--id", nameless.id, "--json")
    assert [o["dismissed"] for o in json.loads(twice.stdout)] == [False]
    # Named, a dismissed entry says so, not to dismiss it (it was).
    named = await sfamp("dlq", "replay", "--id", nameless.id, "--json")
    [detail] = [o["detail"] for o in json.loads(named.stdout)]
    assert re.search(r"; dismissed 20\S+ already$", detail), detail
    assert "dlq dismiss" not in detail
    nothing = await sfamp("dlq", "dismiss", "--unreplayable")
    assert (nothing.exit_code, nothing.stdout.strip()) == (
        0,
        "nothing to dismiss: no waiting entry that a replay cannot deliver",
    )


async def test_a_record_without_a_key_is_named_so(topics: KafkaSettings, sfamp: Cli) -> None:
    await produce(topics, [(TopicNames(topics.topic_prefix).dlq, None, b"not a dlq entry")])
    listed = (await sfamp("dlq", "list")).stdout
    assert "  malformed · (no key) · - · not replayed" in listed, listed
    replayed = (await sfamp("dlq", "replay", "--all")).stdout
    assert "  (no key) · the record is unreadable; nothing can replay it" in replayed, replayed


async def test_a_refused_login_stops_the_replay_in_one_line(
    topics: KafkaSettings, sfamp: Cli, org: Org
) -> None:
    record = await org.create("Account", Name="Acme")
    await dead_letter(topics, rejected(record, {"name": "Old"}), rejected(record, {"name": "X"}))
    result = await sfamp("dlq", "replay", "--all", env={"SFAMP_SALESFORCE__PASSWORD": "wrong"})
    assert result.exit_code == 1
    assert result.stdout == ""  # no table of entries each failing for the same reason
    assert result.stderr.strip().startswith("error: Salesforce refused the password login")
    assert len(result.stderr.strip().splitlines()) == 1
    rows = await listing(sfamp)
    assert all(row["replayed_at"] is None for row in rows.values())


@pytest.mark.parametrize(
    ("args", "env", "given_by"),
    [
        (["--mapping", "nope.json"], {}, "--mapping"),
        ([], {"SFAMP_MAPPING_FILE": "/nowhere/mapping.json"}, "SFAMP_MAPPING_FILE"),
    ],
    ids=["option", "environment"],
)
@pytest.mark.parametrize("command", ["replay", "dismiss"])
async def test_a_missing_mapping_file_is_refused_even_with_nothing_to_do(
    topics: KafkaSettings,
    cli: Cli,
    command: str,
    args: list[str],
    env: dict[str, str],
    given_by: str,
) -> None:
    picked = "--all" if command == "replay" else "--unreplayable"
    result = await cli("dlq", command, picked, *args, env=env)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip().startswith("error: mapping file ")
    assert result.stderr.strip().endswith(f"does not exist (given by {given_by})")
