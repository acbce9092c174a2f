"""One rule for which mapping runs (run, backfill, dlq replay): the newer of file and published."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import KafkaSettings
from pipeline.config.validation import load_mapping
from pipeline.errors import KafkaError
from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.config_topic import publish_mapping, stored_revision
from pipeline.runtime.mapping_source import (
    FileWatch,
    MappingHolder,
    NoMappingToRun,
    initial_mapping,
)
from pipeline.runtime.service import serving
from pipeline.sandbox_stack import SandboxStack
from tests.runtime.conftest import MAPPING, settings_for
from tests.support.ports import unused_port

pytestmark = pytest.mark.integration


@pytest.fixture
def mapping_file(tmp_path: Path) -> Path:
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(MAPPING))
    os.utime(path, (1_700_000_000, 1_700_000_000))  # 2023-11-14T22:13:20Z
    return path


async def test_the_newer_of_the_file_and_the_published_mapping_runs(
    kafka_bootstrap: str, topic_prefix: str, mapping_file: Path
) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    config = load_mapping(mapping_file)
    await publish_mapping(settings, config, now_ms=1_600_000_000_000)  # older than the file
    version, _ = await initial_mapping(settings, mapping_file)
    assert version.source == f"file:{mapping_file}"

    other = MappingConfig.model_validate(
        {**config.model_dump(mode="json"), "sync_cadence": {"mode": "hourly"}}
    )
    await publish_mapping(settings, other, now_ms=1_800_000_000_000)  # newer than the file
    with capture_logs() as logs:
        version, _ = await initial_mapping(settings, mapping_file)
    assert version.source == "sfamp.config revision 2"
    assert version.passed_over is not None
    assert version.passed_over.source == f"file:{mapping_file}"
    # The file named on the command line does not run: said, with both times.
    passed_over = [e for e in logs if e["event"] == "mapping_file_older_than_published"]
    assert passed_over == [
        {
            "event": "mapping_file_older_than_published",
            "log_level": "warning",
            "mapping_file": str(mapping_file),
            "file_modified": "2023-11-14T22:13:20+00:00",
            "revision": 2,
            "published_at": "2027-01-15T08:00:00+00:00",
        }
    ]
    # The file's own mapping published later: what runs is the file's, nothing to warn.
    await publish_mapping(settings, config, now_ms=1_900_000_000_000)
    with capture_logs() as logs:
        version, _ = await initial_mapping(settings, mapping_file)
    assert (version.source, version.mapping) == ("sfamp.config revision 3", config)
    assert not [e for e in logs if e["event"] == "mapping_file_older_than_published"]


async def test_a_file_runs_when_kafka_does_not_answer_and_nothing_runs_without_one(
    topic_prefix: str, mapping_file: Path
) -> None:
    settings = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{unused_port()}", topic_prefix=topic_prefix
    )
    version, offset = await initial_mapping(settings, mapping_file)
    assert (version.source, offset) == (f"file:{mapping_file}", -1)
    with pytest.raises(KafkaError, match="cannot read") as raised:
        await initial_mapping(settings, None)
    # What to do: give a file, or point at the Kafka that holds the published mapping.
    assert "--mapping FILE" in str(raised.value)
    assert "SFAMP_KAFKA__BOOTSTRAP_SERVERS" in str(raised.value)


async def test_with_neither_a_file_nor_a_published_mapping_nothing_runs(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """What a backfill or a replay says (``sfamp run`` waits for the first import instead)."""
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    with pytest.raises(NoMappingToRun) as raised:
        await initial_mapping(settings, None)
    assert str(raised.value) == (
        "no mapping to run: pass --mapping FILE (or set SFAMP_MAPPING_FILE), "
        "or publish one with 'sfamp config import FILE'"
    )


def _rewrite(path: Path, mapping: dict[str, Any], modified: int) -> None:
    """The file written again (as a new pod's ConfigMap is), stamped ``modified``."""
    path.write_text(json.dumps(mapping))
    os.utime(path, (modified, modified))


async def test_a_file_written_again_unchanged_does_not_pass_for_newer_than_an_import(
    kafka_bootstrap: str, topic_prefix: str, mapping_file: Path
) -> None:
    """A ConfigMap is written again in every new pod: its modification time is the pod's
    start. The mapping imported after the file's content was first seen keeps running,
    in every new pod; a new content (or an old one written back) still runs at once."""
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    await ensure_topics(settings, sfamp_topics(settings, []))  # as the service starts
    version, _ = await initial_mapping(settings, mapping_file, topics_exist=True)
    # The content is first seen now, at its modification time: 2023-11-14.
    assert version.source == f"file:{mapping_file}"
    imported = {**MAPPING, "sync_cadence": {"mode": "hourly"}}
    await publish_mapping(
        settings, MappingConfig.model_validate(imported), now_ms=1_800_000_000_000
    )  # 2027-01-15
    _rewrite(mapping_file, MAPPING, 1_900_000_000)  # a new pod, 2030-03-17
    with capture_logs() as logs:
        version, _ = await initial_mapping(settings, mapping_file)
    assert version.source == "sfamp.config revision 1"
    passed_over = [e for e in logs if e["event"] == "mapping_file_older_than_published"]
    assert passed_over[0]["file_modified"] == "2030-03-17T17:46:40+00:00"
    assert passed_over[0]["file_unchanged_since"] == "2023-11-14T22:13:20+00:00"

    edited = {**MAPPING, "sync_cadence": {"mode": "daily", "at": "04:00"}}
    _rewrite(mapping_file, edited, 1_950_000_000)  # the ConfigMap edited
    version, _ = await initial_mapping(settings, mapping_file)
    assert (version.source, version.mapping.sync_cadence.mode) == (
        f"file:{mapping_file}",
        "daily",
    )
    _rewrite(mapping_file, MAPPING, 2_000_000_000)  # and edited back
    version, _ = await initial_mapping(settings, mapping_file)
    assert (version.source, version.mapping) == (f"file:{mapping_file}", load_mapping(mapping_file))
    stored = await stored_revision(settings)
    assert stored.file_seen is not None
    assert (stored.file_seen.since_ms, stored.file_seen.objects) == (
        2_000_000_000_000,
        ("Account",),
    )


async def test_a_running_service_switches_to_a_new_file_content_and_keeps_it(
    kafka_bootstrap: str, topic_prefix: str, mapping_file: Path
) -> None:
    """The watch offers a file whose content changed, and records it, so that a restart
    counts the file from then; a file only written again (touched) is no new version,
    as at a start: it left the imported mapping until the next restart."""
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    imported = {**MAPPING, "sync_cadence": {"mode": "hourly"}}
    await publish_mapping(
        settings, MappingConfig.model_validate(imported), now_ms=1_800_000_000_000
    )
    version, _ = await initial_mapping(settings, mapping_file)
    assert version.source == "sfamp.config revision 1"
    holder = MappingHolder(version)
    watch = FileWatch(holder, mapping_file, settings)
    _rewrite(mapping_file, MAPPING, 1_900_000_000)
    await watch.look()
    assert holder.version.source == "sfamp.config revision 1"
    edited = {**MAPPING, "sync_cadence": {"mode": "daily", "at": "04:00"}}
    _rewrite(mapping_file, edited, 1_950_000_000)
    await watch.look()
    assert (holder.version.source, holder.generation) == (f"file:{mapping_file}", 1)
    stored = await stored_revision(settings)
    assert stored.file_seen is not None
    assert stored.file_seen.since_ms == 1_950_000_000_000
    version, _ = await initial_mapping(settings, mapping_file)  # a restart: the same
    assert version.mapping == holder.current


async def test_a_start_with_an_edited_file_names_the_backfill_it_needs(
    stack: SandboxStack, topic_prefix: str, mapping_file: Path
) -> None:
    """Edited while the service was down: what the new content adds reaches existing
    groups only from a backfill, which the start names, as a reload does."""
    settings = settings_for(stack, topic_prefix)
    async with serving(settings, mapping_file):
        pass  # the content before, seen
    edited = json.loads(json.dumps(MAPPING))
    edited["mappings"][1]["group_properties"].append(
        {"sfdc_field": "Rating", "amplitude_property": "rating"}
    )
    _rewrite(mapping_file, edited, 1_750_000_000)
    with capture_logs() as logs:
        async with serving(settings, mapping_file):
            pass
    changed = [line for line in logs if line["event"] == "mapping_file_changed"]
    assert changed == [
        {
            "event": "mapping_file_changed",
            "log_level": "warning",
            "mapping_file": str(mapping_file),
            "backfill_objects": ["Account"],
            "hint": "existing groups get what it adds from a backfill: "
            "sfamp backfill --object Account",
        }
    ]
    with capture_logs() as logs:  # seen now: no word at the next start
        async with serving(settings, mapping_file):
            pass
    assert not [line for line in logs if line["event"] == "mapping_file_changed"]
