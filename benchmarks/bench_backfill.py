"""Backfill end to end: sandbox Bulk CSV -> transform -> Amplitude sandbox, in separate processes.

Both sandboxes run in one child process; each backfill runs in another, so its
peak RSS (``ru_maxrss``) is its own. Prints:

1. throughput of ``run_backfill`` over ``--rows`` Accounts (target >= 30,000 records/s);
2. peak RSS of a backfill of ``--memory-rows`` Accounts (target < 250 MB);
3. sfamp against ``naive_backfill.py`` (simple-salesforce ``query_all`` + the
   official Amplitude SDK, one group identify per record) over ``--naive-rows``:
   the speed ratio and the Amplitude request ratio.

    .venv/bin/python benchmarks/bench_backfill.py [--rows N] [--memory-rows N] [--naive-rows N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
TARGET_RATE = 30_000
TARGET_RSS_MB = 250
PROPERTIES = {
    "Name": "name",
    "Industry": "industry",
    "AnnualRevenue": "annual_revenue",
    "NumberOfEmployees": "employees",
    "Regions__c": "regions",
    "Is_Active__c": "active",
    "Health_Score__c": "health",
    "Renewal_Date__c": "renewal",
}


# -- child process: both sandboxes ----------------------------------------------------------


async def serve(scope: str) -> None:
    """Run both sandboxes until stdin closes; print their URLs as one JSON line."""
    from pipeline.sandbox.amplitude import AmplitudeSandbox, IdentifyLimits
    from pipeline.sandbox.salesforce import SalesforceSandbox

    limits = IdentifyLimits(property_limit_per_request=scope == "request")
    async with (
        SalesforceSandbox(bulk_job_seconds=0.0, api_max=1_000_000_000) as sf,
        AmplitudeSandbox(limits=limits) as amplitude,
    ):
        print(json.dumps({"salesforce": sf.base_url, "amplitude": amplitude.base_url}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


# -- child process: one backfill ------------------------------------------------------------


async def backfill(salesforce: str, amplitude: str, scope: str) -> None:
    """One ``run_backfill`` of every Account; prints rows, seconds, requests and peak RSS."""
    from pipeline.config.mapping import MappingConfig
    from pipeline.config.settings import Settings
    from pipeline.runtime.backfill import run_backfill

    config = MappingConfig.model_validate(
        {
            "sync_cadence": {"mode": "hourly"},
            "mappings": [
                {
                    "sfdc_object": "Account",
                    "group_type": "account",
                    "group_name_field": "Id",
                    "group_properties": [
                        {"sfdc_field": f, "amplitude_property": p} for f, p in PROPERTIES.items()
                    ],
                }
            ],
        }
    )
    settings = Settings(
        _env_file=None,
        salesforce={
            "login_url": salesforce,
            "client_id": "sandbox-client",
            "client_secret": "sandbox-secret",
            "username": "admin@sandbox.example",
            "password": "sandbox",
        },
        amplitude={
            "api_key": "sandbox-api-key",
            "base_url": amplitude,
            "property_limit_scope": scope,
        },
    )
    with tempfile.TemporaryDirectory() as state:
        started = time.perf_counter()
        summary = await run_backfill(
            settings, config, checkpoint_path=Path(state) / "checkpoint.json", dlq="file"
        )
        seconds = time.perf_counter() - started
    if summary.error is not None:
        raise summary.error
    result = {
        "rows": summary.total("rows_read"),
        "seconds": seconds,
        "amplitude_requests": summary.total("requests"),
        "salesforce_api_calls": summary.api_calls,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(result), flush=True)


# -- the conductor --------------------------------------------------------------------------


def child(*args: str) -> dict[str, Any]:
    """Run this script (or the naive one) in a fresh interpreter; its last line is JSON."""
    completed = subprocess.run(
        [sys.executable, *args], check=True, capture_output=True, text=True, timeout=3600
    )
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def reset(http: httpx.Client, urls: dict[str, str], *, org: bool) -> None:
    http.post(f"{urls['amplitude']}/__sandbox/reset").raise_for_status()
    if org:
        http.post(f"{urls['salesforce']}/__sandbox/reset").raise_for_status()


def seed(http: httpx.Client, urls: dict[str, str], rows: int) -> float:
    started = time.perf_counter()
    body = {"object": "Account", "count": rows, "return_ids": False}
    http.post(f"{urls['salesforce']}/__sandbox/seed", json=body).raise_for_status()
    return time.perf_counter() - started


def run_sfamp(urls: dict[str, str]) -> dict[str, Any]:
    return child(__file__, "_backfill", urls["salesforce"], urls["amplitude"], urls["scope"])


def report_throughput(http: httpx.Client, urls: dict[str, str], rows: int) -> None:
    reset(http, urls, org=True)
    seed(http, urls, rows)
    result = run_sfamp(urls)
    rate = result["rows"] / result["seconds"]
    verdict = "ok" if rate >= TARGET_RATE else "BELOW TARGET"
    print(
        f"throughput  {result['rows']:>9,} records in {result['seconds']:6.2f} s = "
        f"{rate:>8,.0f} records/s (target >= {TARGET_RATE:,}: {verdict}); "
        f"{result['amplitude_requests']:,} Amplitude requests, "
        f"{result['salesforce_api_calls']} Salesforce API calls"
    )


def report_memory(http: httpx.Client, urls: dict[str, str], rows: int) -> None:
    reset(http, urls, org=True)
    seconds = seed(http, urls, rows)
    print(f"seeded      {rows:>9,} records in {seconds:6.2f} s")
    result = run_sfamp(urls)
    verdict = "ok" if result["max_rss_mb"] < TARGET_RSS_MB else "ABOVE TARGET"
    print(
        f"memory      {result['rows']:>9,} records: peak RSS {result['max_rss_mb']:6.1f} MB "
        f"(target < {TARGET_RSS_MB} MB: {verdict}); "
        f"{result['rows'] / result['seconds']:,.0f} records/s"
    )


def report_naive(http: httpx.Client, urls: dict[str, str], rows: int) -> None:
    reset(http, urls, org=True)
    seed(http, urls, rows)
    ours = run_sfamp(urls)
    reset(http, urls, org=False)
    naive = child(
        str(HERE / "naive_backfill.py"),
        "--salesforce",
        urls["salesforce"],
        "--amplitude",
        urls["amplitude"],
    )
    speed = naive["seconds"] / ours["seconds"]
    requests = naive["amplitude_requests"] / max(1, ours["amplitude_requests"])
    print(
        f"naive       {naive['rows']:>9,} records in {naive['seconds']:6.2f} s, "
        f"{naive['amplitude_requests']:,} Amplitude requests"
    )
    print(
        f"sfamp       {ours['rows']:>9,} records in {ours['seconds']:6.2f} s, "
        f"{ours['amplitude_requests']:,} Amplitude requests"
    )
    print(
        f"ratio       naive/sfamp time {speed:,.1f}x (target >= 10x); "
        f"naive/sfamp Amplitude requests {requests:,.2f}x (target >= 100x)"
    )


def main(rows: int, memory_rows: int, naive_rows: int, scope: str) -> None:
    print(f"Amplitude property limit read per {scope} (SFAMP_AMPLITUDE__PROPERTY_LIMIT_SCOPE)")
    server = subprocess.Popen(
        [sys.executable, __file__, "_serve", scope],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        urls = {**json.loads(server.stdout.readline()), "scope": scope}
        with httpx.Client(timeout=600) as http:
            if rows:
                report_throughput(http, urls, rows)
            if naive_rows:
                report_naive(http, urls, naive_rows)
            if memory_rows:
                report_memory(http, urls, memory_rows)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)


if __name__ == "__main__":
    if sys.argv[1:2] == ["_serve"]:
        asyncio.run(serve(sys.argv[2]))
    elif sys.argv[1:2] == ["_backfill"]:
        asyncio.run(backfill(sys.argv[2], sys.argv[3], sys.argv[4]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--rows", type=int, default=200_000, help="throughput run (0: skip)")
        parser.add_argument(
            "--memory-rows", type=int, default=1_000_000, help="peak-RSS run (0: skip)"
        )
        parser.add_argument(
            "--naive-rows", type=int, default=20_000, help="comparison run (0: skip)"
        )
        parser.add_argument(
            "--scope",
            choices=["request", "identification"],
            default="request",
            help="how sfamp (and the sandbox) read Amplitude's 1024-properties limit",
        )
        arguments = parser.parse_args()
        main(arguments.rows, arguments.memory_rows, arguments.naive_rows, arguments.scope)
