"""Bulk API 2.0 query throughput of the Salesforce sandbox.

Seeds N Accounts (in-process, no HTTP), then runs a Bulk 2.0 query job over real HTTP and
downloads every result page with ``maxRecords``/``Sforce-Locator`` paging, as a backfill
does. Prints the seeding rate, the CSV rendering rate of the server alone, and the
end-to-end rows/s seen by an httpx client in the same process (target >= 100,000 rows/s).

    .venv/bin/python benchmarks/bench_salesforce_bulk.py [--rows N] [--page N]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx

from sfamp_sandbox.salesforce import SalesforceSandbox
from sfamp_sandbox.salesforce.query import compile_query
from sfamp_sandbox.salesforce.render import csv_page
from sfamp_sandbox.salesforce.seed import seed

TARGET_ROWS_PER_SECOND = 100_000
QUERY = (
    "SELECT Id, Name, Industry, BillingCity, AnnualRevenue, NumberOfEmployees, Is_Active__c,"
    " Tier__c, LastModifiedDate, SystemModstamp FROM Account"
)
API = "/services/data/v62.0"


async def token(http: httpx.AsyncClient) -> str:
    response = await http.post(
        "/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "sandbox-client",
            "client_secret": "sandbox-secret",
        },
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


async def download(http: httpx.AsyncClient, page_size: int) -> tuple[int, int, int]:
    """Run one job to the end; returns (rows, pages, bytes)."""
    job = (await http.post(f"{API}/jobs/query", json={"operation": "query", "query": QUERY})).json()
    for _ in range(600):  # a job takes 0 s here; give up after ~30 s
        if (await http.get(f"{API}/jobs/query/{job['id']}")).json()["state"] == "JobComplete":
            break
        await asyncio.sleep(0.05)
    else:
        raise TimeoutError("the Bulk job did not complete")
    rows = pages = size = 0
    locator = ""
    while locator != "null":
        params = {"maxRecords": str(page_size), **({"locator": locator} if locator else {})}
        page = await http.get(f"{API}/jobs/query/{job['id']}/results", params=params)
        page.raise_for_status()
        rows += int(page.headers["Sforce-NumberOfRecords"])
        size += len(page.content)
        pages += 1
        locator = page.headers["Sforce-Locator"]
    return rows, pages, size


async def main(rows: int, page_size: int) -> None:
    async with SalesforceSandbox(bulk_job_seconds=0.0) as sf:
        started = time.perf_counter()
        seed(sf.org, "Account", rows)
        seeded = time.perf_counter() - started
        print(
            f"seed      {rows:>10,} Accounts in {seeded:6.2f} s  ({rows / seeded:>10,.0f} rows/s)"
        )

        compiled = compile_query(sf.org, QUERY)
        records = compiled.run(sf.org, include_deleted=False)
        started = time.perf_counter()
        for offset in range(0, len(records), page_size):
            csv_page(compiled.columns, records[offset : offset + page_size])
        rendered = time.perf_counter() - started
        print(
            f"render    {len(records):>10,} rows     in {rendered:6.2f} s  "
            f"({len(records) / rendered:>10,.0f} rows/s, server CSV only)"
        )

        limits = httpx.Limits(max_connections=4)
        async with httpx.AsyncClient(base_url=sf.base_url, timeout=120, limits=limits) as http:
            http.headers["Authorization"] = f"Bearer {await token(http)}"
            started = time.perf_counter()
            total, pages, size = await download(http, page_size)
            elapsed = time.perf_counter() - started
    rate = total / elapsed
    print(
        f"bulk 2.0  {total:>10,} rows     in {elapsed:6.2f} s  ({rate:>10,.0f} rows/s, "
        f"{pages} pages, {size / 1e6:.1f} MB, job + download over HTTP)"
    )
    verdict = "meets" if rate >= TARGET_ROWS_PER_SECOND else "BELOW"
    print(f"target    {TARGET_ROWS_PER_SECOND:,} rows/s: {verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="Accounts to seed")
    parser.add_argument("--page", type=int, default=50_000, help="maxRecords per results page")
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.page))
