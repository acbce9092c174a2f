"""Every path that sends a reconciled property records it in ``sfamp.sent``: here the DLQ
replay and the backfill (deliver's flushes are covered by tests/runtime/test_reconcile.py)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.inspect import KafkaInspector
from pipeline.kafka.producer import ChangeProducer
from pipeline.kafka.topics import TopicNames
from pipeline.runtime.backfill import run_backfill
from pipeline.runtime.dlq_redeliver import replay_dead_letters
from pipeline.runtime.reconcile.run import load_digests, run_reconcile
from pipeline.sandbox_stack import SandboxStack
from tests.runtime.conftest import Org, group, settings_for
from tests.runtime.test_reconcile import CONFIG, MAPPING
from tests.support.dlq import rejected


async def test_a_dlq_replay_records_what_it_sent(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(stack, topic_prefix)
    await ensure_topics(settings.kafka, sfamp_topics(settings.kafka, ["Account"]))
    account = await org.create("Account", Name="Acme", AnnualRevenue=1000, NumberOfEmployees=8)
    entry = rejected(account)
    async with ChangeProducer(settings.kafka) as producer:
        await producer.send(TopicNames(topic_prefix).dlq, *entry.encode())
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps(MAPPING))

    async with KafkaInspector(settings.kafka) as inspector:
        [outcome] = await replay_dead_letters(settings, inspector, [], True, mapping)
    assert outcome.ok, outcome.detail
    assert (group(stack, "account", account) or {}).get("per_employee") == 125

    digests = await load_digests(settings, {"account"})
    assert len(digests) == 1  # the formula only: Name is kept fresh by change events
    assert not digests.differs("account", account, "per_employee", 125)
    assert digests.differs("account", account, "per_employee", 100)


async def test_after_a_backfill_a_reconcile_finds_nothing_to_send(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(stack, topic_prefix, runtime={"state_dir": str(tmp_path)})
    accounts = await org.seed("Account", 3)
    backfill = await run_backfill(settings, CONFIG, checkpoint_path=tmp_path / "backfill.json")
    assert backfill.completed, backfill.error
    assert all(group(stack, "account", a) for a in accounts)

    digests = await load_digests(settings, {"account"})
    assert len(digests) == len(accounts)  # the formula of each group; Name is not reconciled
    dry = await run_reconcile(settings, CONFIG, dry_run=True)
    assert (dry.records_read, dry.properties_differing) == (len(accounts), 0)
