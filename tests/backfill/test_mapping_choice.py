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
    path, revision, (code, out, err) = await _dry_run_beside(published, sandboxes, tmp_path, kafka)

    assert code == 0, err
    summary = json.loads(out)
    assert summary["sample"], out
    assert {identification["group_type"] for identification in summary["sample"]} == {"published"}
    # Said in words, not only in the JSON log: the file given does not run.
    source = f"sfamp.config revision {revision.revision}"
    assert summary["mapping"] == source
    assert (
        f"warning: {source} is newer than {path} and runs instead; to run the file, "
        f"publish it: sfamp config import {path}"
    ) in " ".join(err.split())


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
    assert json.loads(out)["mapping"] == f"file:{path}"
    assert "runs instead" not in err
    assert (
        f"warning: sfamp.config revision {published.revision} does not match the org "
        f"(the mapping does not match the Salesforce org: 1 problem); backfilling with {path} "
        "instead"
    ) in " ".join(err.split())


async def test_a_published_mapping_the_org_refuses_is_named_in_the_error(
    sandboxes: Sandboxes, tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """With no file to fall back on, the problems are said to be the revision's."""
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    typo = mapping(group_type="published", properties={"Name": "name", "Industy": "industry"})
    revision = await publish_mapping(kafka, typo, now_ms=1_800_000_000_000)
    environment = sandboxes.environment(SFAMP_KAFKA__TOPIC_PREFIX=kafka.topic_prefix)
    environment["SFAMP_KAFKA__BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
    code, out, err = await (await CliRun.start(["--dry-run"], environment, tmp_path)).finish()

    assert code == 1
    assert out == ""
    assert (
        f"error: sfamp.config revision {revision.revision}: the mapping does not match the "
        "Salesforce org: 1 problem"
    ) in err
    assert "Account.Industy -> industry: no field Industy on Account" in err
