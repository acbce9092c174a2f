"""`sfamp topics list|describe|tail` against the real broker."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from typer.testing import CliRunner

from pipeline.config.settings import KafkaSettings
from pipeline.errors import KafkaUnavailableError
from pipeline.kafka.compacted import read_table
from pipeline.kafka.config_topic import FILE_KEY, FileSeen, encode_file_seen
from pipeline.kafka.inspect import KafkaInspector
from pipeline.kafka.producer import ChangeProducer
from pipeline.kafka.records import DlqEntry, ReplayMark
from pipeline.kafka.topics import TopicNames
from pipeline.transform.envelope import encode
from tests.ops.conftest import Cli, change, cli_app, commit, environment, produce
from tests.support.ports import unused_port
from tests.support.silent_kafka import silent_kafka

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


def now_ms() -> int:
    return int(time.time() * 1000)


def json_lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


async def test_list_shows_messages_retention_and_lag(topics: KafkaSettings, cli: Cli) -> None:
    names = TopicNames(topics.topic_prefix)
    changes = names.changes("Account")
    now = now_ms()
    stamps = [now - 3 * HOUR_MS, now - 2 * HOUR_MS, now - HOUR_MS, now - 60_000]
    await produce(
        topics,
        [
            (changes, b"001A", encode(change("001A", ts, replay_id=n)))
            for n, ts in enumerate(stamps)
        ],
    )
    described = json.loads((await cli("topics", "describe", changes, "--json")).stdout)
    partition = next(p["partition"] for p in described["partitions"] if p["messages"])
    await commit(topics, {TopicPartition(changes, partition): 1})

    result = await cli("topics", "list", "--json")
    assert result.exit_code == 0, result.output
    by_name = {row["topic"]: row for row in json.loads(result.stdout)}
    assert set(by_name) == {changes, names.replay, names.config, names.dlq, names.sent}
    row = by_name[changes]
    assert (row["partitions"], row["messages"], row["lag_messages"]) == (2, 4, 3)
    # The oldest unflushed change is the one at the committed offset: 2 hours old.
    assert 2 * 3600 <= row["lag_seconds"] < 3 * 3600
    assert by_name[names.replay]["retention"] == "compact"
    assert by_name[names.replay]["lag_messages"] is None
    assert (by_name[names.sent]["kind"], by_name[names.sent]["retention"]) == ("sent", "compact")

    table = await cli("topics", "list")
    assert table.exit_code == 0
    assert changes in table.stdout
    assert "compact" in table.stdout
    assert "2h" in table.stdout  # lag in time
    alone = await cli("topics")  # as the README shows it
    assert (alone.exit_code, alone.stdout) == (0, table.stdout)
    alone = await cli("topics", "--json")  # as every inspection command takes it
    assert alone.exit_code == 0, alone.output
    assert {row["topic"] for row in json.loads(alone.stdout)} == set(by_name)
    misplaced = await cli("topics", "--json", "list")
    assert misplaced.exit_code == 2
    assert "give it after the command: sfamp topics list ... --json" in misplaced.output


async def test_list_without_topics_says_so(kafka: KafkaSettings, cli: Cli) -> None:
    result = await cli("topics", "list")
    assert result.exit_code == 0
    assert "no sfamp topics yet" in result.stdout


async def test_describe_shows_partitions_committed_offsets_and_config(
    topics: KafkaSettings, cli: Cli
) -> None:
    changes = TopicNames(topics.topic_prefix).changes("Account")
    await produce(topics, [(changes, b"001B", encode(change("001B", now_ms())))] * 3)
    first = json.loads((await cli("topics", "describe", "Account", "--json")).stdout)
    used = next(p["partition"] for p in first["partitions"] if p["messages"])
    await commit(topics, {TopicPartition(changes, used): 2})

    # The short form changes.<Object> names the same topic.
    result = await cli("topics", "describe", "changes.Account", "--json")
    assert result.exit_code == 0, result.output
    described = json.loads(result.stdout)
    assert described["topic"] == changes
    assert described["consumer_group"] == topics.consumer_group
    parts = {p["partition"]: p for p in described["partitions"]}
    assert parts[used] == {
        "partition": used,
        "begin": 0,
        "end": 3,
        "messages": 3,
        "committed": 2,
        "lag": 1,
    }
    assert parts[1 - used]["committed"] is None
    assert described["lag_messages"] == 1

    replay = await cli("topics", "describe", "replay")
    assert replay.exit_code == 0
    assert "cleanup.policy" in replay.stdout
    assert "compact" in replay.stdout
    assert "committed" in replay.stdout


async def test_describe_unknown_topic_is_one_line(topics: KafkaSettings, cli: Cli) -> None:
    result = await cli("topics", "describe", "changes.Nope")
    assert result.exit_code == 1
    assert "no topic 'changes.Nope'" in result.stderr
    assert "did you mean" not in result.stderr  # nothing near it
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""
    misspelt = await cli("topics", "tail", "changes.Acount")
    assert misspelt.exit_code == 1
    assert "no topic 'changes.Acount'" in misspelt.stderr
    assert "did you mean changes.Account?" in " ".join(misspelt.stderr.split())
    # sfamp's own topics are near too, written yet or not.
    upper = await cli("topics", "tail", "DLQ")
    assert upper.exit_code == 1
    assert "did you mean dlq?" in " ".join(upper.stderr.split()), upper.stderr


async def test_tail_decodes_envelopes_and_shows_malformed(topics: KafkaSettings, cli: Cli) -> None:
    changes = TopicNames(topics.topic_prefix).changes("Account")
    now = now_ms()
    await produce(
        topics,
        [
            (changes, b"001C", encode(change("001C", now - 1000, replay_id=41))),
            (changes, b"001C", b"{not an envelope"),
            (changes, b"001C", encode(change("001C", now, replay_id=42, field="Name"))),
        ],
    )
    read = msgspec.structs.replace(
        change("001D", now, field="Name"), replay_id=None, source="rest", full=True
    )
    await produce(topics, [(changes, b"001D", encode(read))])
    result = await cli("topics", "tail", changes, "--json")
    assert result.exit_code == 0, result.output
    rows = json_lines(result.stdout)
    assert [r["offset"] for r in rows] == [0, 1, 2, 3]
    good, bad, last, reread = rows
    assert (good["object"], good["record_id"], good["op"], good["replay_id"]) == (
        "Account",
        "001C",
        "update",
        41,
    )
    assert good["changed"] == ["Industry"]
    assert good["malformed"] is None
    assert "not JSON" in str(bad["malformed"])
    assert bad["raw"] == "{not an envelope"
    assert last["changed"] == ["Name"]
    assert (good["source"], reread["source"]) == ("cdc", "rest")

    table = await cli("topics", "tail", "changes.Account", "-n", "3")
    assert table.exit_code == 0
    assert "malformed" in table.stdout
    assert "001C" in table.stdout
    assert "Name" in table.stdout
    assert "Industry" not in table.stdout  # -n 3 leaves the first change out
    # A record read again (a gap's or a reconcile's read) is told from a change event.
    reread_line = next(line for line in table.stdout.splitlines() if "001D" in line)
    assert "(rest" in reread_line
    assert "(rest" not in next(line for line in table.stdout.splitlines() if "001C" in line)


async def test_tail_empty_topic_says_so(topics: KafkaSettings, cli: Cli) -> None:
    result = await cli("topics", "tail", "dlq")
    assert result.exit_code == 0
    assert "is empty" in result.stdout


async def test_tail_key_shows_one_record_history(topics: KafkaSettings, cli: Cli) -> None:
    changes = TopicNames(topics.topic_prefix).changes("Account")
    now = now_ms()
    records = [
        (changes, record_id.encode(), encode(change(record_id, now + n, replay_id=n)))
        for n, record_id in enumerate(["001D", "001E", "001D", "001F", "001D"])
    ]
    await produce(topics, records)
    result = await cli("topics", "tail", changes, "--key", "001D", "--json")
    rows = json_lines(result.stdout)
    assert [(r["record_id"], r["replay_id"]) for r in rows] == [
        ("001D", 0),
        ("001D", 2),
        ("001D", 4),
    ]
    last_two = json_lines(
        (await cli("topics", "tail", changes, "--key", "001D", "-n", "2", "--json")).stdout
    )
    assert [r["replay_id"] for r in last_two] == [2, 4]
    none = await cli("topics", "tail", changes, "--key", "nobody")
    assert "no messages match" in none.stdout


async def test_tail_since_relative_and_iso(topics: KafkaSettings, cli: Cli) -> None:
    changes = TopicNames(topics.topic_prefix).changes("Account")
    now = now_ms()
    producer = AIOKafkaProducer(bootstrap_servers=topics.bootstrap_servers)
    await producer.start()
    try:
        for n, age_ms in enumerate([3 * HOUR_MS, 2 * HOUR_MS, 60_000, 0]):
            value = encode(change("001G", now - age_ms, replay_id=n))
            await producer.send_and_wait(
                changes, value, key=b"001G", partition=0, timestamp_ms=now - age_ms
            )
    finally:
        await producer.stop()
    recent = json_lines((await cli("topics", "tail", changes, "--since", "15m", "--json")).stdout)
    assert [r["replay_id"] for r in recent] == [2, 3]
    since = (datetime.now(UTC) - timedelta(minutes=150)).isoformat()
    older = json_lines((await cli("topics", "tail", changes, "--since", since, "--json")).stdout)
    assert [r["replay_id"] for r in older] == [1, 2, 3]
    bad = await cli("topics", "tail", changes, "--since", "yesterday-ish")
    assert bad.exit_code == 2
    assert "relative time" in bad.output


async def test_tail_follow_prints_new_messages_then_stops(topics: KafkaSettings, cli: Cli) -> None:
    changes = TopicNames(topics.topic_prefix).changes("Account")
    # One producer, started before the command: the command's output is this process's
    # stdout while it runs, so a producer starting then would log into it.
    async with ChangeProducer(topics) as producer:
        await producer.send_all([(changes, b"001H", encode(change("001H", now_ms(), replay_id=0)))])
        following = asyncio.ensure_future(
            cli(
                "topics",
                "tail",
                changes,
                "-n",
                "1000",  # more than this test writes: the tail starts at replay id 0
                "--follow",
                "--max-messages",
                "2",
                "--for",
                "30",
                "--json",
            )
        )
        sent = 0
        while not following.done() and sent < 200:
            sent += 1
            record = encode(change("001H", now_ms(), replay_id=sent))
            await producer.send_all([(changes, b"001H", record)])
            await asyncio.sleep(0.1)
        result = await following
    assert result.exit_code == 0, result.output
    rows = json_lines(result.stdout)
    replay_ids = [r["replay_id"] for r in rows]
    # Whatever arrived before the command looked is the tail; exactly two more were followed.
    assert replay_ids[0] == 0
    assert replay_ids == list(range(len(replay_ids)))
    assert len(rows) >= 3
    assert sent >= len(rows) - 1


async def test_tail_zero_lines_shows_no_old_message(topics: KafkaSettings, cli: Cli) -> None:
    """``-n 0``: nothing of what is there, so ``-n 0 -f`` prints only what comes (tail -n0 -f)."""
    changes = TopicNames(topics.topic_prefix).changes("Account")
    old = [(changes, b"001Z", encode(change("001Z", now_ms(), replay_id=0))) for _ in range(3)]
    await produce(topics, old)
    shown = await cli("topics", "tail", changes, "-n", "0")
    assert (shown.exit_code, shown.stdout) == (0, "")
    args = ["-n", "0", "-f", "--max-messages", "1", "--for", "30", "--json"]
    async with ChangeProducer(topics) as producer:
        following = asyncio.ensure_future(cli("topics", "tail", changes, *args))
        sent = 0
        while not following.done() and sent < 100:  # until the follow has seen one
            sent += 1
            record = encode(change("001Z", now_ms(), replay_id=sent))
            await producer.send_all([(changes, b"001Z", record)])
            await asyncio.wait({following}, timeout=0.2)
        followed = await following
    assert followed.exit_code == 0, followed.output
    [row] = json_lines(followed.stdout)  # exactly one, and a new one
    assert row["replay_id"] >= 1


async def test_follow_ends_after_for_seconds_when_nothing_arrives(
    topics: KafkaSettings, cli: Cli
) -> None:
    result = await cli("topics", "tail", "config", "--follow", "--for", "0.5")
    assert result.exit_code == 0
    assert result.stdout == ""


async def test_tail_decodes_control_topics(topics: KafkaSettings, cli: Cli) -> None:
    names = TopicNames(topics.topic_prefix)
    mark = ReplayMark("/data/AccountChangeEvent", 77, stored_at_ms=now_ms(), event_ts_ms=now_ms())
    entry = DlqEntry("x:0:1", "malformed", "envelope is not JSON", now_ms(), "001J", "{oops")
    await produce(
        topics,
        [
            (names.replay, *mark.encode()),
            (names.dlq, *entry.encode()),
            (names.config, b"mapping", b"[]"),
            (names.config, FILE_KEY, encode_file_seen(FileSeen("ab12", 1_700_000_000_000))),
        ],
    )
    replay = json_lines((await cli("topics", "tail", "replay", "--json")).stdout)
    assert (replay[0]["channel"], replay[0]["replay_id"]) == ("/data/AccountChangeEvent", 77)
    dlq = json_lines((await cli("topics", "tail", "dlq", "--json")).stdout)
    assert (dlq[0]["id"], dlq[0]["reason"], dlq[0]["key"]) == ("x:0:1", "malformed", "001J")
    config = await cli("topics", "tail", "config")
    assert config.exit_code == 0
    assert "malformed" in config.stdout
    rows = json_lines((await cli("topics", "tail", "config", "--json")).stdout)
    # The mapping file content seen last, shown as what it is.
    assert (rows[1]["revision"], rows[1]["published_at"], rows[1]["malformed"]) == (
        "file ",
        "2023-11-14T22:13:20+00:00",
        None,
    )


@pytest.mark.parametrize(
    "args",
    [("topics", "list"), ("topics", "tail", "dlq"), ("replay", "status"), ("dlq", "list")],
)
async def test_unreachable_kafka_is_one_clear_line(
    kafka: KafkaSettings, cli: Cli, args: tuple[str, ...]
) -> None:
    port = unused_port()  # nothing listens on it
    unreachable = kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{port}"})

    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, cli_app, list(args), env=environment(unreachable)
    )
    assert result.exit_code == 1
    # What is wrong, in words: no Python repr of aiokafka's bootstrap list.
    assert result.stderr.strip().splitlines() == [
        f"error: Kafka at 127.0.0.1:{port} is not answering (connection refused); "
        "check SFAMP_KAFKA__BOOTSTRAP_SERVERS"
    ]


@pytest.mark.parametrize("args", [("describe", "dlq"), ("tail", "replay"), ("tail", "config")])
async def test_control_topics_not_written_yet_are_empty_not_errors(
    kafka: KafkaSettings, cli: Cli, args: tuple[str, ...]
) -> None:
    """A fresh cluster: sfamp's control topics are created on first write."""
    result = await cli("topics", *args)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert "nothing was written" in result.stdout


