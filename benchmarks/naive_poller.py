"""The live sync a user might write instead of ``sfamp run``, for bench_latency.py.

Every ``every`` seconds, simple-salesforce ``query_all`` reads the Accounts whose
``SystemModstamp`` moved since the last poll, and the official Amplitude SDK
(``amplitude-analytics``) sends one group identify per record, flushed at the
end of each poll (without it the SDK waits up to 10 s to send). Runs in a
thread, as the SDK and simple-salesforce are synchronous.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import requests
from amplitude import Amplitude, Config, Identify
from naive_backfill import PlainHttpAdapter, login
from simple_salesforce.api import Salesforce


class NaivePoller(threading.Thread):
    def __init__(
        self, salesforce_url: str, amplitude_url: str, fields: dict[str, str], every: float
    ) -> None:
        super().__init__(daemon=True)
        self.salesforce_url = salesforce_url
        self.amplitude_url = amplitude_url
        self.fields = fields
        self.every = every
        self.stopping = threading.Event()
        self.polls = 0

    def run(self) -> None:
        session = requests.Session()
        session.mount(self.salesforce_url.replace("http://", "https://"), PlainHttpAdapter())
        token = login(self.salesforce_url)
        sf = Salesforce(instance_url=self.salesforce_url, session_id=token, session=session)
        client = Amplitude("sandbox-api-key", Config(server_url=f"{self.amplitude_url}/2/httpapi"))
        since = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        seen: set[tuple[str, str]] = set()
        columns = ", ".join(["Id", "SystemModstamp", *self.fields])
        while not self.stopping.wait(self.every):
            soql = f"SELECT {columns} FROM Account WHERE SystemModstamp >= {since}"
            for record in sf.query_all(soql)["records"]:
                stamp = record["SystemModstamp"]
                if (record["Id"], stamp) in seen:
                    continue
                seen.add((record["Id"], stamp))
                since = max(since, stamp)
                identify = Identify()
                for field, prop in self.fields.items():
                    if record.get(field) is not None:
                        identify.set(prop, record[field])
                client.group_identify("account", record["Id"], identify)
            client.flush()
            self.polls += 1
        client.shutdown()
