"""Group Identify throughput and request fill against the local Amplitude sandbox.

Starts the sandbox in its own process (so client and server each get a core),
sends a few flushes of realistic account updates through AmplitudeClient, and
prints identifications/s delivered and how full each request was. A request is
"full" when its binding limit (1024 identifications, 1024 property keys or the
byte budget) is at least 95% used; the last request of a flush is left out.

    .venv/bin/python benchmarks/bench_amplitude.py [--accounts N] [--in-process]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pipeline.amplitude import AmplitudeClient, ChunkLimits, DeliveryPlan
from pipeline.config.settings import AmplitudeSettings
from pipeline.transform.group_update import GroupUpdate
from sfamp_sandbox.amplitude import US_API_KEY, AmplitudeSandbox

FULL = 0.95


@dataclass(frozen=True)
class Scenario:
    name: str
    properties: int
    text_length: int
    non_ascii: bool
    share: float = 1.0  # of --accounts: 24 KB updates need fewer to measure


SCENARIOS = (
    Scenario("1 property (count-bound)", 1, 20, False),
    Scenario("8 properties (key-bound)", 8, 24, False),
    Scenario("4 long non-ASCII (byte-bound)", 4, 1000, True, share=0.2),
)


def make_updates(scenario: Scenario, accounts: int) -> list[GroupUpdate]:
    letter = "é" if scenario.non_ascii else "x"
    updates = []
    for i in range(accounts):
        props: dict[str, str | int | float | bool | list[object]] = {
            f"field_{p}": f"{i}-{p}-" + letter * scenario.text_length
            for p in range(scenario.properties)
        }
        updates.append(GroupUpdate("account", f"001B{i:012d}", props))
    return updates


def fill(plan: DeliveryPlan, limits: ChunkLimits) -> tuple[float, float, float]:
    """Mean identifications and bytes per request, and the share of full requests."""
    requests = plan.requests
    binding = [
        max(
            r.identifications / limits.max_identifications,
            r.property_keys / limits.max_property_keys,
            r.bytes / limits.max_request_bytes,
        )
        for r in requests[:-1]
    ]
    full = sum(1 for ratio in binding if ratio >= FULL) / len(binding) if binding else 1.0
    return plan.identifications / len(requests), plan.total_bytes / len(requests), full


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def sandbox(in_process: bool) -> AsyncIterator[str]:
    if in_process:
        async with AmplitudeSandbox() as running:
            yield running.base_url
        return
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sfamp_sandbox.amplitude", "--port", str(port)
    )
    try:
        await wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


async def wait_for_port(port: int) -> None:
    async with asyncio.timeout(15):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return


async def run(accounts: int, flushes: int, in_process: bool) -> None:
    async with sandbox(in_process) as base_url:
        settings = AmplitudeSettings(
            api_key=US_API_KEY, base_url=base_url, transport="groupidentify"
        )
        limits = ChunkLimits()
        print(f"sandbox {base_url}; {flushes} flushes of up to {accounts} accounts per scenario")
        header = (
            f"{'scenario':32} {'ids/s':>9} {'MB/s':>6} {'ids/req':>8} {'KB/req':>7} "
            f"{'full':>6} {'reqs':>5}"
        )
        print(header)
        async with AmplitudeClient(settings, limits=limits) as client:
            for scenario in SCENARIOS:
                updates = make_updates(scenario, int(accounts * scenario.share))
                plan = client.plan(updates)
                started = time.perf_counter()
                delivered = requests = sent = 0
                for _ in range(flushes):
                    report = await client.send(updates)
                    delivered += report.delivered
                    requests += report.requests
                    sent += report.bytes_sent
                elapsed = time.perf_counter() - started
                per_request, size, full = fill(plan, limits)
                print(
                    f"{scenario.name:32} {delivered / elapsed:9,.0f} {sent / elapsed / 1e6:6.1f} "
                    f"{per_request:8.1f} "
                    f"{size / 1000:7.1f} {full:6.1%} {requests:5d}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=50_000, help="updates per flush")
    parser.add_argument("--flushes", type=int, default=2, help="flushes per scenario")
    parser.add_argument("--in-process", action="store_true", help="run the sandbox in-process")
    args = parser.parse_args()
    asyncio.run(run(args.accounts, args.flushes, args.in_process))


if __name__ == "__main__":
    main()
