"""sfamp backfill checks the mapping against the org before it reads or sends anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.backfill.conftest import CliRun, Sandboxes, mapping

pytestmark = pytest.mark.integration


async def test_a_misspelt_object_or_field_stops_the_backfill_before_anything_is_sent(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 10)
    doc = mapping(properties={"Name": "name", "Industy": "industry"}).model_dump(mode="json")
    doc["mappings"].append({**doc["mappings"][0], "sfdc_object": "Acount", "group_type": "x"})
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(doc))

    run = await CliRun.start(["--mapping", str(path)], sandboxes.environment(), tmp_path)
    code, _, err = await run.finish()

    assert code == 1
    assert "error: the mapping does not match the Salesforce org: 2 problems" in err
    assert "Acount: object: no object Acount in this org (did you mean Account?)" in err
    assert "Account.Industy -> industry: no field Industy on Account (did you mean Industry?" in (
        err
    )
    assert "Traceback" not in err
    assert sandboxes.requests == 0
    assert not list(tmp_path.rglob("*checkpoint*")), "nothing was read, nothing to resume"
