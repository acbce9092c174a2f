"""`sfamp backfill` runs the mapping `sfamp run` would: the newer of the file and the published."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.config.settings import KafkaSettings
from pipeline.kafka.config_topic import publish_mapping
from tests.backfill.conftest import CliRun, Sandboxes, mapping

pytestmark = pytest.mark.integration


async def test_a_newer_published_mapping_wins_over_the_file(
    sandboxes: Sandboxes, tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    await sandboxes.seed("Account", 3)
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(mapping(group_type="from_file").model_dump(mode="json")))
    os.utime(path, (1_700_000_000, 1_700_000_000))
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    await publish_mapping(kafka, mapping(group_type="published"), now_ms=1_800_000_000_000)

    environment = sandboxes.environment(SFAMP_KAFKA__TOPIC_PREFIX=topic_prefix)
    environment["SFAMP_KAFKA__BOOTSTRAP_SERVERS"] = kafka_bootstrap
    run = await CliRun.start(["--mapping", str(path), "--dry-run", "--json"], environment, tmp_path)
    code, out, err = await run.finish()

    assert code == 0, err
    sample = json.loads(out)["sample"]
    assert sample, out
    assert {identification["group_type"] for identification in sample} == {"published"}


async def test_a_newer_published_mapping_the_org_refuses_gives_way_to_the_file(
    sandboxes: Sandboxes, tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """As a restarted service does: the file runs, and the output says why."""
    await sandboxes.seed("Account", 3)
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(mapping(group_type="from_file").model_dump(mode="json")))
    os.utime(path, (1_700_000_000, 1_700_000_000))
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    typo = mapping(group_type="published", properties={"Name": "name", "Industy": "industry"})
    published = await publish_mapping(kafka, typo, now_ms=1_800_000_000_000)

    environment = sandboxes.environment(SFAMP_KAFKA__TOPIC_PREFIX=topic_prefix)
    environment["SFAMP_KAFKA__BOOTSTRAP_SERVERS"] = kafka_bootstrap
    run = await CliRun.start(["--mapping", str(path), "--dry-run", "--json"], environment, tmp_path)
    code, out, err = await run.finish()

    assert code == 0, err
    assert {identification["group_type"] for identification in json.loads(out)["sample"]} == {
        "from_file"
    }
    assert (
        f"warning: sfamp.config revision {published.revision} does not match the org "
        f"(the mapping does not match the Salesforce org: 1 problem); backfilling with {path} "
        "instead"
    ) in " ".join(err.split())
