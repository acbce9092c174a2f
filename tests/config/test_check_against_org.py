"""check_mapping_against_org at the HTTP edge: a stand-in org that answers FieldDefinition, or not.

An org lists every field in FieldDefinition whatever the user's field access, which is what
tells a field hidden by field-level security from a misspelt one; an org where the user may not
query FieldDefinition leaves both possible ("no field ..., or it is not readable").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from pipeline.config.checks import UNREADABLE
from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import SalesforceSettings, Settings
from pipeline.config.verify import check_mapping_against_org, message_of
from pipeline.errors import MappingError, Problem, SettingsError
from pipeline.salesforce.client import SalesforceClient

ORG = "https://org.example"
DATA = "/services/data/v62.0"
DESCRIBED = ["Id", "Name", "SystemModstamp"]  # Industry is hidden from the user
DEFINED = [*DESCRIBED, "Industry"]


def org(*, field_definitions: bool = True) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/services/oauth2/token":
            return httpx.Response(200, json={"access_token": "t", "instance_url": ORG})
        if path == f"{DATA}/sobjects/":
            names = ["Account", "AccountChangeEvent"]
            return httpx.Response(200, json={"sobjects": [_entry(n) for n in names]})
        if path == f"{DATA}/sobjects/Account/describe/":
            fields = [
                {"name": n, "type": "datetime" if "Modstamp" in n else "string"} for n in DESCRIBED
            ]
            return httpx.Response(200, json={"name": "Account", "fields": fields})
        if path == f"{DATA}/query/" and field_definitions:
            soql = request.url.params["q"]
            rows = [{"QualifiedApiName": n} for n in DEFINED if f"'{n}'" in soql]
            return httpx.Response(200, json={"totalSize": len(rows), "done": True, "records": rows})
        error = [{"errorCode": "INVALID_TYPE", "message": "sObject type 'FieldDefinition'"}]
        return httpx.Response(400, json=error)

    return answer


def _entry(name: str) -> dict[str, Any]:
    return {"name": name, "queryable": not name.endswith("ChangeEvent")}


SETTINGS = Settings(
    salesforce=SalesforceSettings(
        login_url=ORG,
        client_id="c",
        client_secret="s",
        username="u",
        password="p",  # type: ignore[arg-type]
    )
)


def mapping(*fields: str) -> MappingConfig:
    return MappingConfig.model_validate(
        {
            "sync_cadence": {"mode": "hourly"},
            "mappings": [
                {
                    "sfdc_object": "Account",
                    "group_type": "account",
                    "group_name_field": "Id",
                    "group_properties": [
                        {"sfdc_field": f, "amplitude_property": f.lower()} for f in fields
                    ],
                }
            ],
        }
    )


async def check(config: MappingConfig, *, field_definitions: bool = True) -> Any:
    transport = httpx.MockTransport(org(field_definitions=field_definitions))
    async with SalesforceClient.from_settings(SETTINGS.salesforce, transport=transport) as sf:
        return await check_mapping_against_org(SETTINGS, config, salesforce=sf, change_events=True)


async def test_a_hidden_field_is_refused_as_unreadable_and_a_misspelt_one_as_missing() -> None:
    with pytest.raises(MappingError) as info:
        await check(mapping("Name", "Industry", "Names"))
    assert [str(p) for p in info.value.problems] == [
        f"Account.Industry -> industry: Industry is {UNREADABLE}",
        "Account.Names -> names: no field Names on Account (did you mean Name?)",
    ]
    assert str(info.value) == "the mapping does not match the Salesforce org: 2 problems"


async def test_without_field_definitions_a_missing_field_may_be_either() -> None:
    with pytest.raises(MappingError) as info:
        await check(mapping("Industry"), field_definitions=False)
    assert info.value.problems[0].message == f"no field Industry on Account, or it is {UNREADABLE}"


async def test_a_mapping_that_fits_returns_its_warnings() -> None:
    warnings = await check(mapping("Name", "SystemModstamp"))
    assert [p.path for p in warnings] == ["Account.SystemModstamp -> systemmodstamp"]
    assert "change events never carry it" in warnings[0].message


def test_a_check_detail_keeps_every_settings_problem() -> None:
    error = SettingsError([Problem("SFAMP_A", "required"), Problem("SFAMP_B", "required")])
    assert (
        message_of(error) == "invalid settings (2 problems): SFAMP_A: required; SFAMP_B: required"
    )
