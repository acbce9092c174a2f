"""A backfill of several objects when Salesforce takes its time over each Bulk query job.

On a real org a Bulk API 2.0 query job runs for seconds to minutes before its first
result page can be read (``UploadComplete`` -> ``InProgress`` -> ``JobComplete``). A
backfill opens the next objects (up to three), and creates their jobs, while it still
reads the one before, so those waits overlap the reading and each other instead of
adding up.

Runs both sandboxes in this process with ``--job-seconds`` per Bulk job and
``--latency-ms`` per request, seeds ``--records`` Accounts, Contacts and Opportunities
(last changed 30 days ago), then backfills the three objects in one run, and each
object in a run of its own, one after another (what reading them strictly in turn
costs). Prints both times.
No target: the issue's targets are for one object (``bench_backfill.py``).

    .venv/bin/python benchmarks/bench_backfill_objects.py [--records N] [--job-seconds S]
        [--latency-ms MS]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.runtime.backfill import ReadOptions, run_backfill
from sfamp_sandbox.amplitude import US_API_KEY, AmplitudeSandbox
from sfamp_sandbox.salesforce import SalesforceSandbox

OBJECTS = {
    "Account": ("account", {"Name": "name", "Industry": "industry"}),
    "Contact": ("contact", {"Email": "email", "Title": "title"}),
    "Opportunity": ("opportunity", {"Name": "name", "StageName": "stage", "Amount": "amount"}),
}


def mapping() -> MappingConfig:
    mappings = [
        {
            "sfdc_object": sfdc_object,
            "group_type": group_type,
            "group_name_field": "Id",
            "group_properties": [
                {"sfdc_field": field, "amplitude_property": prop} for field, prop in fields.items()
            ],
        }
        for sfdc_object, (group_type, fields) in OBJECTS.items()
    ]
    return MappingConfig.model_validate({"sync_cadence": {"mode": "hourly"}, "mappings": mappings})


def settings(salesforce: SalesforceSandbox, amplitude: AmplitudeSandbox) -> Settings:
    return Settings(
        _env_file=None,
        salesforce={
            "login_url": salesforce.base_url,
            "client_id": "sandbox-client",
            "client_secret": "sandbox-secret",
            "username": "admin@sandbox.example",
            "password": "sandbox",
        },
        amplitude={"api_key": US_API_KEY, "base_url": amplitude.base_url},
    )


async def backfill(config: Settings, objects: list[str] | None, work: Path) -> float:
    """Seconds one backfill of ``objects`` (None: all of them) took."""
    started = time.perf_counter()
    summary = await run_backfill(
        config, mapping(), objects=objects, checkpoint_path=work / "checkpoint.json",
        options=ReadOptions(api="bulk"),
    )  # fmt: skip
    if not summary.completed:
        raise SystemExit(f"backfill failed: {summary.error}")
    return time.perf_counter() - started


async def main(arguments: argparse.Namespace) -> None:
    salesforce = SalesforceSandbox(bulk_job_seconds=arguments.job_seconds, api_max=1_000_000_000)
    async with salesforce, AmplitudeSandbox() as amplitude, httpx.AsyncClient() as http:
        for sfdc_object in OBJECTS:
            seeded = await http.post(
                f"{salesforce.base_url}/__sandbox/seed",
                # Last changed a month ago, as an org's records mostly are when backfilled.
                json={
                    "object": sfdc_object,
                    "count": arguments.records,
                    "return_ids": False,
                    "age_seconds": 30 * 86_400,
                },
                timeout=600,
            )
            seeded.raise_for_status()
        for sandbox in (salesforce, amplitude):
            sandbox.state.latency.ms = arguments.latency_ms
        config = settings(salesforce, amplitude)
        with tempfile.TemporaryDirectory() as work:
            together = await backfill(config, None, Path(work))
            in_turn = [await backfill(config, [name], Path(work)) for name in OBJECTS]
    print(
        f"{len(OBJECTS)} objects x {arguments.records:,} records, Bulk jobs of "
        f"{arguments.job_seconds:g} s, {arguments.latency_ms} ms round trips"
    )
    print(f"  one run, next objects opened ahead:   {together:6.2f} s")
    print(
        f"  a run per object, one after another:   {sum(in_turn):6.2f} s "
        f"({' + '.join(f'{seconds:.2f}' for seconds in in_turn)})"
    )
    print(f"  {sum(in_turn) / together:.2f}x faster (no target)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--records", type=int, default=20_000, help="records per object")
    parser.add_argument(
        "--job-seconds", type=float, default=5.0, help="how long each Bulk query job runs"
    )
    parser.add_argument("--latency-ms", type=int, default=50, help="round trip per request")
    asyncio.run(main(parser.parse_args()))
