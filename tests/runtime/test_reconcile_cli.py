"""``sfamp reconcile`` as a user runs it: a dry run, and a run killed with SIGKILL that resumes.

Accounts seeded silently were never sent: the digest knows none of them, so every
record's formula value differs and is written to the changes topic.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import KafkaSettings
from pipeline.kafka.config_topic import publish_mapping
from pipeline.sandbox_stack import SandboxStack
from tests.runtime.conftest import Org
from tests.runtime.test_reconcile import MAPPING
from tests.support.silent_kafka import silent_kafka

ROOT = Path(__file__).resolve().parents[2]


def _env(stack: SandboxStack, topic_prefix: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFAMP_")}
    env.update(stack.environment(topic_prefix))
    env.update(
        SFAMP_RUNTIME__STATE_DIR=str(tmp_path / "state"),
        SFAMP_RUNTIME__LOG_FORMAT="json",
        PYTHONPATH=str(ROOT),
        COLUMNS="200",
    )
    return env


async def _start(env: dict[str, str], cwd: Path, *args: str) -> asyncio.subprocess.Process:
    (cwd / "mapping.json").write_text(json.dumps(MAPPING))
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", "reconcile", "--mapping", "mapping.json", *args,
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _finish(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), 90)
    return int(process.returncode or 0), out.decode(), err.decode()


async def _written(bootstrap: str, topic: str) -> Counter[str]:
    """How many times each record id was written to ``topic`` (none when it does not exist)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            return Counter()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: Counter[str] = Counter()
        while batch := await consumer.getmany(timeout_ms=500):
            for records in batch.values():
                found.update(record.key.decode() for record in records if record.key)
        return found
    finally:
        await consumer.stop()


