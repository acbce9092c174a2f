"""The backfill a user might write instead of ``sfamp backfill``, for comparison.

simple-salesforce ``query_all`` reads every Account into memory, then the
official Amplitude SDK (``amplitude-analytics``) sends one group identify per
record, with the SDK's default batching. Pointed at the sandboxes, it prints
one JSON line: rows, seconds, and the Amplitude requests the sandbox counted.

    .venv/bin/python benchmarks/naive_backfill.py --salesforce URL --amplitude URL
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import requests
from amplitude import Amplitude, Config, Identify
from bench_backfill import PROPERTIES
from requests.adapters import HTTPAdapter
from simple_salesforce.api import Salesforce

# The fields the benchmark maps for sfamp too, so both move the same data.
FIELDS = PROPERTIES


class PlainHttpAdapter(HTTPAdapter):
    """simple-salesforce always builds https:// URLs; the sandbox speaks plain HTTP."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        assert request.url is not None
        request.url = "http://" + request.url.removeprefix("https://")
        return super().send(request, *args, **kwargs)


def login(salesforce_url: str) -> str:
    answer = requests.post(
        f"{salesforce_url}/services/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": "sandbox-client",
            "client_secret": "sandbox-secret",
            "username": "admin@sandbox.example",
            "password": "sandbox",
        },
        timeout=30,
    )
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def amplitude_requests(amplitude_url: str) -> int:
    answer = requests.get(f"{amplitude_url}/__sandbox/requests", params={"limit": 1}, timeout=30)
    entries = answer.json()["requests"]
    return int(entries[-1]["id"]) if entries else 0


def main(salesforce_url: str, amplitude_url: str) -> None:
    started = time.perf_counter()
    session = requests.Session()
    session.mount(salesforce_url.replace("http://", "https://"), PlainHttpAdapter())
    sf = Salesforce(instance_url=salesforce_url, session_id=login(salesforce_url), session=session)
    soql = f"SELECT Id, {', '.join(FIELDS)} FROM Account"
    records = sf.query_all(soql)["records"]
    client = Amplitude("sandbox-api-key", Config(server_url=f"{amplitude_url}/2/httpapi"))
    for record in records:
        identify = Identify()
        for field, prop in FIELDS.items():
            if record.get(field) is not None:
                identify.set(prop, record[field])
        client.group_identify("account", record["Id"], identify)
    client.shutdown()  # flushes what the SDK still buffers
    seconds = time.perf_counter() - started
    result = {
        "rows": len(records),
        "seconds": seconds,
        "amplitude_requests": amplitude_requests(amplitude_url),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--salesforce", required=True, help="Salesforce sandbox base URL")
    parser.add_argument("--amplitude", required=True, help="Amplitude sandbox base URL")
    arguments = parser.parse_args()
    main(arguments.salesforce, arguments.amplitude)
