"""Online verification of a mapping (``sfamp config verify``) against the org and Amplitude.

Offline validation proves a mapping is well formed; this proves it can work
with *this* org and *this* Amplitude project: the user can log in, each object
exists and is queryable, each field exists with a type sfamp converts, the
group name field identifies one record, CDC can be subscribed to, and
Amplitude accepts the API key. Every problem becomes a failed or warned check;
nothing about the org or the network raises, so the user sees all of them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

from rich.table import Table

from pipeline.amplitude import AmplitudeClient
from pipeline.cli.common import console, print_json
from pipeline.config.mapping import MappingConfig, ObjectMapping
from pipeline.config.settings import AmplitudeSettings, SalesforceSettings, Settings
from pipeline.errors import SalesforceError, SfampError
from pipeline.salesforce.cdc import channel_for
from pipeline.salesforce.client import SalesforceClient
from pipeline.salesforce.rest import Sleep
from pipeline.transform.schema import ObjectSchema, schema_from_describe

Status = Literal["pass", "warn", "fail"]

# Field types sfamp turns into group properties, with what Amplitude stores.
_AS_TEXT: Final = (
    "id reference string textarea picklist combobox email phone url time encryptedstring anyType"
)
CONVERSIONS: Final[Mapping[str, str]] = {
    **dict.fromkeys(_AS_TEXT.split(), "string"),
    **dict.fromkeys(("int", "long", "double", "currency", "percent"), "number"),
    "boolean": "boolean",
    "multipicklist": "list of strings",
    "date": "date (YYYY-MM-DD)",
    "datetime": "ISO 8601 UTC timestamp",
    "address": "one property per component",
    "location": "one property per component",
}
UNSUPPORTED: Final[Mapping[str, str]] = {
    "base64": "binary content cannot be a group property",
}
_STYLE: Final[Mapping[str, str]] = {"pass": "green", "warn": "yellow", "fail": "bold red"}


@dataclass(slots=True)
class Check:
    name: str
    status: Status
    detail: str


@dataclass(slots=True)
class VerifyReport:
    user_email: str | None = None
    instance_url: str | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No check failed (warnings are allowed)."""
        return all(check.status != "fail" for check in self.checks)

    def add(self, name: str, status: Status, detail: str) -> None:
        self.checks.append(Check(name, status, detail))

    def count(self, status: Status) -> int:
        return sum(1 for check in self.checks if check.status == status)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "user_email": self.user_email,
            "instance_url": self.instance_url,
            "checks": [asdict(check) for check in self.checks],
        }


async def verify_mapping(
    settings: Settings, mapping: MappingConfig, *, sleep: Sleep = asyncio.sleep
) -> VerifyReport:
    """Run every online check; org and network problems become failed checks, never raise."""
    report = VerifyReport()
    await _verify_salesforce(settings.salesforce, mapping, report, sleep)
    report.checks.append(await check_amplitude(settings.amplitude))
    return report


def run_verify(
    settings: Settings, mapping: MappingConfig, *, json_output: bool = False
) -> VerifyReport:
    """Verify and print the report (a table, or JSON for scripts); the caller picks the exit."""
    if json_output:
        report = asyncio.run(verify_mapping(settings, mapping))
        print_json(report.as_json())
        return report
    with console.status("checking the mapping against Salesforce and Amplitude..."):
        report = asyncio.run(verify_mapping(settings, mapping))
    render(report)
    return report


def render(report: VerifyReport) -> None:
    title = "online checks"
    if report.instance_url:
        title += f" as {report.user_email or '?'} at {report.instance_url}"
    table = Table(title=title, title_justify="left")
    table.add_column("check", style="cyan")
    table.add_column("result", no_wrap=True)
    table.add_column("detail")
    for check in report.checks:
        table.add_row(check.name, f"[{_STYLE[check.status]}]{check.status}[/]", check.detail)
    console.print(table)
    summary = f"{report.count('pass')} passed, {report.count('warn')} warning(s)"
    if report.ok:
        console.print(f"[green]verified[/]: {summary}", highlight=False)
    else:
        console.print(f"[bold red]{report.count('fail')} check(s) failed[/], {summary}")


# -- Salesforce -----------------------------------------------------------------------------


async def _verify_salesforce(
    settings: SalesforceSettings, mapping: MappingConfig, report: VerifyReport, sleep: Sleep
) -> None:
    async with SalesforceClient.from_settings(settings, sleep=sleep) as client:
        if not await _check_login(client, report):
            return
        try:
            listing = await client.rest.describe_global()
        except SfampError as exc:
            report.add("Salesforce objects", "fail", _message(exc))
            return
        entries = _entries(listing)
        channels: list[str] = []
        for sfdc_object in mapping.objects:
            schema = await _check_object(client, sfdc_object, entries, report)
            if schema is None:
                continue
            for object_mapping in mapping.for_object(sfdc_object):
                check_fields(object_mapping, schema, report)
            if _check_change_entity(sfdc_object, entries, report):
                channels.append(channel_for(sfdc_object))
        if settings.cdc_channel:
            channels = [settings.cdc_channel]
        if channels:
            await _check_streaming(client, channels, report)


