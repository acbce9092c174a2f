"""A record deleted while a reconcile writes its read: the delete stays the last word.

The reconcile reads a live record; the record is deleted and its DELETE delivered; then
the reconcile's envelope (a whole read) reaches deliver and would mark the group live
again. Its catch-up rounds read the record deleted (``queryAll``) and write the delete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.config.mapping import MappingConfig
from pipeline.runtime.reconcile import run as reconcile_run
from pipeline.sandbox_stack import SandboxStack
from tests.convergence.oracle import check_convergence
from tests.runtime.conftest import Org, group, running, settings_for, wait_until

MAPPING: dict[str, Any] = {
    "version": 1,
    "sync_cadence": {"mode": "interval", "every_seconds": 1},
    "reconcile": {"mode": "off"},
    "mappings": [
        {
            "sfdc_object": "Account",
            "group_type": "account",
            "group_name_field": "Id",
            "group_properties": [
                {"sfdc_field": "Name", "amplitude_property": "name"},
                # change events never carry it: only a read (the reconcile) sends it
                {"sfdc_field": "SystemModstamp", "amplitude_property": "modstamp"},
            ],
            "on_delete": "mark",
        }
    ],
}


def _marked_deleted(stack: SandboxStack, record_id: str) -> Any:
    return (group(stack, "account", record_id) or {}).get("sfdc_deleted")


async def test_a_reconcile_read_landing_after_a_delete_leaves_the_group_deleted(
    stack: SandboxStack,
    org: Org,
    topic_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_for(stack, topic_prefix)
    mapping_file = tmp_path / "mapping.json"
    mapping_file.write_text(json.dumps(MAPPING))
    assert stack.salesforce is not None
    assert stack.amplitude is not None
    async with running(settings, mapping_file):
        doomed = await org.create("Account", Name="Doomed")
        await wait_until(lambda: _marked_deleted(stack, doomed) is False, what="the create")
        write = reconcile_run._Run.write
        deleted = False

        async def write_after_a_delete(run: Any, sfdc_object: str, envelopes: list[Any]) -> None:
            # The race, made certain: the record is deleted, and its DELETE delivered,
            # while the reconcile's read of it is on its way to Kafka.
            nonlocal deleted
            if not deleted and any(e.record_id == doomed for e in envelopes):
                deleted = True
                await org.delete("Account", doomed)
                await wait_until(lambda: _marked_deleted(stack, doomed) is True, what="DELETE")
            await write(run, sfdc_object, envelopes)

        monkeypatch.setattr(reconcile_run._Run, "write", write_after_a_delete)
        summary = await reconcile_run.run_reconcile(
            settings, MappingConfig.model_validate(MAPPING), checkpoint_path=tmp_path / "rc.json"
        )
        assert summary.error is None, summary.error
        assert deleted, "the reconcile never wrote the record"
        # The reconcile's read (it alone sends modstamp) and then its catch-up's delete:
        # one record, so one partition, delivered in that order.
        await wait_until(
            lambda: (
                "modstamp" in (group(stack, "account", doomed) or {})
                and _marked_deleted(stack, doomed) is True
            ),
            what="the reconcile's read of the record, then the delete, delivered",
        )
    report = check_convergence(
        stack.salesforce, stack.amplitude, MAPPING, unchecked=["Account.SystemModstamp"]
    )
    assert report.ok, report.describe()
