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


async def test_an_object_nothing_maps_is_refused_before_salesforce_is_asked(
    sandboxes: Sandboxes, mapping_file: Path, tmp_path: Path
) -> None:
    args = ["--mapping", str(mapping_file), "--object", "Contact", "--object", "Lead"]
    run = await CliRun.start(args, sandboxes.environment(), tmp_path)
    code, _, err = await run.finish()

    assert code == 1
    assert "error: no mapping for Contact, Lead; mapped objects: Account" in err
    assert "salesforce_login" not in err, err
    # Nothing started: the hint does not speak of batches.
    assert err.rstrip().endswith(
        "\n  nothing was read or sent; run again once the problem above is fixed"
    ), err


async def test_a_resume_without_its_checkpoint_is_refused_before_salesforce_is_asked(
    sandboxes: Sandboxes, mapping_file: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.json"
    args = ["--mapping", str(mapping_file), "--resume", "--checkpoint", str(missing)]
    run = await CliRun.start(args, sandboxes.environment(), tmp_path)
    code, _, err = await run.finish()

    assert code == 1, err
    assert f"error: no backfill checkpoint at {missing}; run without --resume" in err, err
    assert "salesforce_login" not in err, err
    assert sandboxes.requests == 0


async def test_resume_and_resume_or_start_together_are_refused(
    sandboxes: Sandboxes, mapping_file: Path, tmp_path: Path
) -> None:
    args = ["--mapping", str(mapping_file), "--resume", "--resume-or-start"]
    run = await CliRun.start(args, sandboxes.environment(), tmp_path)
    code, out, err = await run.finish()

    assert (code, out) == (1, "")
    assert err.strip() == "error: use --resume or --resume-or-start, not both"


async def test_the_check_and_the_backfill_share_one_salesforce_login(
    sandboxes: Sandboxes, mapping_file: Path, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 10)
    run = await CliRun.start(["--mapping", str(mapping_file)], sandboxes.environment(), tmp_path)
    code, _, err = await run.finish()

    assert code == 0, err
    assert err.count('"event": "salesforce_login"') == 1, err