async def _check_login(client: SalesforceClient, report: VerifyReport) -> bool:
    try:
        info = await client.rest.userinfo()  # logs in, with the REST retries
        token = await client.auth.token()
    except SfampError as exc:
        report.add("Salesforce login", "fail", _message(exc))
        return False
    report.instance_url = token.instance_url
    email = info.get("email")
    report.user_email = email if isinstance(email, str) else None
    user = info.get("preferred_username") or report.user_email or "?"
    report.add(
        "Salesforce login",
        "pass",
        f"{client.settings.auth_flow} flow as {user} at {token.instance_url}",
    )
    return True


def _entries(listing: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Global describe entries by lower-case name (API names are case-insensitive)."""
    sobjects = listing.get("sobjects")
    found: dict[str, Mapping[str, Any]] = {}
    for entry in sobjects if isinstance(sobjects, list) else []:
        if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
            found[entry["name"].lower()] = entry
    return found


async def _check_object(
    client: SalesforceClient,
    sfdc_object: str,
    entries: Mapping[str, Mapping[str, Any]],
    report: VerifyReport,
) -> ObjectSchema | None:
    name = f"{sfdc_object}: object"
    entry = entries.get(sfdc_object.lower())
    if entry is None:
        report.add(
            name,
            "fail",
            f"no object {sfdc_object} in this org (custom objects end in __c; "
            "the user may also lack access)",
        )
        return None
    if entry["name"] != sfdc_object:
        report.add(name, "fail", f"spell it {entry['name']}: CDC channel names are case-sensitive")
        return None
    if entry.get("queryable") is not True:
        report.add(name, "fail", f"{sfdc_object} is not queryable, so it cannot be backfilled")
        return None
    try:
        schema = schema_from_describe(await client.rest.describe(sfdc_object))
    except SfampError as exc:
        report.add(name, "fail", f"describe failed: {_message(exc)}")
        return None
    report.add(name, "pass", f"exists and is queryable ({len(schema.fields)} fields)")
    return schema


def check_fields(mapping: ObjectMapping, schema: ObjectSchema, report: VerifyReport) -> None:
    """The group name field and every property field of one mapping, against the describe."""
    relation = f"{mapping.sfdc_object} -> {mapping.group_type}"
    report.checks.append(
        group_name_check(
            f"{relation}: group name field {mapping.group_name_field}",
            schema,
            mapping.group_name_field,
        )
    )
    for prop in mapping.group_properties:
        name = f"{mapping.sfdc_object}.{prop.sfdc_field} -> {prop.amplitude_property}"
        report.checks.append(property_check(name, schema, prop.sfdc_field))


def group_name_check(name: str, schema: ObjectSchema, field_name: str) -> Check:
    """Id, unique, idLookup or externalId fields name one record; others may merge groups."""
    info = schema.field(field_name)
    if info is None and not schema.is_compound(field_name):
        return Check(name, "fail", f"no field {field_name} on {schema.name}")
    if info is None or schema.is_compound(field_name) or info.type in UNSUPPORTED:
        kind = "compound" if info is None else info.type
        return Check(name, "fail", f"{kind} fields cannot name a group")
    if field_name == "Id" or info.type == "id":
        return Check(name, "pass", "the record Id: one group per record")
    reasons = [
        label
        for label, flag in (
            ("unique", info.unique),
            ("external id", info.external_id),
            ("id lookup", info.id_lookup),
        )
        if flag
    ]
    if reasons:
        return Check(name, "pass", f"{' and '.join(reasons)}: one group per record")
    return Check(
        name,
        "warn",
        f"{field_name} ({info.type}) is not unique, an external id or an id lookup field: "
        "records sharing a value share one group, and the last change wins",
    )


def property_check(name: str, schema: ObjectSchema, field_name: str) -> Check:
    """Whether the field exists and sfamp can convert its type."""
    if schema.is_compound(field_name):
        parts = ", ".join(part.name for part in schema.components_of(field_name))
        return Check(name, "pass", f"compound: one property per component ({parts})")
    info = schema.field(field_name)
    if info is None:
        return Check(name, "fail", f"no field {field_name} on {schema.name}")
    if info.type in UNSUPPORTED:
        return Check(name, "fail", f"{info.type}: {UNSUPPORTED[info.type]}")
    converted = CONVERSIONS.get(info.type)
    if converted is None:
        return Check(name, "warn", f"unknown field type {info.type}: sent as it comes")
    if info.calculated:
        return Check(
            name,
            "warn",
            f"formula ({info.type}): change events never carry formula fields, "
            "so only backfills and re-syncs refresh it",
        )
    return Check(name, "pass", f"{info.type} -> {converted}")


def _check_change_entity(
    sfdc_object: str, entries: Mapping[str, Mapping[str, Any]], report: VerifyReport
) -> bool:
    entity = channel_for(sfdc_object).removeprefix("/data/")
    if entity.lower() in entries:
        return True
    report.add(
        f"{sfdc_object}: change events",
        "fail",
        f"Salesforce offers no {entity}: CDC supports custom objects and some standard ones",
    )
    return False


async def _check_streaming(
    client: SalesforceClient, channels: list[str], report: VerifyReport
) -> None:
    """Handshake, a subscribe per channel, disconnect: proves the user may stream them.

    Plain Bayeux messages rather than a CdcSubscriber, so that no long poll is
    ever held open and nothing is consumed.
    """
    probe = CometdProbe(client)
    try:
        await probe.handshake()
    except SfampError as exc:
        report.add("CDC streaming", "fail", f"CometD handshake failed: {_message(exc)}")
        return
    try:
        for channel in channels:
            error = await probe.subscribe(channel)
            if error is None:
                report.add(f"CDC {channel}", "pass", _SUBSCRIBED)
            else:
                report.add(f"CDC {channel}", "fail", f"subscribe refused: {error}")
    except SfampError as exc:
        report.add("CDC streaming", "fail", f"CometD subscribe failed: {_message(exc)}")
    finally:
        await probe.disconnect()


_SUBSCRIBED: Final = (
    "subscribed; events flow only if the object is selected in Setup > Change Data Capture"
)


class CometdProbe:
    """The few Bayeux messages verification needs, over the REST adapter's session."""

    def __init__(self, client: SalesforceClient) -> None:
        self._rest = client.rest
        self._auth = client.auth
        self._version = client.settings.api_version.lstrip("v")
        self._client_id: str | None = None
        self._next_id = 0

    async def handshake(self) -> None:
        message = {
            "channel": "/meta/handshake",
            "version": "1.0",
            "minimumVersion": "1.0",
            "supportedConnectionTypes": ["long-polling"],
            "ext": {"replay": True},
        }
        token = await self._auth.token()
        reply = await self._send(message)
        if str(reply.get("error", "")).startswith("401::"):
            await self._auth.refresh(token)  # CometD's way of saying INVALID_SESSION_ID
            reply = await self._send(message)
        if reply.get("successful") is not True or not reply.get("clientId"):
            raise SalesforceError(str(reply.get("error") or "handshake was not successful"))
        self._client_id = str(reply["clientId"])

    async def subscribe(self, channel: str) -> str | None:
        """``None`` when subscribed, else the server's error text."""
        reply = await self._send(
            {
                "channel": "/meta/subscribe",
                "subscription": channel,
                "ext": {"replay": {channel: -1}},
            }
        )
        return None if reply.get("successful") is True else str(reply.get("error") or reply)

    async def disconnect(self) -> None:
        if self._client_id is None:
            return
        with contextlib.suppress(SfampError):  # the server forgets idle clients anyway
            await self._send({"channel": "/meta/disconnect"})
        self._client_id = None

    async def _send(self, message: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        message = {**message, "id": str(self._next_id)}
        if self._client_id is not None:
            message["clientId"] = self._client_id
        token = await self._auth.token()
        url = f"{token.instance_url}/cometd/{self._version}"
        response = await self._rest.request("POST", url, json=[message])
        try:
            replies = response.json()
        except ValueError as exc:
            raise SalesforceError("CometD answered with non-JSON content") from exc
        for reply in replies if isinstance(replies, list) else []:
            if isinstance(reply, dict) and reply.get("channel") == message["channel"]:
                return reply
        raise SalesforceError(f"CometD sent no reply to {message['channel']}")


# -- Amplitude ------------------------------------------------------------------------------


async def check_amplitude(settings: AmplitudeSettings) -> Check:
    name = "Amplitude API key"
    try:
        async with AmplitudeClient(settings) as amplitude:
            key_check = await amplitude.verify_api_key()
    except SfampError as exc:  # AmplitudeAuthError for a refused key, or no key, or no answer
        detail = _message(exc)
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        # Amplitude echoes a refused key in its answer; a near-miss key is still a secret.
        return Check(name, "fail", detail.replace(key, "***") if key else detail)
    return Check(name, "pass", f"accepted by {key_check.url}")


def _message(exc: BaseException) -> str:
    cause = exc.__cause__
    if not isinstance(exc, SfampError) and isinstance(cause, SfampError):
        exc = cause  # aiosfstream wraps our own login errors
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
