"""Config import / export / verify and ``sfamp status`` as a user runs them, against the sandboxes.

The commands run as real subprocesses; the sandboxes run in the test's own event
loop, so every wait here is asynchronous.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.config.validation import dump_mapping, load_mapping
from pipeline.kafka.config_topic import publish_mapping
from pipeline.sandbox_stack import SandboxStack
from tests.runtime.conftest import MAPPING, running, settings_for
from tests.support.mappings import marked_twice
from tests.support.ports import unused_port
from tests.support.silent_kafka import silent_kafka

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def stack(kafka_bootstrap: str) -> AsyncIterator[SandboxStack]:
    async with SandboxStack(kafka_bootstrap=kafka_bootstrap) as started:
        yield started


async def sfamp(env: dict[str, str], *args: str, cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _env(stack: SandboxStack, topic_prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFAMP_")}
    env.update(stack.environment(topic_prefix))
    env.update({"PYTHONPATH": str(ROOT), "COLUMNS": "200", **extra})
    return env


def _write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document))
    return path


async def test_import_verifies_publishes_and_export_round_trips(
    stack: SandboxStack, topic_prefix: str, tmp_path: Path
) -> None:
    env = _env(stack, topic_prefix)
    mapping = _write(tmp_path / "mapping.json", MAPPING)

    code, _, err = await sfamp(env, "config", "export", cwd=tmp_path)
    assert code == 1
    assert "no mapping is published" in err
    assert "Traceback" not in err

    code, out, err = await sfamp(env, "config", "import", str(mapping), cwd=tmp_path)
    assert code == 0, err
    assert "admin@sandbox.example" in out  # verify ran and shows the connected user
    assert "published revision 1" in out
    # The first revision: nothing of the org is in Amplitude yet.
    assert out.splitlines()[-2:] == [
        "if no backfill has run yet, records already in Salesforce reach Amplitude from one:",
        "  sfamp backfill",
    ]
    code, out, err = await sfamp(env, "config", "import", "--no-verify", str(mapping), cwd=tmp_path)
    assert code == 0, err
    assert out.strip() == (
        f"unchanged: revision 1 in {topic_prefix}.config is already this mapping; nothing published"
    )

    code, out, err = await sfamp(env, "config", "export", "-o", "exported.json", cwd=tmp_path)
    assert code == 0, err
    exported = (tmp_path / "exported.json").read_text()
    code, out, err = await sfamp(env, "config", "export", "-o", "no/such/dir.json", cwd=tmp_path)
    assert (code, err.strip()) == (
        1,
        "error: cannot write no/such/dir.json: No such file or directory",
    ), err
    assert exported == dump_mapping(load_mapping(mapping))

    # Editing is export -> edit -> import: the next revision replaces the first.
    edited = json.loads(exported)
    assert edited["reconcile"] == {"mode": "daily", "at": "03:00"}  # the default, written out
    edited["sync_cadence"] = {"mode": "hourly"}
    edited["reconcile"] = {"mode": "hourly", "minute": 45}
    _write(tmp_path / "exported.json", edited)
    code, out, err = await sfamp(
        env, "config", "import", "--no-verify", "exported.json", cwd=tmp_path
    )
    assert code == 0, err
    assert "published revision 2" in out
    assert "backfill" not in out  # a new cadence changes no group
    code, out, _ = await sfamp(env, "config", "export", cwd=tmp_path)
    assert json.loads(out)["sync_cadence"] == {"mode": "hourly"}
    assert json.loads(out)["reconcile"] == {"mode": "hourly", "minute": 45}

    # A new property reaches existing groups through a backfill: the import says so.
    edited["mappings"][0]["group_properties"].append(
        {"sfdc_field": "NumberOfEmployees", "amplitude_property": "employees"}
    )
    _write(tmp_path / "exported.json", edited)
    code, out, err = await sfamp(
        env, "config", "import", "--no-verify", "exported.json", cwd=tmp_path
    )
    assert code == 0, err
    # The command on a line of its own, to be copied whole at any width.
    assert out.splitlines()[-2:] == [
        "existing groups get what it adds from a backfill:",
        "  sfamp backfill --object Account",
    ]


async def test_import_refuses_a_mapping_that_fails_verification(
    stack: SandboxStack, topic_prefix: str, tmp_path: Path
) -> None:
    env = _env(stack, topic_prefix)
    broken = json.loads(json.dumps(MAPPING))
    broken["mappings"][0]["group_properties"][1]["sfdc_field"] = "No_Such_Field__c"
    mapping = _write(tmp_path / "broken.json", broken)

    code, out, _ = await sfamp(env, "config", "verify", "--json", str(mapping), cwd=tmp_path)
    assert code == 1
    report = json.loads(out)
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert any("No_Such_Field__c" in c["name"] for c in failed)

    code, out, _ = await sfamp(env, "config", "import", str(mapping), cwd=tmp_path)
    assert code == 1
    assert out.rstrip().endswith(f"nothing published to {topic_prefix}.config"), out
    code, _, _ = await sfamp(env, "config", "export", cwd=tmp_path)
    assert code == 1  # nothing was published


async def test_status_reports_connection_mapping_lag_and_the_running_service(
    stack: SandboxStack, topic_prefix: str, tmp_path: Path
) -> None:
    port = unused_port()
    env = _env(stack, topic_prefix, SFAMP_RUNTIME__HEALTH_PORT=str(port))
    mapping = _write(tmp_path / "mapping.json", MAPPING)
    code, _, err = await sfamp(env, "config", "import", "--no-verify", str(mapping), cwd=tmp_path)
    assert code == 0, err

    code, out, err = await sfamp(env, "status", "--json", cwd=tmp_path)
    assert code == 0, err
    report = json.loads(out)
    assert report["salesforce"]["user_email"] == "admin@sandbox.example"
    assert report["kafka"]["mapping"]["revision"] == 1
    assert report["kafka"]["mapping"]["cadence"] == "every 1s"
    assert report["kafka"]["dlq_pending"] == 0
    assert "no service answers" in report["service"]["error"]

    settings = settings_for(
        stack, topic_prefix, runtime={"health_port": port, "health_host": "127.0.0.1"}
    )
    async with running(settings, None) as service:
        await service.health_started.wait()
        code, out, err = await sfamp(env, "status", cwd=tmp_path)
        assert code == 0, err
        assert "ready" in out
        assert "every 1s" in out
        assert "Account -> account" in out
        assert "daily at 03:00 UTC; next 20" in out  # the reconcile's schedule and next run


async def test_status_without_kafka_is_one_line_and_exit_1(
    stack: SandboxStack, tmp_path: Path
) -> None:
    env = _env(stack, "nokafka", SFAMP_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{unused_port()}")
    code, out, err = await sfamp(env, "status", "--json", cwd=tmp_path)
    assert code == 1
    assert "error" in json.loads(out)["kafka"]
    assert "Traceback" not in err


async def test_import_without_kafka_fails_before_the_online_checks(
    stack: SandboxStack, tmp_path: Path
) -> None:
    env = _env(stack, "nokafka", SFAMP_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{unused_port()}")
    mapping = _write(tmp_path / "mapping.json", MAPPING)
    code, out, err = await sfamp(env, "config", "import", str(mapping), cwd=tmp_path)
    assert code == 1
    assert "verified" not in out  # nothing checked against the org first
    assert "not answering" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["export", "import"])
async def test_config_commands_give_up_on_a_silent_kafka_as_the_inspector_does(
    stack: SandboxStack, tmp_path: Path, command: str
) -> None:
    """A listener that never speaks Kafka (a TLS port, a stuck broker) gets the inspector's
    quick answer, not the service's request timeout (here 600 s: past the wait below)."""
    mapping = _write(tmp_path / "mapping.json", MAPPING)
    args = ["export"] if command == "export" else ["import", str(mapping), "--no-verify"]
    async with silent_kafka() as kafka:
        env = _env(
            stack,
            "silent",
            SFAMP_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap,
            SFAMP_KAFKA__REQUEST_TIMEOUT_SECONDS="600",
        )
        code, out, err = await sfamp(env, "config", *args, cwd=tmp_path)
    assert (code, out) == (1, "")
    assert err.strip().endswith(
        "accepts connections but no Kafka handshake succeeds: the broker is stuck, or "
        "SFAMP_KAFKA__SECURITY_PROTOCOL and the TLS and SASL settings do not match its listener"
    ), err


