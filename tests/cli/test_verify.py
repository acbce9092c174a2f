"""Online verification of a mapping against the Salesforce and Amplitude sandboxes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import structlog
from pydantic import SecretStr

from pipeline.cli.verify import run_verify
from pipeline.config.checks import Check, VerifyReport
from pipeline.config.mapping import MappingConfig, ReconcileOff
from pipeline.config.settings import AmplitudeSettings, SalesforceSettings, Settings
from pipeline.config.verify import verify_mapping
from pipeline.logs import configure_logging
from sfamp_sandbox.amplitude import SECRET_KEY, US_API_KEY, AmplitudeSandbox
from sfamp_sandbox.amplitude.state import Fault
from sfamp_sandbox.salesforce import SalesforceSandbox
from tests.support.ports import closed_port_url

pytestmark = pytest.mark.integration


@pytest.fixture
async def salesforce() -> AsyncIterator[SalesforceSandbox]:
    async with SalesforceSandbox() as sandbox:
        yield sandbox


@pytest.fixture
async def amplitude() -> AsyncIterator[AmplitudeSandbox]:
    async with AmplitudeSandbox() as sandbox:
        yield sandbox


def settings_for(
    salesforce_url: str, amplitude_url: str, *, api_key: str = US_API_KEY, **sf: Any
) -> Settings:
    values: dict[str, Any] = {
        "login_url": salesforce_url,
        "client_id": "sandbox-client",
        "client_secret": "sandbox-secret",
        "username": "admin@sandbox.example",
        "password": "sandbox",
        "timeout_seconds": 5,
        **sf,
    }
    return Settings(
        salesforce=SalesforceSettings(**values),
        amplitude=AmplitudeSettings(api_key=api_key, base_url=amplitude_url, timeout_seconds=5),
    )


@pytest.fixture
def settings(salesforce: SalesforceSandbox, amplitude: AmplitudeSandbox) -> Settings:
    return settings_for(salesforce.base_url, amplitude.base_url)


def mapping_of(*relations: tuple[str, str, list[str]]) -> MappingConfig:
    """``(object, group name field, property fields)`` per relation."""
    return MappingConfig.model_validate(
        {
            "sync_cadence": {"mode": "interval", "every_seconds": 60},
            "mappings": [
                {
                    "sfdc_object": sfdc_object,
                    "group_type": sfdc_object.lower().removesuffix("__c"),
                    "group_name_field": name_field,
                    "group_properties": [
                        {"sfdc_field": f, "amplitude_property": f.lower()} for f in fields
                    ],
                }
                for sfdc_object, name_field, fields in relations
            ],
        }
    )


GOOD = mapping_of(
    ("Account", "Id", ["Name", "Industry", "BillingAddress", "AnnualRevenue", "Regions__c"]),
    ("Plan__c", "Id", ["Name"]),
)


def by_name(report: VerifyReport) -> dict[str, Check]:
    return {check.name: check for check in report.checks}


def statuses(report: VerifyReport) -> dict[str, str]:
    return {check.name: check.status for check in report.checks}


async def test_a_good_mapping_passes_every_check(
    settings: Settings, salesforce: SalesforceSandbox
) -> None:
    report = await verify_mapping(settings, GOOD)
    assert report.ok, report.checks
    assert set(statuses(report).values()) == {"pass"}
    assert report.user_email is not None
    assert "@" in report.user_email
    assert report.instance_url == salesforce.base_url
    checks = by_name(report)
    assert "Account: object" in checks
    assert "Account -> account: group name field Id" in checks
    assert checks["Account.AnnualRevenue -> annualrevenue"].detail == "currency -> number"
    assert "BillingCity" in checks["Account.BillingAddress -> billingaddress"].detail
    assert checks["Account.Regions__c -> regions__c"].detail == "multipicklist -> list of strings"
    assert "CDC /data/AccountChangeEvent" in checks
    assert "CDC /data/Plan__ChangeEvent" in checks
    assert checks["Amplitude API key"].status == "pass"


async def test_unknown_object_and_unknown_field_fail(settings: Settings) -> None:
    mapping = mapping_of(
        ("Nope__c", "Id", ["Name"]),
        ("Account", "Id", ["Name", "Foo__c"]),
    )
    report = await verify_mapping(settings, mapping)
    assert not report.ok
    checks = by_name(report)
    assert checks["Nope__c: object"].status == "fail"
    assert "no object Nope__c" in checks["Nope__c: object"].detail
    assert checks["Account.Foo__c -> foo__c"].status == "fail"
    assert checks["Account.Foo__c -> foo__c"].detail == "no field Foo__c on Account"
    assert checks["Account.Name -> name"].status == "pass"
    assert "CDC /data/Nope__ChangeEvent" not in checks
    assert checks["CDC /data/AccountChangeEvent"].status == "pass"


async def test_group_name_field_suitability(settings: Settings) -> None:
    mapping = mapping_of(
        ("Account", "Industry", ["Name"]),
        ("Account", "External_Id__c", ["Rating"]),
        ("Account", "Name", ["Industry"]),
        ("Contact", "BillingAddress", ["Email"]),
    )
    report = await verify_mapping(settings, mapping)
    checks = by_name(report)
    industry = checks["Account -> account: group name field Industry"]
    assert industry.status == "warn"
    assert "not unique" in industry.detail
    external = checks["Account -> account: group name field External_Id__c"]
    assert external.status == "pass"
    assert "external id" in external.detail
    # Account.Name is an id lookup field, as in a real org, yet two accounts may share it.
    name = checks["Account -> account: group name field Name"]
    assert name.status == "warn"
    assert "id lookup field but not unique" in name.detail
    assert "records sharing a value share one group" in name.detail
    assert checks["Contact -> contact: group name field BillingAddress"].status == "fail"


async def test_warnings_alone_keep_the_report_ok(settings: Settings) -> None:
    mapping = mapping_of(("Account", "Industry", ["Name", "Revenue_Per_Employee__c"]))
    report = await verify_mapping(settings, mapping)
    assert report.ok
    assert by_name(report)["Account -> account: group name field Industry"].status == "warn"
    formula = by_name(report)["Account.Revenue_Per_Employee__c -> revenue_per_employee__c"]
    assert formula.status == "pass"
    assert formula.detail == (
        "formula (currency): re-read when AnnualRevenue, NumberOfEmployees change"
    )


async def test_object_name_in_the_wrong_case_fails(settings: Settings) -> None:
    report = await verify_mapping(settings, mapping_of(("account", "Id", ["Name"])))
    check = by_name(report)["account: object"]
    assert check.status == "fail"
    assert "spell it Account" in check.detail


async def test_a_wrong_amplitude_key_fails(
    salesforce: SalesforceSandbox, amplitude: AmplitudeSandbox
) -> None:
    settings = settings_for(salesforce.base_url, amplitude.base_url, api_key="wrong-key")
    report = await verify_mapping(settings, GOOD)
    assert not report.ok
    check = by_name(report)["Amplitude API key"]
    assert check.status == "fail"
    assert "refused the API key" in check.detail
    assert "wrong-key" not in check.detail
    assert by_name(report)["Account: object"].status == "pass"


async def test_a_secret_key_is_checked_with_the_api_key_as_a_pair(
    salesforce: SalesforceSandbox, amplitude: AmplitudeSandbox
) -> None:
    settings = settings_for(salesforce.base_url, amplitude.base_url)
    assert "Amplitude secret key" not in by_name(await verify_mapping(settings, GOOD))
    secret = SecretStr(SECRET_KEY)
    right = settings.model_copy(
        update={"amplitude": settings.amplitude.model_copy(update={"secret_key": secret})}
    )
    check = by_name(await verify_mapping(right, GOOD))["Amplitude secret key"]
    assert (check.status, check.detail) == (
        "pass",
        f"key pair accepted by {amplitude.base_url}/api/2/usersearch",
    )
    wrong = right.model_copy(
        update={"amplitude": right.amplitude.model_copy(update={"secret_key": SecretStr("x")})}
    )
    report = await verify_mapping(wrong, GOOD)
    assert report.ok  # sfamp sends nothing with it: an import or a Save goes on
    check = by_name(report)["Amplitude secret key"]
    assert check.status == "warn"
    assert check.detail == (
        "Amplitude refused the API key and secret key as a pair (401): set "
        "SFAMP_AMPLITUDE__SECRET_KEY to the secret key of the API key's project"
    )
    assert by_name(report)["Amplitude API key"].status == "pass"


async def test_bad_salesforce_password_is_a_failed_login(
    salesforce: SalesforceSandbox, amplitude: AmplitudeSandbox
) -> None:
    settings = settings_for(salesforce.base_url, amplitude.base_url, password="wrong")
    report = await verify_mapping(settings, GOOD)
    assert statuses(report) == {"Salesforce login": "fail", "Amplitude API key": "pass"}
    assert "authentication failure (invalid_grant)" in report.checks[0].detail
    assert report.user_email is None


async def test_salesforce_down_is_a_failed_check_not_an_exception(
    amplitude: AmplitudeSandbox,
) -> None:
    settings = settings_for(closed_port_url(), amplitude.base_url)
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    report = await verify_mapping(settings, GOOD, sleep=no_wait)
    assert not report.ok
    login = by_name(report)["Salesforce login"]
    assert login.status == "fail"
    assert "cannot reach Salesforce login" in login.detail
    assert login.detail.endswith(": connection refused"), login.detail  # not "ConnectError"
    assert len(waits) == 3  # retried, then given up
    assert by_name(report)["Amplitude API key"].status == "pass"


async def test_amplitude_down_leaves_the_key_unchecked_with_a_warning(
    salesforce: SalesforceSandbox,
) -> None:
    """An outage says nothing of the key: it must not hold back an import or a Save."""
    settings = settings_for(salesforce.base_url, closed_port_url())
    report = await verify_mapping(settings, GOOD)
    check = by_name(report)["Amplitude API key"]
    assert check.status == "warn"
    assert check.detail == "not checked: Amplitude did not answer (connection refused)"
    assert report.ok


async def test_an_amplitude_answering_500_leaves_the_key_unchecked(
    salesforce: SalesforceSandbox, amplitude: AmplitudeSandbox
) -> None:
    amplitude.state.add_fault(Fault("500", remaining=5))
    settings = settings_for(salesforce.base_url, amplitude.base_url)
    report = await verify_mapping(settings, GOOD)
    check = by_name(report)["Amplitude API key"]
    assert (check.status, check.detail) == ("warn", "not checked: Amplitude answered 500")
    assert report.ok


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """Logging as the CLI sets it up (to stderr), undone afterwards."""
    configure_logging("json", "info")
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("cli_logging")
async def test_run_verify_prints_json_or_a_table(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping = mapping_of(("Account", "Industry", ["Name", "Foo__c"]))
    report = await asyncio.to_thread(run_verify, settings, mapping, json_output=True)
    printed = json.loads(capsys.readouterr().out)
    assert printed["ok"] is False
    assert printed["ok"] == report.ok
    assert printed["user_email"] == report.user_email
    assert {"name": "Account.Foo__c -> foo__c", "status": "fail"}.items() <= next(
        c for c in printed["checks"] if c["name"] == "Account.Foo__c -> foo__c"
    ).items()

    await asyncio.to_thread(run_verify, settings, mapping)
    table = capsys.readouterr().out
    assert "Account.Foo__c -> foo__c" in table
    assert "no field Foo__c on Account" in table
    assert "1 check failed" in table


async def test_a_channel_that_does_not_exist_fails(
    salesforce: SalesforceSandbox, amplitude: AmplitudeSandbox
) -> None:
    settings = settings_for(
        salesforce.base_url, amplitude.base_url, cdc_channel="/data/Missing__chn"
    )
    report = await verify_mapping(settings, GOOD)
    check = by_name(report)["CDC /data/Missing__chn"]
    assert check.status == "fail"
    assert "does not exist" in check.detail
    assert "CDC /data/AccountChangeEvent" not in by_name(report)


async def test_a_field_hidden_from_the_integration_user_fails(
    settings: Settings, salesforce: SalesforceSandbox
) -> None:
    async with httpx.AsyncClient(base_url=salesforce.base_url) as control:
        answer = await control.post(
            "/__sandbox/field-security",
            json={"object": "Account", "field": "Industry", "readable": False},
        )
        assert answer.status_code == 200, answer.text
    report = await verify_mapping(settings, mapping_of(("Account", "Id", ["Name", "Industry"])))
    assert not report.ok
    check = by_name(report)["Account.Industry -> industry"]
    assert check.status == "fail"
    # FieldDefinition still lists the hidden field, so the detail says which problem it is.
    assert check.detail == (
        "Industry is not readable by the integration user: grant read access (field-level security)"
    )
    assert by_name(report)["Account.Name -> name"].status == "pass"


async def test_field_names_in_another_case_say_how_to_spell_them(
    settings: Settings, salesforce: SalesforceSandbox
) -> None:
    """SOQL takes any case, so FieldDefinition lists ``industry`` as Industry; change events
    carry Industry only. Not a field-level security problem, even for a hidden field."""
    async with httpx.AsyncClient(base_url=salesforce.base_url) as control:
        answer = await control.post(
            "/__sandbox/field-security",
            json={"object": "Account", "field": "Rating", "readable": False},
        )
        assert answer.status_code == 200, answer.text
    mapping = mapping_of(("Account", "id", ["industry", "RATING", "billingaddress", "Name"]))
    report = await verify_mapping(settings, mapping)
    checks = by_name(report)
    case = "field names in change events are case-sensitive"
    assert checks["Account -> account: group name field id"].detail == f"spell it Id: {case}"
    assert checks["Account.industry -> industry"].detail == f"spell it Industry: {case}"
    assert checks["Account.RATING -> rating"].detail == f"spell it Rating: {case}"
    assert checks["Account.billingaddress -> billingaddress"].detail == (
        f"spell it BillingAddress: {case}"
    )
    assert checks["Account.Name -> name"].status == "pass"
    assert not report.ok


async def test_fields_change_events_never_carry_are_warned(settings: Settings) -> None:
    mapping = mapping_of(("Account", "Id", ["Name", "SystemModstamp", "IsDeleted"]))
    report = await verify_mapping(settings, mapping)
    assert report.ok
    for name in ("Account.SystemModstamp -> systemmodstamp", "Account.IsDeleted -> isdeleted"):
        check = by_name(report)[name]
        assert check.status == "warn"
        assert check.detail.endswith(
            "change events never carry it; "
            "refreshed by the reconcile (daily at 03:00 UTC), backfills and re-syncs"
        )


async def test_with_the_reconcile_off_verify_warns_they_go_stale(settings: Settings) -> None:
    mapping = mapping_of(("Account", "Id", ["Name", "SystemModstamp"]))
    off = mapping.model_copy(update={"reconcile": ReconcileOff(mode="off")})
    check = by_name(await verify_mapping(settings, off))["Account.SystemModstamp -> systemmodstamp"]
    assert check.status == "warn"
    assert check.detail.endswith(
        "change events never carry it; the reconcile is off, so it goes stale "
        '(set "reconcile" in the mapping)'
    )


async def test_a_misspelt_object_names_the_nearest_one(settings: Settings) -> None:
    report = await verify_mapping(settings, mapping_of(("Acount", "Id", ["Name"])))
    check = by_name(report)["Acount: object"]
    assert check.status == "fail"
    assert check.detail == "no object Acount in this org (did you mean Account?)"
