"""Control API: seeding, clock, injected CDC events, read-back, faults and reset."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import httpx
import pytest

from sfamp_sandbox.salesforce import SalesforceSandbox

from .conftest import API

pytestmark = pytest.mark.integration


def _headers(events: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e["payload"]["ChangeEventHeader"] for e in events]  # type: ignore[index]


async def test_seed_is_silent_unless_asked(
    salesforce_sandbox: SalesforceSandbox, sf_http: httpx.AsyncClient
) -> None:
    quiet = await sf_http.post("/__sandbox/seed", json={"object": "Account", "count": 5})
    assert len(quiet.json()["ids"]) == 5
    assert salesforce_sandbox.events.latest_replay_id == 0
    loud = await sf_http.post(
        "/__sandbox/seed", json={"object": "Contact", "count": 3, "emit_events": True}
    )
    headers = _headers(salesforce_sandbox.events.events_after(-2))
    assert [h["recordIds"] for h in headers] == [[i] for i in loud.json()["ids"]]
    assert {h["transactionKey"] for h in headers} == {headers[0]["transactionKey"]}
    assert [h["sequenceNumber"] for h in headers] == [1, 2, 3]


async def test_multi_update_and_gap_events(
    salesforce_sandbox: SalesforceSandbox, sf_http: httpx.AsyncClient
) -> None:
    ids = (await sf_http.post("/__sandbox/seed", json={"object": "Account", "count": 3})).json()
    ids = ids["ids"]
    multi = await sf_http.post(
        "/__sandbox/events",
        json={
            "type": "multi_update",
            "object": "Account",
            "ids": ids[:2],
            "fields": {"Industry": "Energy", "Phone": None},
        },
    )
    assert multi.status_code == 200
    await sf_http.post(
        "/__sandbox/events",
        json={"type": "gap", "change_type": "GAP_DELETE", "object": "Account", "ids": [ids[2]]},
    )
    await sf_http.post("/__sandbox/events", json={"type": "gap_overflow", "object": "Account"})
    events = (await sf_http.get("/__sandbox/events", params={"after": "-2"})).json()
    update, gap, overflow = events
    header = update["payload"]["ChangeEventHeader"]
    assert header["recordIds"] == ids[:2]
    assert sorted(header["changedFields"]) == ["Industry", "LastModifiedDate", "Phone"]
    assert header["nulledFields"] == ["Phone"]
    assert update["payload"]["Industry"] == "Energy"
    assert gap["payload"] == {"ChangeEventHeader": gap["payload"]["ChangeEventHeader"]}
    assert gap["payload"]["ChangeEventHeader"]["changeType"] == "GAP_DELETE"
    assert overflow["payload"]["ChangeEventHeader"]["changeType"] == "GAP_OVERFLOW"
    assert overflow["payload"]["ChangeEventHeader"]["recordIds"] == []
    read_back = (await sf_http.get(f"/__sandbox/records/Account/{ids[0]}")).json()
    assert read_back["Industry"] == "Energy"
    assert read_back["Phone"] is None


async def test_control_writes_and_undelete_emit_events(
    salesforce_sandbox: SalesforceSandbox, sf_http: httpx.AsyncClient
) -> None:
    created = await sf_http.post("/__sandbox/records/Account", json={"Name": "Ctl"})
    record_id = created.json()["id"]
    await sf_http.delete(f"/__sandbox/records/Account/{record_id}")
    await sf_http.post(f"/__sandbox/records/Account/{record_id}/undelete")
    events = salesforce_sandbox.events.events_after(-2)
    assert [h["changeType"] for h in _headers(events)] == ["CREATE", "DELETE", "UNDELETE"]
    assert events[2]["payload"]["Name"] == "Ctl"
    missing = await sf_http.get("/__sandbox/records/Account/001RM00000000zzAAA")
    assert missing.status_code == 404


async def test_delete_and_undelete_without_events_move_the_record_silently(
    salesforce_sandbox: SalesforceSandbox, sf_http: httpx.AsyncClient
) -> None:
    """A quiet delete published a DELETE all the same, which a test of a delete that no
    event brings then raced."""
    created = await sf_http.post("/__sandbox/records/Account?emit_events=false", json={"Name": "Q"})
    record_id = created.json()["id"]
    latest = salesforce_sandbox.events.latest_replay_id
    gone = await sf_http.delete(f"/__sandbox/records/Account/{record_id}?emit_events=false")
    assert gone.json()["IsDeleted"] is True
    back = await sf_http.post(
        f"/__sandbox/records/Account/{record_id}/undelete", json={"emit_events": False}
    )
    assert back.json()["IsDeleted"] is False
    assert salesforce_sandbox.events.latest_replay_id == latest
    await sf_http.delete(f"/__sandbox/records/Account/{record_id}")
    assert salesforce_sandbox.events.latest_replay_id == latest + 1


async def test_clock_advances_audit_stamps(sf_http: httpx.AsyncClient) -> None:
    before = (await sf_http.get("/__sandbox/clock")).json()["epoch_seconds"]
    moved = (await sf_http.post("/__sandbox/clock", json={"advance_seconds": 86400})).json()
    assert moved["epoch_seconds"] - before >= 86400
    created = await sf_http.post(f"{API}/sobjects/Account/", json={"Name": "Later"})
    record = (await sf_http.get(f"{API}/sobjects/Account/{created.json()['id']}")).json()
    assert record["CreatedDate"][:10] == moved["now"][:10]
    refused = await sf_http.post("/__sandbox/clock", json={"advance_seconds": -5})
    assert refused.status_code == 400


async def test_answers_are_dated_by_the_org_clock(sf_http: httpx.AsyncClient) -> None:
    # Clients measure windows over SystemModstamp on the Date header, as a real org's.
    moved = (await sf_http.post("/__sandbox/clock", json={"advance_seconds": 73 * 3600})).json()
    answer = await sf_http.get(f"{API}/")
    dated = parsedate_to_datetime(answer.headers["Date"]).timestamp()
    assert abs(dated - moved["epoch_seconds"]) < 5, (answer.headers["Date"], moved["now"])


async def test_seed_dates_records_in_the_past(sf_http: httpx.AsyncClient) -> None:
    now = (await sf_http.get("/__sandbox/clock")).json()["epoch_seconds"]
    body = {"object": "Account", "count": 3, "age_seconds": 3 * 86400}
    aged = (await sf_http.post("/__sandbox/seed", json=body)).json()["ids"]
    fresh = (await sf_http.post("/__sandbox/seed", json={"object": "Account", "count": 2})).json()
    record = (await sf_http.get(f"{API}/sobjects/Account/{aged[0]}")).json()
    stamps = {record[name] for name in ("CreatedDate", "LastModifiedDate", "SystemModstamp")}
    three_days_ago = time.strftime("%Y-%m-%d", time.gmtime(now - 3 * 86400))
    assert {stamp[:10] for stamp in stamps} == {three_days_ago}, stamps
    hour_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600))
    soql = f"SELECT Id FROM Account WHERE SystemModstamp >= {hour_ago}"
    found = (await sf_http.get(f"{API}/query", params={"q": soql})).json()["records"]
    assert sorted(r["Id"] for r in found) == sorted(fresh["ids"])
    refused = await sf_http.post("/__sandbox/seed", json=body | {"age_seconds": -1})
    assert refused.status_code == 400


async def test_cometd_faults_are_forwarded_and_unknown_kinds_refused(
    salesforce_sandbox: SalesforceSandbox, sf_http: httpx.AsyncClient
) -> None:
    response = await sf_http.post("/__sandbox/faults", json={"kind": "unknown_client", "count": 2})
    assert response.status_code == 200
    assert salesforce_sandbox.state.cometd is not None
    assert salesforce_sandbox.state.cometd.pending_faults["unknown_client"] == 2
    bad = await sf_http.post("/__sandbox/faults", json={"kind": "meteor"})
    assert bad.status_code == 400
    assert "unknown fault kind 'meteor'; the kinds are " in bad.text
    assert "expire_sessions" in bad.text


@pytest.mark.parametrize("count", [0, -2000, 10_001, "2", True])
async def test_a_fault_count_outside_1_to_10000_is_refused(
    salesforce_sandbox: SalesforceSandbox, sf_http: httpx.AsyncClient, count: object
) -> None:
    """A negative count added to the CometD counter left it "on" for good."""
    refused = await sf_http.post(
        "/__sandbox/faults", json={"kind": "drop_long_poll", "count": count}
    )
    assert refused.status_code == 400
    assert "count must be an integer from 1 to 10000" in refused.text
    assert salesforce_sandbox.state.cometd is not None
    assert salesforce_sandbox.state.cometd.pending_faults["drop_long_poll"] == 0


async def test_delete_forgets_the_faults_not_used_yet(
    salesforce_sandbox: SalesforceSandbox, sf_http: httpx.AsyncClient
) -> None:
    for kind in ("http_503", "drop_long_poll"):
        queued = await sf_http.post("/__sandbox/faults", json={"kind": kind, "count": 3})
        assert queued.status_code == 200
    assert (await sf_http.delete("/__sandbox/faults")).json() == {"pending_rest_faults": 0}
    assert (await sf_http.get(f"{API}/limits/")).status_code == 200
    assert salesforce_sandbox.state.cometd is not None
    assert salesforce_sandbox.state.cometd.pending_faults["drop_long_poll"] == 0


async def test_slow_fault_delays_the_next_request(sf_http: httpx.AsyncClient) -> None:
    await sf_http.post("/__sandbox/faults", json={"kind": "slow", "delay_seconds": 0.3})
    started = time.perf_counter()
    assert (await sf_http.get(f"{API}/limits/")).status_code == 200
    assert time.perf_counter() - started >= 0.3


async def test_reset_forgets_records_and_usage(
    salesforce_sandbox: SalesforceSandbox, sf_http: httpx.AsyncClient
) -> None:
    await sf_http.post("/__sandbox/seed", json={"object": "Account", "count": 10})
    await sf_http.get(f"{API}/limits/")
    await sf_http.post("/__sandbox/reset")
    summary = (await sf_http.get("/__sandbox")).json()
    assert summary["records"]["Account"] == 0
    assert summary["api_usage"]["used"] == 0


async def test_patch_without_events_changes_values_silently(
    salesforce_sandbox: SalesforceSandbox, sf_http: httpx.AsyncClient
) -> None:
    created = await sf_http.post("/__sandbox/records/Account", json={"Name": "Quiet"})
    record_id = created.json()["id"]
    before = (await sf_http.get(f"/__sandbox/records/Account/{record_id}")).json()
    latest = salesforce_sandbox.events.latest_replay_id
    await sf_http.post("/__sandbox/clock", json={"advance_seconds": 60})
    by_body = await sf_http.patch(
        f"/__sandbox/records/Account/{record_id}",
        json={"AnnualRevenue": 500, "emit_events": False},
    )
    assert by_body.status_code == 200, by_body.text
    by_query = await sf_http.patch(
        f"/__sandbox/records/Account/{record_id}",
        params={"emit_events": "false"},
        json={"NumberOfEmployees": 5},
    )
    after = by_query.json()
    assert salesforce_sandbox.events.latest_replay_id == latest
    assert (after["AnnualRevenue"], after["NumberOfEmployees"]) == (500.0, 5)
    assert after["Revenue_Per_Employee__c"] == 100.0
    assert after["LastModifiedDate"] == before["LastModifiedDate"]
    assert after["SystemModstamp"] > before["SystemModstamp"]
    await sf_http.patch(f"/__sandbox/records/Account/{record_id}", json={"Phone": "1"})
    assert salesforce_sandbox.events.latest_replay_id == latest + 1
    bad = await sf_http.patch(
        f"/__sandbox/records/Account/{record_id}", json={"Phone": "2", "emit_events": "maybe"}
    )
    assert bad.status_code == 400
    silent = await sf_http.post(
        "/__sandbox/records/Account", json={"Name": "Loaded", "emit_events": False}
    )
    assert silent.status_code == 201
    assert salesforce_sandbox.events.latest_replay_id == latest + 1
