"""The sandbox's /groupidentify over real HTTP: encodings, keys, regions, limits, read-back."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from sfamp_sandbox.amplitude import EU_API_KEY, US_API_KEY, AmplitudeSandbox

pytestmark = pytest.mark.integration


def _ident(value: str, props: dict[str, Any], group_type: str = "account") -> dict[str, Any]:
    return {"group_type": group_type, "group_value": value, "group_properties": props}


async def _identify(http: httpx.AsyncClient, identification: Any, **kw: Any) -> httpx.Response:
    key = kw.pop("api_key", US_API_KEY)
    path = kw.pop("path", "/groupidentify")
    data = {"api_key": key, "identification": json.dumps(identification)}
    return await http.post(path, data=data, **kw)


async def _group(http: httpx.AsyncClient, value: str, prefix: str = "") -> httpx.Response:
    return await http.get(f"{prefix}/__sandbox/groups/account/{value}")


async def test_form_post_sets_properties_and_answers_success_text(http: httpx.AsyncClient) -> None:
    response = await _identify(http, [_ident("001", {"$set": {"name": "Acme", "tier": "Gold"}})])
    assert (response.status_code, response.text) == (200, "success")
    assert response.headers["content-type"].startswith("text/plain")
    group = await _group(http, "001")
    assert group.json() == {
        "group_type": "account",
        "group_value": "001",
        "properties": {"name": "Acme", "tier": "Gold"},
    }


async def test_query_string_get_and_multipart_are_accepted(http: httpx.AsyncClient) -> None:
    params = {"api_key": US_API_KEY, "identification": json.dumps(_ident("q1", {"a": 1}))}
    assert (await http.post("/groupidentify", params=params)).status_code == 200
    assert (await http.get("/groupidentify", params=params)).status_code == 200
    files = {
        "api_key": (None, US_API_KEY),
        "identification": (None, json.dumps(_ident("m1", {"$set": {"b": "ü"}}))),
    }
    assert (await http.post("/groupidentify", files=files)).status_code == 200
    assert (await _group(http, "q1")).json()["properties"] == {"a": 1}
    assert (await _group(http, "m1")).json()["properties"] == {"b": "ü"}


async def test_unknown_group_is_404(http: httpx.AsyncClient) -> None:
    assert (await _group(http, "nobody")).status_code == 404


@pytest.mark.parametrize(
    ("path", "key", "status"),
    [
        ("/groupidentify", US_API_KEY, 200),
        ("/eu/groupidentify", EU_API_KEY, 200),
        ("/eu/groupidentify", US_API_KEY, 400),
        ("/groupidentify", EU_API_KEY, 400),
        ("/groupidentify", "not-a-key", 400),
    ],
)
async def test_keys_only_work_in_their_region(
    http: httpx.AsyncClient, path: str, key: str, status: int
) -> None:
    response = await _identify(http, _ident("r1", {"a": 1}), api_key=key, path=path)
    assert response.status_code == status
    if status == 400:
        assert response.text == "invalid_api_key"


async def test_regions_keep_separate_groups(http: httpx.AsyncClient) -> None:
    await _identify(
        http, _ident("same", {"where": "eu"}), api_key=EU_API_KEY, path="/eu/groupidentify"
    )
    assert (await _group(http, "same")).status_code == 404
    assert (await _group(http, "same", "/eu")).json()["properties"] == {"where": "eu"}
    listed = await http.get("/__sandbox/groups", params={"region": "eu"})
    assert listed.json()["count"] == 1


async def test_one_bad_identification_refuses_the_whole_request(http: httpx.AsyncClient) -> None:
    batch = [_ident("ok1", {"a": 1}), {"group_type": "account"}, _ident("ok2", {"a": 2})]
    response = await _identify(http, batch)
    assert response.status_code == 400
    assert response.text == (
        "invalid_identification: identification[1]: "
        "group_value must be a non-empty string or a number"
    )
    assert (await _group(http, "ok1")).status_code == 404


async def test_missing_identification(http: httpx.AsyncClient) -> None:
    response = await http.post("/groupidentify", data={"api_key": US_API_KEY})
    assert (response.status_code, response.text) == (400, "missing_event")


async def test_more_than_1024_identifications_is_refused(http: httpx.AsyncClient) -> None:
    batch = [_ident(str(n), {}) for n in range(1025)]
    response = await _identify(http, batch)
    assert response.status_code == 400
    assert response.text == "too_many_identifications: 1025 > 1024"
    assert (await _identify(http, batch[:1024])).status_code == 200


async def test_body_over_1_mb_is_413(http: httpx.AsyncClient) -> None:
    big = [_ident(str(n), {"$set": {"text": "x" * 1000}}) for n in range(1000)]
    response = await _identify(http, big)
    assert (response.status_code, response.text) == (413, "Payload too large")


async def test_long_strings_are_truncated(http: httpx.AsyncClient) -> None:
    await _identify(http, _ident("long", {"$set": {"notes": "ö" * 3000}}))
    assert (await _group(http, "long")).json()["properties"]["notes"] == "ö" * 1024


async def test_sixth_group_type_is_accepted_but_ignored(http: httpx.AsyncClient) -> None:
    batch = [_ident("g", {"a": 1}, group_type=f"type{n}") for n in range(6)]
    assert (await _identify(http, batch)).status_code == 200
    listed = (await http.get("/__sandbox/groups")).json()
    assert listed["count"] == 5
    assert "warnings" in (await http.get("/__sandbox/requests")).json()["requests"][-1]


async def test_history_requests_and_reset(http: httpx.AsyncClient) -> None:
    await _identify(http, _ident("h", {"$set": {"a": 1}}))
    await _identify(http, _ident("h", {"$unset": {"a": "-"}, "$set": {"b": 2}}))
    history = (await http.get("/__sandbox/groups/account/h/history")).json()["history"]
    assert [item["operations"] for item in history] == [
        {"$set": {"a": 1}},
        {"$unset": {"a": "-"}, "$set": {"b": 2}},
    ]
    log = (await http.get("/__sandbox/requests")).json()["requests"]
    assert [(r["path"], r["status"], r["identifications"]) for r in log] == [
        ("/groupidentify", 200, 1),
        ("/groupidentify", 200, 1),
    ]
    assert all(r["request_bytes"] > 0 and r["response_bytes"] == 7 for r in log)
    assert (await http.post("/__sandbox/reset")).status_code == 200
    assert (await _group(http, "h")).status_code == 404
    assert (await http.get("/__sandbox/requests")).json()["requests"] == []


async def test_faults_answer_then_clear(http: httpx.AsyncClient) -> None:
    queued = await http.post(
        "/__sandbox/faults", json={"kind": "429", "count": 2, "retry_after": 3}
    )
    assert queued.status_code == 201
    first = await _identify(http, _ident("f", {"a": 1}))
    second = await _identify(http, _ident("f", {"a": 1}))
    assert (first.status_code, first.headers["retry-after"]) == (429, "3")
    assert second.status_code == 429
    assert (await _group(http, "f")).status_code == 404
    assert (await _identify(http, _ident("f", {"a": 1}))).status_code == 200


async def test_delete_forgets_the_queued_faults_and_keeps_the_groups(
    http: httpx.AsyncClient,
) -> None:
    assert (await _identify(http, _ident("kept", {"a": 1}))).status_code == 200
    await http.post("/__sandbox/faults", json={"kind": "500", "count": 100})
    assert (await http.delete("/__sandbox/faults")).json() == {"faults": []}
    assert (await http.get("/__sandbox/faults")).json() == {"faults": []}
    assert (await _identify(http, _ident("after", {"a": 2}))).status_code == 200
    assert (await _group(http, "kept")).json()["properties"] == {"a": 1}


async def test_500_after_apply_changes_state(http: httpx.AsyncClient) -> None:
    await http.post("/__sandbox/faults", json={"kind": "500_after_apply"})
    response = await _identify(http, _ident("after", {"a": 1}))
    assert response.status_code == 500
    assert (await _group(http, "after")).json()["properties"] == {"a": 1}


async def test_bad_fault_is_refused(http: httpx.AsyncClient) -> None:
    response = await http.post("/__sandbox/faults", json={"kind": "418"})
    assert response.status_code == 400
    assert "kind must be one of" in response.json()["error"]


async def test_timeout_fault_holds_until_the_client_gives_up(
    amplitude_sandbox: AmplitudeSandbox, http: httpx.AsyncClient
) -> None:
    await http.post("/__sandbox/faults", json={"kind": "timeout", "delay_seconds": 30})
    with pytest.raises(httpx.ReadTimeout):
        await _identify(http, _ident("slow", {"a": 1}), timeout=0.3)
    assert not amplitude_sandbox.state.faults
    assert (await _group(http, "slow")).status_code == 404


async def test_user_search_checks_the_key_pair(http: httpx.AsyncClient) -> None:
    good = await http.get(
        "/api/2/usersearch", params={"user": "x"}, auth=(US_API_KEY, "sandbox-secret-key")
    )
    assert good.json() == {"type": "nomatch", "matches": []}
    bad = await http.get("/api/2/usersearch", params={"user": "x"}, auth=(US_API_KEY, "wrong"))
    assert bad.status_code == 401
