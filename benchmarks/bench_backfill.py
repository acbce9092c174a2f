"""Backfill end to end: sandbox Bulk CSV -> transform -> Amplitude sandbox, in separate processes.

Both sandboxes run in one child process; each backfill is the real
``sfamp backfill --json`` command in another, so its peak RSS is its own. At
each ``--latencies`` round trip (both sandboxes answer every API request that
much later, like a WAN) it runs over the same ``--records`` Accounts:

1. ``sfamp backfill`` with each ``--transports`` value (``SFAMP_AMPLITUDE__TRANSPORT``);
   at 0 ms the throughput target is >= 30,000 records/s;
2. ``naive_backfill.py`` (simple-salesforce ``query_all`` + the official
   Amplitude SDK, one group identify per record);
3. the ratios, with the targets at 50 ms: sfamp >= 10x faster than the naive
   script and <= 1/5 of its Amplitude requests.

Then the peak RSS of a backfill of ``--memory-rows`` Accounts at 0 ms (target < 250 MB).
Times are the runs' own (login to last answer), without interpreter start-up,
for sfamp and the naive script alike.

    .venv/bin/python benchmarks/bench_backfill.py [--records N] [--latencies 0,50]
        [--transports groupidentify,httpapi] [--no-naive] [--memory-rows N]
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
TARGET_LATENCY_MS = 50  # the speed and request targets hold at this round trip
TARGET_SPEEDUP = 10
TARGET_REQUEST_SHARE = 1 / 5
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
    from sfamp_sandbox.amplitude import AmplitudeSandbox, IdentifyLimits
    from sfamp_sandbox.salesforce import SalesforceSandbox

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


def run_sfamp(urls: dict[str, str], transport: str = "groupidentify") -> dict[str, Any]:
    """One ``sfamp backfill`` of every Account: rows, seconds, requests and peak RSS."""
    with tempfile.TemporaryDirectory() as work:
        mapping = Path(work) / "mapping.json"
        mapping.write_text(json.dumps(MAPPING))
        command = [sys.executable, "-m", "pipeline", "backfill", "--mapping", str(mapping)]
        command += ["--json", "--dlq", "file", "--checkpoint", str(Path(work) / "checkpoint")]
        environment = sfamp_environment(urls) | {"SFAMP_AMPLITUDE__TRANSPORT": transport}
        out, max_rss_mb = run_measured(command, env=environment, cwd=work)
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


def set_latency(http: httpx.Client, urls: dict[str, str], ms: int) -> None:
    for sandbox in ("salesforce", "amplitude"):
        http.post(f"{urls[sandbox]}/__sandbox/latency", json={"ms": ms}).raise_for_status()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "BELOW"


def line(label: str, result: dict[str, Any]) -> str:
    rate = result["rows"] / result["seconds"]
    return (
        f"  {label:<20} {result['rows']:>9,} records in {result['seconds']:7.2f} s = "
        f"{rate:>8,.0f}/s, {result['amplitude_requests']:>6,} Amplitude requests"
    )


def compare(
    http: httpx.Client, urls: dict[str, str], ms: int, transports: list[str], naive: bool
) -> None:
    """sfamp (each transport) and the naive script on the same records at one latency."""
    set_latency(http, urls, ms)
    print(f"latency {ms} ms")
    ours: dict[str, dict[str, Any]] = {}
    for transport in transports:
        reset(http, urls, org=False)
        ours[transport] = run_sfamp(urls, transport)
        result = ours[transport]
        extra = ""
        if ms == 0:
            rate = result["rows"] / result["seconds"]
            extra = f" (>= {TARGET_RATE:,}/s at 0 ms: {verdict(rate >= TARGET_RATE)})"
        print(line(f"sfamp {transport}", result) + extra)
    if not naive:
        return
    reset(http, urls, org=False)
    theirs = child(
        str(HERE / "naive_backfill.py"), "--salesforce", urls["salesforce"],
        "--amplitude", urls["amplitude"],
    )  # fmt: skip
    print(line("naive (SDK)", theirs))
    for transport, result in ours.items():
        speed = theirs["seconds"] / result["seconds"]
        share = result["amplitude_requests"] / max(1, theirs["amplitude_requests"])
        faster = requests = ""
        if ms >= TARGET_LATENCY_MS:
            faster = f" (target >= {TARGET_SPEEDUP}x: {verdict(speed >= TARGET_SPEEDUP)})"
            requests = f" (target <= 1/5: {verdict(share <= TARGET_REQUEST_SHARE)})"
        print(
            f"  ratio {transport:<14} {speed:5.1f}x faster than naive{faster}; "
            f"{share:.3f} of its Amplitude requests{requests}"
        )


def report_memory(http: httpx.Client, urls: dict[str, str], rows: int) -> None:
    set_latency(http, urls, 0)
    reset(http, urls, org=True)
    seconds = seed(http, urls, rows)
    print(f"seeded      {rows:>9,} records in {seconds:6.2f} s")
    result = run_sfamp(urls)
    print(
        f"memory      {result['rows']:>9,} records at 0 ms: "
        f"peak RSS {result['max_rss_mb']:6.1f} MB "
        f"(target < {TARGET_RSS_MB} MB: {verdict(result['max_rss_mb'] < TARGET_RSS_MB)}); "
        f"{result['rows'] / result['seconds']:,.0f} records/s"
    )


def main(arguments: argparse.Namespace) -> None:
    scope = arguments.scope
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
            if arguments.records:
                reset(http, urls, org=True)
                seconds = seed(http, urls, arguments.records)
                print(f"seeded      {arguments.records:>9,} records in {seconds:6.2f} s")
                for ms in arguments.latencies:
                    compare(http, urls, ms, arguments.transports, not arguments.no_naive)
            if arguments.memory_rows:
                report_memory(http, urls, arguments.memory_rows)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=300)  # a sandbox holding a million records takes a while


def numbers(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item.strip()]


if __name__ == "__main__":
    if sys.argv[1:2] == ["_serve"]:
        asyncio.run(serve(sys.argv[2]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument(
            "--records", "--rows", type=int, default=200_000,
            help="records compared at each latency (0: skip); 20000 for a quick run",
        )  # fmt: skip
        parser.add_argument(
            "--latencies", type=numbers, default=[0, 50],
            help="simulated round trips in ms, comma-separated (default 0,50)",
        )  # fmt: skip
        parser.add_argument(
            "--transports", type=lambda text: text.split(","),
            default=["groupidentify", "httpapi"],
            help="SFAMP_AMPLITUDE__TRANSPORT values to run sfamp with (default both)",
        )  # fmt: skip
        parser.add_argument("--no-naive", action="store_true", help="skip the naive script")
        parser.add_argument(
            "--memory-rows", type=int, default=1_000_000, help="peak-RSS run at 0 ms (0: skip)"
        )
        parser.add_argument(
            "--scope",
            choices=["request", "identification"],
            default="request",
            help="how sfamp (and the sandbox) read Amplitude's 1024-properties limit",
        )
        main(parser.parse_args())
