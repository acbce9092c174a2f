"""What operator commands print: tables alone on stdout, readable at 80 columns; logs on stderr."""

from __future__ import annotations

import json
import time

import pytest
from aiokafka import TopicPartition

from pipeline.config.settings import KafkaSettings
from pipeline.kafka.records import DlqEntry, ReplayMark
from pipeline.kafka.topics import TopicNames
from pipeline.sandbox_stack import SandboxStack
from pipeline.transform.envelope import encode
from tests.ops.conftest import Cli, change, commit, produce
from tests.runtime.conftest import Org

pytestmark = pytest.mark.integration

NARROW = {"COLUMNS": "80"}
HOUR_MS = 3_600_000
BOX = "┏┃┡│└━─┳╇┼┴┓┩┤┘┌┐├┬╋"


def now_ms() -> int:
    return int(time.time() * 1000)


def assert_readable_at_80(stdout: str, *words: str) -> None:
    """No line wider than 80 columns, nothing cut off, and every word still shown whole."""
    wide = [line for line in stdout.splitlines() if len(line) > 80]
    assert not wide, "\n".join(wide)
    assert "…" not in stdout, stdout
    for word in words:
        assert word in stdout, f"{word!r} missing from:\n{stdout}"


def assert_only_a_table(stdout: str) -> None:
    """The title, then the table: no log line before, among or after its rows."""
    lines = stdout.splitlines()
    start = next((n for n, line in enumerate(lines) if line[:1] in BOX), None)
    assert start is not None, f"no table in:\n{stdout}"
    strays = [line for line in lines[:start] if line.lstrip().startswith("{")]
    strays += [line for line in lines[start:] if line[:1] not in BOX]
    assert not strays, "\n".join(strays)


async def fill(kafka: KafkaSettings) -> None:
    """A changes topic two hours behind, two replay marks and one DLQ entry."""
    names = TopicNames(kafka.topic_prefix)
    old = now_ms() - 2 * HOUR_MS
    await produce(
        kafka,
        [(names.changes("Account"), b"001A", encode(change("001A", old + i))) for i in range(3)],
    )
    await commit(kafka, {TopicPartition(names.changes("Account"), p): 0 for p in (0, 1)})
    marks = [
        ReplayMark("/data/AccountChangeEvent", 18098111, old + 500, old),
        ReplayMark("/data/ContactChangeEvent", 5522013, old - 28 * HOUR_MS, old - 28 * HOUR_MS),
    ]
    await produce(kafka, [(names.replay, *m.encode()) for m in marks])
    entry = DlqEntry(
        "rejected:account:001Hs00000Abc01AAA:1",
        "rejected",
        "Amplitude answered 400: invalid identification, group_value is not allowed here",
        now_ms(),
        "account:001Hs00000Abc01AAA",
        {"group_type": "account", "group_value": "001Hs00000Abc01AAA"},
    )
    await produce(kafka, [(names.dlq, *entry.encode())])


async def test_topics_list_prints_only_its_table_at_80_columns(
    topics: KafkaSettings, cli: Cli
) -> None:
    await fill(topics)
    result = await cli("topics", "list", env=NARROW)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert_only_a_table(result.stdout)
    assert_readable_at_80(result.stdout, "compact", "2h", "retention", "lag")
    complete = json.loads((await cli("topics", "list", "--json", env=NARROW)).stdout)
    assert {row["kind"] for row in complete} == {"changes", "replay", "config", "dlq", "sent"}


async def test_replay_status_keeps_age_and_status_at_80_columns(
    topics: KafkaSettings, cli: Cli
) -> None:
    await fill(topics)
    result = await cli("replay", "status", env=NARROW)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert_only_a_table(result.stdout)
    assert_readable_at_80(result.stdout, "age", "status", "2h", "ok", "warn", "18098111")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("topics", "describe", "changes.Account"), ("committed", "partition", "retention")),
        (("topics", "tail", "changes.Account"), ("001A", "update", "Industry")),
        (("topics", "tail", "dlq"), ("rejected", "reason", "detail")),
        # The id whole on a line of its own: it is what `dlq replay --id` takes.
        (("dlq", "list"), ("\nrejected:account:001Hs00000Abc01AAA:1\n", "not replayed")),
    ],
)
async def test_every_table_is_readable_at_80_columns(
    topics: KafkaSettings, cli: Cli, args: tuple[str, ...], words: tuple[str, ...]
) -> None:
    await fill(topics)
    result = await cli(*args, env=NARROW)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert_readable_at_80(result.stdout, *words)


async def test_status_and_replay_at_80_columns_with_no_stray_warnings(
    topics: KafkaSettings, sfamp: Cli, org: Org, stack: SandboxStack
) -> None:
    record = await org.create("Account", Name="Acme")
    entry = DlqEntry(
        f"rejected:account:{record}:1", "rejected", "400", now_ms(), f"account:{record}", {}
    )
    await produce(topics, [(TopicNames(topics.topic_prefix).dlq, *entry.encode())])
    # The replay writes its markers through a producer: on brokers without idempotent
    # producers (the embedded one) nothing about that may reach stderr.
    replay = await sfamp("dlq", "replay", "--all", env=NARROW)
    assert replay.exit_code == 0, replay.output
    assert replay.stderr == ""
    # As dlq list prints entries: the id whole on its own line, then what happened.
    assert replay.stdout.splitlines() == [
        "replayed 1 of 1",
        "",
        entry.id,
        f"  {entry.key} · sent 1 group as Salesforce holds it now",
    ]
    assert_readable_at_80(replay.stdout, "Salesforce")

    status = await sfamp("status", env=NARROW)
    assert status.exit_code == 0, status.output
    assert status.stderr == ""
    assert_readable_at_80(status.stdout, "Salesforce", "admin@sandbox.example", "DLQ")