async def test_a_kafka_that_does_not_resolve_or_speak_kafka_says_so(kafka: KafkaSettings) -> None:
    """Library callers (the console's pages too) get the same one clean line."""
    unknown = kafka.model_copy(update={"bootstrap_servers": "no-such-host.invalid:9092"})
    with pytest.raises(KafkaUnavailableError) as raised:
        await read_table(unknown, "sfamp.config")
    assert str(raised.value) == (
        "cannot read sfamp.config: Kafka at no-such-host.invalid:9092 is not answering "
        "(the host name does not resolve); check SFAMP_KAFKA__BOOTSTRAP_SERVERS"
    )
    with socket.socket() as listener:  # accepts connections, never answers as a broker
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        silent = kafka.model_copy(
            update={"bootstrap_servers": f"127.0.0.1:{port}", "request_timeout_seconds": 1}
        )
        with pytest.raises(KafkaUnavailableError) as raised:
            await read_table(silent, "sfamp.config")
    assert str(raised.value).endswith(
        "accepts connections but no Kafka handshake succeeds: the broker is stuck, or "
        "SFAMP_KAFKA__SECURITY_PROTOCOL and the TLS and SASL settings do not match its listener"
    )


@pytest.mark.parametrize(("option", "value"), [("--max-messages", "3"), ("--for", "5")])
def test_a_follow_option_without_follow_is_a_usage_error(option: str, value: str) -> None:
    # It was ignored: the default 20 messages were printed instead of the 3 asked for.
    result = CliRunner().invoke(
        cli_app, ["topics", "tail", "changes.Account", option, value], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2, result.output
    assert f"Invalid value for {option}: needs --follow; without it, --lines sets" in result.output


async def test_an_inspector_at_a_silent_listener_says_it_accepts_connections(
    kafka: KafkaSettings,
) -> None:
    # Its own start timeout comes before aiokafka's bootstrap error: the listener is still
    # probed, as every other client's failure is, not reported as a bare timeout.
    async with silent_kafka() as silent:
        settings = kafka.model_copy(update={"bootstrap_servers": silent.bootstrap})
        with pytest.raises(KafkaUnavailableError) as raised:
            await KafkaInspector(settings, timeout_seconds=1).start()
    assert str(raised.value) == (
        f"Kafka at {silent.bootstrap} accepts connections but no Kafka handshake succeeds: "
        "the broker is stuck, or SFAMP_KAFKA__SECURITY_PROTOCOL and the TLS and SASL "
        "settings do not match its listener"
    )