async def test_a_dry_run_prints_what_differs_and_writes_nothing(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    await org.seed("Account", 3)
    env = _env(stack, topic_prefix, tmp_path)
    code, out, err = await _finish(await _start(env, tmp_path, "--dry-run"))
    assert code == 0, err
    assert "reconcile (dry run)" in out
    [row] = [line for line in out.splitlines() if "Account" in line]
    # object, via, records read, differing properties (per property), groups to send
    cells = [cell.strip() for cell in row.split("│")[1:6]]
    assert cells == ["Account", "rest", "3", "3 (per_employee 3)", "3"]
    assert not (tmp_path / "state" / "reconcile-checkpoint.json").exists()
    assert await _written(stack.kafka_bootstrap, f"{topic_prefix}.changes.Account") == Counter()


async def test_a_killed_reconcile_resumes_without_writing_again_what_it_wrote(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    total, page = 400, 50
    await org.seed("Account", total)
    await org.http.post("/__sandbox/latency", json={"ms": 50})  # pages take a while
    env = _env(stack, topic_prefix, tmp_path)
    small = ["--api", "bulk", "--max-records", str(page), "--batch-rows", str(page)]
    killed = await _start(env, tmp_path, *small, "--progress-interval", "0")
    assert killed.stderr is not None
    progressed = 0
    while progressed < 3:
        line = await asyncio.wait_for(killed.stderr.readline(), 60)
        assert line, "the reconcile ended before it could be killed"
        progressed += b'"reconcile_progress"' in line
    killed.send_signal(signal.SIGKILL)
    assert await killed.wait() == -signal.SIGKILL
    topic = f"{topic_prefix}.changes.Account"
    before = await _written(stack.kafka_bootstrap, topic)
    assert 3 * page <= sum(before.values()) < total

    code, out, err = await _finish(await _start(env, tmp_path, *small, "--json"))
    assert code == 0, err
    summary = json.loads(out)
    assert summary["resumed"]
    assert summary["completed"]
    assert summary["bulk_jobs"] == 0  # the killed run's job is read on
    assert summary["records_read"] == total - sum(before.values())
    assert summary["properties_differing"] == summary["groups"] == summary["records_read"]
    # Its progress starts at what the killed run had read, not at 0.
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    [started] = [line for line in lines if line["event"] == "reconcile_object_started"]
    assert started["already_read"] == total - summary["records_read"]
    written = await _written(stack.kafka_bootstrap, topic)
    assert len(written) == total  # every record once, none twice
    assert max(written.values()) == 1


async def test_a_refused_login_is_the_reason_alone_on_stderr(
    stack: SandboxStack, topic_prefix: str, tmp_path: Path
) -> None:
    env = _env(stack, topic_prefix, tmp_path) | {"SFAMP_SALESFORCE__PASSWORD": "wrong"}
    code, out, err = await _finish(await _start(env, tmp_path))
    assert code == 1
    assert out == ""  # no empty table, no footer
    assert err.strip().splitlines() == [
        f"error: Salesforce refused the password login at "
        f"{env['SFAMP_SALESFORCE__LOGIN_URL']}/services/oauth2/token: authentication failure "
        "(invalid_grant); check SFAMP_SALESFORCE__CLIENT_ID, SFAMP_SALESFORCE__CLIENT_SECRET, "
        "SFAMP_SALESFORCE__USERNAME, SFAMP_SALESFORCE__PASSWORD, SFAMP_SALESFORCE__SECURITY_TOKEN"
    ]


async def test_a_refused_login_with_json_still_prints_the_summary(
    stack: SandboxStack, topic_prefix: str, tmp_path: Path
) -> None:
    env = _env(stack, topic_prefix, tmp_path) | {"SFAMP_SALESFORCE__PASSWORD": "wrong"}
    code, out, err = await _finish(await _start(env, tmp_path, "--json"))
    assert code == 1
    summary = json.loads(out)
    assert summary["records_read"] == 0
    assert "refused the password login" in summary["error"]
    assert [line for line in err.splitlines() if line.startswith("error:")] != []


async def test_a_missing_mapping_file_with_json_still_prints_the_summary(
    stack: SandboxStack, topic_prefix: str, tmp_path: Path
) -> None:
    env = _env(stack, topic_prefix, tmp_path)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", "reconcile", "--mapping", "missing.json", "--json",
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    code, out, err = await _finish(process)
    assert code == 1
    summary = json.loads(out)
    assert summary["records_read"] == 0
    assert "missing.json does not exist" in summary["error"], summary
    assert err.strip().splitlines()[-1].startswith("error: mapping file missing.json"), err


async def test_a_second_reconcile_while_one_runs_says_so_in_one_line(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    await org.seed("Account", 2)
    env = _env(stack, topic_prefix, tmp_path)
    checkpoint = tmp_path / "state" / "reconcile-checkpoint.json"
    checkpoint.parent.mkdir(parents=True)
    with (checkpoint.parent / f"{checkpoint.name}.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running reconcile holds it
        code, out, err = await _finish(await _start(env, tmp_path))
    assert code == 1
    assert out == ""
    # Progress lines (the login) may come first; no error log repeats the reason.
    lines = [line for line in err.splitlines() if '"level": "info"' not in line]
    assert lines == [
        f"error: a reconcile is already running with the checkpoint {checkpoint} (the "
        "service's scheduled one, or another sfamp reconcile): run this one once it has ended"
    ]


async def test_an_unwritable_checkpoint_is_one_line_with_what_to_do(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    await org.seed("Account", 2)
    (tmp_path / "a-file").write_text("")
    checkpoint = tmp_path / "a-file" / "reconcile-checkpoint.json"  # under a file
    env = _env(stack, topic_prefix, tmp_path)
    code, out, err = await _finish(await _start(env, tmp_path, "--checkpoint", str(checkpoint)))
    assert (code, out) == (1, "")
    lines = [line for line in err.splitlines() if '"level": "info"' not in line]
    assert lines == [
        f"error: cannot write the reconcile checkpoint {checkpoint}: File exists; choose "
        "a writable, persistent path with --checkpoint or SFAMP_RUNTIME__STATE_DIR"
    ]


async def test_a_signal_while_kafka_does_not_answer_says_so_in_one_line(
    stack: SandboxStack, topic_prefix: str, tmp_path: Path
) -> None:
    # The mapping is read from Kafka first (the published one may be newer); a broker that
    # accepts and never answers holds that read until the signal comes.
    async with silent_kafka() as kafka:
        env = _env(stack, topic_prefix, tmp_path) | {
            "SFAMP_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap
        }
        process = await _start(env, tmp_path)
        await asyncio.wait_for(kafka.connected.wait(), 30)
        process.send_signal(signal.SIGTERM)
        code, out, err = await _finish(process)
    assert code == 143, err
    assert out == ""  # nothing was read: no table
    assert err.strip().splitlines()[-1] == (
        "interrupted by SIGTERM: no checkpoint was written; run again"
    )
    assert "Unclosed" not in err, err


async def test_a_file_newer_than_the_published_revision_warns_what_the_service_leaves_out(
    stack: SandboxStack, org: Org, topic_prefix: str, tmp_path: Path
) -> None:
    """The reconcile runs the newer file; a service following sfamp.config sends what it
    writes as the published revision maps it: a property only the file maps never arrives."""
    await org.seed("Account", 1)
    env = _env(stack, topic_prefix, tmp_path)
    published = {**MAPPING, "mappings": [dict(MAPPING["mappings"][0], group_properties=[
        {"sfdc_field": "Name", "amplitude_property": "name"}])]}  # fmt: skip
    kafka = KafkaSettings(bootstrap_servers=env["SFAMP_KAFKA__BOOTSTRAP_SERVERS"],
                          topic_prefix=topic_prefix)  # fmt: skip
    await publish_mapping(kafka, MappingConfig.model_validate(published), now_ms=1_000)
    code, _, err = await _finish(await _start(env, tmp_path, "--dry-run"))
    assert code == 0, err
    [warning] = [line for line in err.splitlines() if line.startswith("warning:")]
    assert "sfamp.config revision 1 maps (per_employee not among them)" in warning
    assert warning.endswith("publish the file first: sfamp config import mapping.json")
