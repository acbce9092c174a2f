"""Backfill end to end: sandbox Bulk CSV -> transform -> Amplitude sandbox, in separate processes.

Both sandboxes run in one child process; each backfill is the real
``sfamp backfill --json`` command in another, so its peak RSS is its own. Prints:

1. throughput of ``sfamp backfill`` over ``--rows`` Accounts (target >= 30,000 records/s);
2. peak RSS of a backfill of ``--memory-rows`` Accounts (target < 250 MB);
3. sfamp against ``naive_backfill.py`` (simple-salesforce ``query_all`` + the
   official Amplitude SDK, one group identify per record) over ``--naive-rows``:
   the speed ratio and the Amplitude request ratio.

Times are the runs' own (login to last answer), without interpreter start-up,
for sfamp and the naive script alike.

    .venv/bin/python benchmarks/bench_backfill.py [--rows N] [--memory-rows N] [--naive-rows N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from support import account_mapping

HERE = Path(__file__).resolve().parent
TARGET_RATE = 30_000
TARGET_RSS_MB = 250
MAX_IDENTIFICATIONS = 1024  # per /groupidentify request (Amplitude's limit)
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
MAPPING = account_mapping(PROPERTIES, {"mode": "hourly"})


# -- child process: both sandboxes ----------------------------------------------------------


async def serve(scope: str) -> None:
    """Run both sandboxes until stdin closes; print their URLs as one JSON line."""
    from pipeline.gc_tuning import tune_gc
    from pipeline.sandbox.amplitude import AmplitudeSandbox, IdentifyLimits
    from pipeline.sandbox.salesforce import SalesforceSandbox

    tune_gc()  # as `sfamp sandbox ...` does
    limits = IdentifyLimits(property_limit_per_request=scope == "request")
    async with (
        SalesforceSandbox(bulk_job_seconds=0.0, api_max=1_000_000_000) as sf,
        AmplitudeSandbox(limits=limits) as amplitude,
    ):
        print(json.dumps({"salesforce": sf.base_url, "amplitude": amplitude.base_url}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


# -- child process: one `sfamp backfill` ----------------------------------------------------


def sfamp_environment(urls: dict[str, str]) -> dict[str, str]:
    """The caller's environment without its SFAMP_* settings, plus the sandboxes'."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SFAMP_")}
    return environment | {
        "SFAMP_SALESFORCE__LOGIN_URL": urls["salesforce"],
        "SFAMP_SALESFORCE__CLIENT_ID": "sandbox-client",
        "SFAMP_SALESFORCE__CLIENT_SECRET": "sandbox-secret",
        "SFAMP_SALESFORCE__USERNAME": "admin@sandbox.example",
        "SFAMP_SALESFORCE__PASSWORD": "sandbox",
        "SFAMP_AMPLITUDE__API_KEY": "sandbox-api-key",
        "SFAMP_AMPLITUDE__BASE_URL": urls["amplitude"],
        "SFAMP_AMPLITUDE__PROPERTY_LIMIT_SCOPE": urls["scope"],
    }


def run_measured(args: list[str], *, env: dict[str, str], cwd: str) -> tuple[str, float]:
    """Run a command to the end; its stdout and its own peak RSS in MB (``wait4``)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(args, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(args[:4])} failed:\n{err.read().decode()[-2000:]}")
        return out.read().decode(), usage.ru_maxrss / 1024


def run_sfamp(urls: dict[str, str]) -> dict[str, Any]:
    """One ``sfamp backfill`` of every Account: rows, seconds, requests and peak RSS."""
    with tempfile.TemporaryDirectory() as work:
        mapping = Path(work) / "mapping.json"
        mapping.write_text(json.dumps(MAPPING))
        command = [sys.executable, "-m", "pipeline", "backfill", "--mapping", str(mapping)]
        command += ["--json", "--dlq", "file", "--checkpoint", str(Path(work) / "checkpoint")]
        out, max_rss_mb = run_measured(command, env=sfamp_environment(urls), cwd=work)
    summary = json.loads(out)
    if not summary["completed"]:
        raise SystemExit(f"sfamp backfill stopped: {summary['error']}")
    return {
        "rows": summary["rows_read"],
        "seconds": summary["elapsed_seconds"],
        "amplitude_requests": summary["requests"],
        "salesforce_api_calls": summary["salesforce_api_calls"],
        "max_rss_mb": max_rss_mb,
    }


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
    per_request = naive["rows"] / max(1, naive["amplitude_requests"])
    print(
        f"bound       the SDK batched {per_request:,.0f} group identifies per request; "
        f"/groupidentify takes at most {MAX_IDENTIFICATIONS:,}, so no client can send fewer "
        f"than 1/{MAX_IDENTIFICATIONS / per_request:,.1f} of its requests"
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
