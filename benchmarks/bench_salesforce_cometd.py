"""CometD delivery rate of the Salesforce sandbox to one aiosfstream client.

Starts the CometD endpoint (with a minimal token endpoint) in-process on a free port, then
measures change events per second received by one aiosfstream-ng client in two scenarios:
replaying a retained backlog (replay -2), and following live publishes (replay -1) while a
publisher appends events in bursts. Each event is a realistic Account CREATE (about 0.9 kB).

    .venv/bin/python benchmarks/bench_salesforce_cometd.py [--events N] [--batch N]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiosfstream_ng.auth import PasswordAuthenticator
from aiosfstream_ng.client import Client
from aiosfstream_ng.replay import ReplayOption

from sfamp_sandbox.salesforce.cdc import ChangeEventLog, RecordChange
from sfamp_sandbox.salesforce.cometd import CometdServer, add_cometd_routes

TOKEN = "00DRM000000abcd!bench"
TARGET = 10_000


class EmulatorAuthenticator(PasswordAuthenticator):
    def __init__(self, token_url: str) -> None:
        super().__init__("sandbox-client", "sandbox-secret", "admin@sandbox.example", "sandbox")
        self.emulator_token_url = token_url

    @property
    def _token_url(self) -> str:
        return self.emulator_token_url


@dataclass
class Endpoint:
    base_url: str
    log: ChangeEventLog
    server: CometdServer


@asynccontextmanager
async def endpoint(batch: int) -> AsyncIterator[Endpoint]:
    log = ChangeEventLog(time.time)
    app = web.Application()
    urls: list[str] = []

    async def token(_: web.Request) -> web.Response:
        return web.json_response(
            {"access_token": TOKEN, "token_type": "Bearer", "instance_url": urls[0]}
        )

    app.router.add_post("/services/oauth2/token", token)
    server = add_cometd_routes(
        app, log, authorize=lambda h: h == f"Bearer {TOKEN}", clock=time.time, max_batch=batch
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    urls.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
    try:
        yield Endpoint(urls[0], log, server)
    finally:
        await runner.cleanup()


def account_create(n: int) -> RecordChange:
    record_id = f"001RM{n:013d}"
    fields = {
        "Name": f"Account {n}",
        "Industry": "Biotechnology",
        "AnnualRevenue": 1_250_000.0 + n,
        "NumberOfEmployees": 120,
        "BillingAddress": {
            "Street": "415 Mission Street",
            "City": "San Francisco",
            "State": "CA",
            "PostalCode": "94105",
            "Country": "United States",
        },
        "OwnerId": "005RM000001hv4SYAQ",
        "CreatedDate": "2024-04-26T18:38:05.000Z",
        "CreatedById": "005RM000001hv4SYAQ",
        "LastModifiedDate": "2024-04-26T18:38:05.000Z",
        "LastModifiedById": "005RM000001hv4SYAQ",
    }
    return RecordChange(
        "Account",
        "CREATE",
        (record_id,),
        fields,
        commit_user="005RM000001hv4SYAQ",
        change_origin="com/salesforce/api/rest/62.0",
    )


def client_for(ep: Endpoint, replay: ReplayOption) -> Client:
    auth = EmulatorAuthenticator(f"{ep.base_url}/services/oauth2/token")
    return Client(auth, replay=replay, connection_timeout=30.0)


async def drain(client: Client, count: int) -> float:
    started = time.perf_counter()
    last = 0
    for _ in range(count):
        message = await client.receive()
        replay_id = message["data"]["event"]["replayId"]
        if replay_id <= last:
            raise RuntimeError(f"out of order: {replay_id} after {last}")
        last = replay_id
    return time.perf_counter() - started


async def backlog(events: int, batch: int) -> float:
    async with endpoint(batch) as ep:
        for n in range(events):
            ep.log.publish(account_create(n))
        async with client_for(ep, ReplayOption.ALL_EVENTS) as client:
            await client.subscribe("/data/AccountChangeEvent")
            elapsed = await asyncio.wait_for(drain(client, events), timeout=120)
    return events / elapsed


async def live(events: int, batch: int, burst: int = 200) -> float:
    async with endpoint(batch) as ep, client_for(ep, ReplayOption.NEW_EVENTS) as client:
        await client.subscribe("/data/ChangeEvents")

        async def publish() -> None:
            for start in range(0, events, burst):
                for n in range(start, min(start + burst, events)):
                    ep.log.publish(account_create(n))
                await asyncio.sleep(0)

        async with asyncio.TaskGroup() as group:
            group.create_task(publish())
            elapsed = await asyncio.wait_for(drain(client, events), timeout=120)
    return events / elapsed


def quiet_client_shutdown(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """aiocometd's connect-done callback re-raises the cancellation of its own task on close;
    that is noise here, anything else is reported as usual."""
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


async def run(events: int, batch: int) -> None:
    asyncio.get_running_loop().set_exception_handler(quiet_client_shutdown)
    print(f"{events} Account CREATE events, max {batch} events per connect response")
    for name, scenario in (("backlog replay (-2)", backlog), ("live publish (-1)", live)):
        rate = await scenario(events, batch)
        verdict = "ok" if rate >= TARGET else f"BELOW target {TARGET}"
        print(f"  {name:<22} {rate:>10,.0f} events/s  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=50_000, help="events per scenario")
    parser.add_argument("--batch", type=int, default=1000, help="events per connect response")
    args = parser.parse_args()
    asyncio.run(run(args.events, args.batch))


if __name__ == "__main__":
    main()
