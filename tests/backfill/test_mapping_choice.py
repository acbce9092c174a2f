"""`sfamp backfill` runs the mapping `sfamp run` would: the newer of the file and the published."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import KafkaSettings
from pipeline.kafka.config_topic import PublishedMapping, publish_mapping
from tests.backfill.conftest import CliRun, Sandboxes, mapping

pytestmark = pytest.mark.integration


async def _dry_run_beside(
    published: MappingConfig, sandboxes: Sandboxes, tmp_path: Path, kafka: KafkaSettings
) -> tuple[Path, PublishedMapping, tuple[int, str, str]]:
    """A backfill dry run of a file older than ``published``, which is published first."""
    await sandboxes.seed("Account", 3)
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(mapping(group_type="from_file").model_dump(mode="json")))
    os.utime(path, (1_700_000_000, 1_700_000_000))
    revision = await publish_mapping(kafka, published, now_ms=1_800_000_000_000)
    environment = sandboxes.environment(SFAMP_KAFKA__TOPIC_PREFIX=kafka.topic_prefix)
    environment["SFAMP_KAFKA__BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
    run = await CliRun.start(["--mapping", str(path), "--dry-run", "--json"], environment, tmp_path)
    return path, revision, await run.finish()


async def test_a_newer_published_mapping_wins_over_the_file(
    sandboxes: Sandboxes, tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    published = mapping(group_type="published")
    _, _, (code, out, err) = await _dry_run_beside(published, sandboxes, tmp_path, kafka)

    assert code == 0, err
    sample = json.loads(out)["sample"]
    assert sample, out
    assert {identification["group_type"] for identification in sample} == {"published"}


async def test_a_newer_published_mapping_the_org_refuses_gives_way_to_the_file(
    sandboxes: Sandboxes, tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """As a restarted service does: the file runs, and the output says why."""
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    typo = mapping(group_type="published", properties={"Name": "name", "Industy": "industry"})
    path, published, (code, out, err) = await _dry_run_beside(typo, sandboxes, tmp_path, kafka)

    assert code == 0, err
    assert {identification["group_type"] for identification in json.loads(out)["sample"]} == {
        "from_file"
    }
    assert (
        f"warning: sfamp.config revision {published.revision} does not match the org "
        f"(the mapping does not match the Salesforce org: 1 problem); backfilling with {path} "
        "instead"
    ) in " ".join(err.split())