async def test_import_replaces_a_published_revision_this_version_refuses(
    stack: SandboxStack, topic_prefix: str, tmp_path: Path
) -> None:
    """A revision an older sfamp published before a rule it breaks is no dead end."""
    settings = settings_for(stack, topic_prefix)
    await publish_mapping(settings.kafka, marked_twice(MAPPING), now_ms=1)

    env = _env(stack, topic_prefix)
    # Exported as written, to be put right; status tells it from Kafka being down.
    code, out, err = await sfamp(env, "config", "export", cwd=tmp_path)
    assert code == 0, err
    assert json.loads(out)["mappings"][2]["sfdc_object"] == "Contact"
    assert "revision 1" in err
    assert "exported as written" in " ".join(err.split())
    code, out, err = await sfamp(env, "status", "--json", cwd=tmp_path)
    kafka = json.loads(out)["kafka"]
    assert "error" not in kafka, kafka
    assert "the next 'sfamp config import' replaces it" in kafka["mapping"]["error"]

    mapping = _write(tmp_path / "mapping.json", MAPPING)
    code, out, err = await sfamp(env, "config", "import", "--no-verify", str(mapping), cwd=tmp_path)
    assert code == 0, err
    said = " ".join(out.split())  # as one line, however the terminal wrapped it
    assert said.startswith(f"warning: revision 1 in {topic_prefix}.config cannot be used: ")
    assert "on_delete \"mark\" of group type 'account' is already set by mappings[0]" in said
    assert "; publishing replaces it published revision 2" in said
    code, out, err = await sfamp(env, "config", "export", cwd=tmp_path)
    assert code == 0, err
    assert json.loads(out) == json.loads(dump_mapping(load_mapping(mapping)))
