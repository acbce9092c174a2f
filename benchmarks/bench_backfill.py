"""Backfill end to end: sandbox Bulk CSV -> transform -> Amplitude sandbox, in separate processes.

The sandboxes run in child processes, one each (``--one-process``: both in one), so
that neither waits for the other's CPU, as the real services do not; each backfill is
the real ``sfamp backfill --json`` command in another, so its peak RSS is its own. At
each ``--latencies`` round trip (both sandboxes answer every API request that
much later, like a WAN) it runs over the same ``--records`` Accounts:

1. ``sfamp backfill`` with each ``--transports`` value (``SFAMP_AMPLITUDE__TRANSPORT``);
   at 0 ms the throughput target is >= 30,000 records/s;
2. ``naive_backfill.py`` (simple-salesforce ``query_all`` + the official
   Amplitude SDK, one group identify per record);
3. the ratios, with the targets at 50 ms: sfamp >= 10x faster than the naive
   script and <= 1/5 of its Amplitude requests.

``--repeat N`` runs each comparison N times and prints the range of each ratio.
Then the peak RSS of a backfill of ``--memory-rows`` Accounts at 0 ms (target < 250 MB).
Seeded records last changed 30 days before the run, like an org's existing records;
``--fresh`` stamps them just before it instead, so that each one is inside sfamp's
catch-up window and read twice (sfamp's worst case). Both programs read the same records.
Times are the runs' own (login to last answer), without interpreter start-up,
for sfamp and the naive script alike; each line also gives the process's CPU
seconds, the sandboxes' CPU seconds meanwhile (both, then each), and the whole command's wall
time (interpreter start-up, sfamp's mapping check against the org, the run). The sandboxes
collect garbage on a timer, as ``sfamp sandbox ...`` does (``sfamp_sandbox/collector.py``).

    .venv/bin/python benchmarks/bench_backfill.py [--records N] [--latencies 0,50]
        [--transports groupidentify,httpapi] [--no-naive] [--repeat N] [--memory-rows N]
        [--fresh] [--one-process]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
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
# Seeded records last changed this long before the run (a backfill of an org's existing
# records); --fresh stamps them just before it, inside every snapshot's catch-up window.
SEED_AGE_SECONDS = 30 * 86_400
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


async def serve(scope: str, which: str = "both") -> None:
    """Run the sandboxes (``both``, ``salesforce`` or ``amplitude``) until stdin closes; print
    their URLs as one JSON line."""
    from pipeline.gc_tuning import tune_gc
    from sfamp_sandbox.amplitude import AmplitudeSandbox, IdentifyLimits
    from sfamp_sandbox.collector import collected_every
    from sfamp_sandbox.salesforce import SalesforceSandbox

    tune_gc()  # as `sfamp sandbox ...` does, and collections on its timer below
    limits = IdentifyLimits(property_limit_per_request=scope == "request")
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(collected_every())
        urls = {}
        if which in {"both", "salesforce"}:
            sandbox = SalesforceSandbox(bulk_job_seconds=0.0, api_max=1_000_000_000)
            urls["salesforce"] = (await stack.enter_async_context(sandbox)).base_url
        if which in {"both", "amplitude"}:
            amplitude = await stack.enter_async_context(AmplitudeSandbox(limits=limits))
            urls["amplitude"] = amplitude.base_url
        print(json.dumps(urls), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


class Sandboxes:
    """Both sandboxes in child processes: one each (default), so that the Salesforce sandbox
    writing a page and the Amplitude sandbox applying a batch do not wait for each other, as
    the real services do not, or both in one (``split=False``). ``urls`` holds their URLs,
    the property-limit ``scope`` and the children's ``pids``, in the order of ``parts``."""

    def __init__(self, scope: str, *, split: bool = True) -> None:
        self.parts = parts = ["salesforce", "amplitude"] if split else ["both"]
        self.processes = [
            subprocess.Popen(
                [sys.executable, str(HERE / "bench_backfill.py"), "_serve", scope, part],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for part in parts
        ]
        self.urls: dict[str, Any] = {"scope": scope, "pids": [p.pid for p in self.processes]}
        for process in self.processes:
            assert process.stdout is not None
            self.urls.update(json.loads(process.stdout.readline()))

    def cpu_seconds(self) -> float:
        """CPU seconds the sandboxes' processes have spent so far."""
        return sum(cpu_seconds(pid) for pid in self.urls["pids"])

    def close(self, timeout: float = 300) -> None:
        """Stop every child (a sandbox holding a million records takes a while)."""
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.close()
        for process in self.processes:
            process.wait(timeout=timeout)


# -- child process: one `sfamp backfill` ----------------------------------------------------


def sfamp_environment(urls: dict[str, Any]) -> dict[str, str]:
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


def run_measured(
    args: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None
) -> tuple[str, dict[str, float]]:
    """Run a command to the end: its stdout, and its own peak RSS (MB), CPU and wall
    seconds (``wait4``)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(args, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(args[:4])} failed:\n{err.read().decode()[-2000:]}")
        cost = {
            "max_rss_mb": usage.ru_maxrss / 1024,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "command_seconds": wall,
        }
        return out.read().decode(), cost


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_sfamp(urls: dict[str, Any], transport: str | None = None) -> dict[str, Any]:
    """One ``sfamp backfill`` of every Account (with the default Amplitude transport, or
    ``transport``): rows, seconds, requests, peak RSS, CPU."""
    with tempfile.TemporaryDirectory() as work:
        mapping = Path(work) / "mapping.json"
        mapping.write_text(json.dumps(MAPPING))
        command = [sys.executable, "-m", "pipeline", "backfill", "--mapping", str(mapping)]
        command += ["--json", "--dlq", "file", "--checkpoint", str(Path(work) / "checkpoint")]
        environment = sfamp_environment(urls)
        if transport is not None:
            environment["SFAMP_AMPLITUDE__TRANSPORT"] = transport
        out, cost = run_measured(command, env=environment, cwd=work)
    summary = json.loads(out)
    if not summary["completed"]:
        raise SystemExit(f"sfamp backfill stopped: {summary['error']}")
    return {
        "rows": summary["rows_read"],
        "seconds": summary["elapsed_seconds"],
        "amplitude_requests": summary["requests"],
        "salesforce_api_calls": summary["salesforce_api_calls"],
        **cost,
    }


# -- the conductor --------------------------------------------------------------------------


def reset(http: httpx.Client, urls: dict[str, Any], *, org: bool) -> None:
    http.post(f"{urls['amplitude']}/__sandbox/reset").raise_for_status()
    if org:
        http.post(f"{urls['salesforce']}/__sandbox/reset").raise_for_status()


def seed(http: httpx.Client, urls: dict[str, Any], rows: int, *, fresh: bool = False) -> float:
    """Seed ``rows`` Accounts last changed ``SEED_AGE_SECONDS`` ago (``fresh``: just now)."""
    started = time.perf_counter()
    body = {"object": "Account", "count": rows, "return_ids": False}
    body["age_seconds"] = 0 if fresh else SEED_AGE_SECONDS
    http.post(f"{urls['salesforce']}/__sandbox/seed", json=body).raise_for_status()
    return time.perf_counter() - started


def set_latency(http: httpx.Client, urls: dict[str, Any], ms: int) -> None:
    for sandbox in ("salesforce", "amplitude"):
        http.post(f"{urls[sandbox]}/__sandbox/latency", json={"ms": ms}).raise_for_status()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "BELOW"


def line(label: str, result: dict[str, Any]) -> str:
    rate = result["rows"] / result["seconds"]
    return (
        f"  {label:<20} {result['rows']:>9,} records in {result['seconds']:7.2f} s = "
        f"{rate:>8,.0f}/s, {result['amplitude_requests']:>6,} Amplitude requests; CPU "
        f"{result['cpu_seconds']:5.1f} s, sandboxes {sum(result['sandbox_cpu_seconds']):5.1f} s"
        f"{each_sandbox(result['sandbox_cpu_seconds'])}; command {result['command_seconds']:6.2f} s"
    )


def each_sandbox(seconds: list[float]) -> str:
    """`` (Salesforce a, Amplitude b)`` when the sandboxes ran in a process each."""
    if len(seconds) != 2:
        return ""
    return f" (Salesforce {seconds[0]:.1f}, Amplitude {seconds[1]:.1f})"


def measured(pids: list[int], run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``run()``'s result, with the CPU each sandbox process (``pids``) spent meanwhile."""
    before = [cpu_seconds(pid) for pid in pids]
    result = run()
    spent = [cpu_seconds(pid) - start for pid, start in zip(pids, before, strict=True)]
    return result | {"sandbox_cpu_seconds": spent}


def run_naive(urls: dict[str, Any]) -> dict[str, Any]:
    script = [sys.executable, str(HERE / "naive_backfill.py")]
    out, cost = run_measured(
        [*script, "--salesforce", urls["salesforce"], "--amplitude", urls["amplitude"]]
    )
    return dict(json.loads(out.strip().splitlines()[-1])) | cost


def compare(
    http: httpx.Client, urls: dict[str, Any], ms: int, arguments: argparse.Namespace
) -> dict[str, tuple[float, float]]:
    """sfamp (each transport) and the naive script on the same records at one latency;
    answers per transport (times faster, share of the naive script's requests)."""
    set_latency(http, urls, ms)
    print(f"latency {ms} ms")
    ours: dict[str, dict[str, Any]] = {}
    for transport in arguments.transports:
        reset(http, urls, org=False)
        ours[transport] = result = measured(urls["pids"], partial(run_sfamp, urls, transport))
        extra = ""
        if ms == 0:
            rate = result["rows"] / result["seconds"]
            extra = f" (>= {TARGET_RATE:,}/s at 0 ms: {verdict(rate >= TARGET_RATE)})"
        print(line(f"sfamp {transport}", result) + extra)
    if arguments.no_naive:
        return {}
    reset(http, urls, org=False)
    theirs = measured(urls["pids"], lambda: run_naive(urls))
    print(line("naive (SDK)", theirs))
    ratios = {}
    for transport, result in ours.items():
        speed = theirs["seconds"] / result["seconds"]
        share = result["amplitude_requests"] / max(1, theirs["amplitude_requests"])
        ratios[transport] = (speed, share)
        faster = requests = ""
        if ms >= TARGET_LATENCY_MS:
            faster = f" (target >= {TARGET_SPEEDUP}x: {verdict(speed >= TARGET_SPEEDUP)})"
            requests = f" (target <= 1/5: {verdict(share <= TARGET_REQUEST_SHARE)})"
        commands = theirs["command_seconds"] / result["command_seconds"]
        print(
            f"  ratio {transport:<14} {speed:5.2f}x faster than naive{faster}; "
            f"{share:.3f} of its Amplitude requests{requests}; whole commands {commands:.1f}x"
        )
    return ratios


def summarise(ms: int, runs: list[dict[str, tuple[float, float]]]) -> None:
    """The range of each ratio over the repeated runs, with the targets at 50 ms."""
    for transport in runs[0]:
        speeds = [run[transport][0] for run in runs]
        shares = [run[transport][1] for run in runs]
        faster = f"{min(speeds):.2f}-{max(speeds):.2f}x faster"
        fewer = f"{min(shares):.3f}-{max(shares):.3f} of its requests"
        if ms >= TARGET_LATENCY_MS:
            faster += f" (>= {TARGET_SPEEDUP}x: {verdict(min(speeds) >= TARGET_SPEEDUP)})"
            fewer += f" (<= 1/5: {verdict(max(shares) <= TARGET_REQUEST_SHARE)})"
        print(f"{len(runs)} runs at {ms} ms, {transport}: {faster}; {fewer}")


def seeded(http: httpx.Client, urls: dict[str, Any], rows: int, *, fresh: bool) -> None:
    seconds = seed(http, urls, rows, fresh=fresh)
    age = (
        "stamped just now: inside the catch-up window, read twice by sfamp"
        if fresh
        else f"last changed {SEED_AGE_SECONDS // 86_400} days ago"
    )
    print(
        f"seeded      {rows:>9,} records in {seconds:6.2f} s, {age}; "
        "sfamp and the naive script read the same records"
    )


def report_memory(
    http: httpx.Client, urls: dict[str, Any], rows: int, *, fresh: bool = False
) -> None:
    set_latency(http, urls, 0)
    reset(http, urls, org=True)
    seeded(http, urls, rows, fresh=fresh)
    result = run_sfamp(urls)
    print(
        f"memory      {result['rows']:>9,} records at 0 ms (default transport): "
        f"peak RSS {result['max_rss_mb']:6.1f} MB "
        f"(target < {TARGET_RSS_MB} MB: {verdict(result['max_rss_mb'] < TARGET_RSS_MB)}); "
        f"{result['rows'] / result['seconds']:,.0f} records/s"
    )


def main(arguments: argparse.Namespace) -> None:
    scope = arguments.scope
    print(f"Amplitude property limit read per {scope} (SFAMP_AMPLITUDE__PROPERTY_LIMIT_SCOPE)")
    layout = "one process" if arguments.one_process else "a process each"
    print(f"sandboxes: {layout}")
    sandboxes = Sandboxes(scope, split=not arguments.one_process)
    urls = sandboxes.urls
    try:
        with httpx.Client(timeout=600) as http:
            if arguments.records:
                reset(http, urls, org=True)
                seeded(http, urls, arguments.records, fresh=arguments.fresh)
                for ms in arguments.latencies:
                    runs = [compare(http, urls, ms, arguments) for _ in range(arguments.repeat)]
                    if len(runs) > 1 and runs[0]:
                        summarise(ms, runs)
            if arguments.memory_rows:
                report_memory(http, urls, arguments.memory_rows, fresh=arguments.fresh)
    finally:
        sandboxes.close()


def numbers(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item.strip()]


if __name__ == "__main__":
    if sys.argv[1:2] == ["_serve"]:
        asyncio.run(serve(sys.argv[2], *sys.argv[3:4]))
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
            "--fresh", action="store_true",
            help="seed records stamped just now (default: last changed 30 days ago), so each "
            "is inside sfamp's catch-up window and read a second time",
        )  # fmt: skip
        parser.add_argument(
            "--repeat", type=int, default=1, help="comparisons at each latency (ranges when > 1)"
        )
        parser.add_argument(
            "--memory-rows", type=int, default=1_000_000, help="peak-RSS run at 0 ms (0: skip)"
        )
        parser.add_argument(
            "--one-process", action="store_true",
            help="both sandboxes in one process (default: a process each)",
        )  # fmt: skip
        parser.add_argument(
            "--scope",
            choices=["request", "identification"],
            default="request",
            help="how sfamp (and the sandbox) read Amplitude's 1024-properties limit",
        )
        main(parser.parse_args())
