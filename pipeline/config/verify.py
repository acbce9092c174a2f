"""Online verification of a mapping against the org and Amplitude.

Offline validation proves a mapping is well formed; this proves it can work
with *this* org and *this* Amplitude project: the user can log in, each object
exists and is queryable, each field exists, is readable and has a type sfamp
converts, the group name field identifies one record, CDC can be subscribed to,
and Amplitude accepts the API key.

Two entry points share the object and field checks:

- :func:`verify_mapping` (``sfamp config verify``): every problem becomes a
  failed or warned check; nothing about the org or the network raises, so the
  user sees all of them at once.
- :func:`check_mapping_against_org` (``sfamp run`` at start and on every
  mapping reload, ``sfamp backfill``): raises :class:`MappingError` listing the
  failed checks, with the same messages, and returns the warnings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from pipeline.amplitude import AmplitudeClient
from pipeline.config.checks import (
    Check,
    DescribedObject,
    VerifyReport,
    change_entity_check,
    field_checks,
    object_check,
    object_entries,
    shared_property_checks,
)
from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import AmplitudeSettings, SalesforceSettings, Settings
from pipeline.config.validation import check_group_types
from pipeline.errors import (
    AmplitudeUnavailableError,
    MappingError,
    Problem,
    SalesforceError,
    SfampError,
)
from pipeline.salesforce.channels import channel_for
from pipeline.salesforce.client import SalesforceClient
from pipeline.salesforce.fields import unreadable_fields
from pipeline.salesforce.rest import Sleep
from pipeline.transform.schema import schema_from_describe
from pipeline.wording import plural

if TYPE_CHECKING:
    from pipeline.salesforce.cdc import CdcSubscriber

_SUBSCRIBED: Final = (
    "subscribed; events flow only if the object is selected in Setup > Change Data Capture"
)


async def verify_mapping(
    settings: Settings, mapping: MappingConfig, *, sleep: Sleep = asyncio.sleep
) -> VerifyReport:
    """Run every online check; org and network problems become failed checks, never raise."""
    report = VerifyReport()
    await _verify_salesforce(settings.salesforce, mapping, report, sleep)
    report.checks.append(await check_amplitude(settings.amplitude))
    if settings.amplitude.secret_key is not None:
        report.checks.append(await check_amplitude_secret(settings.amplitude))
    return report


async def check_mapping_against_org(
    settings: Settings,
    mapping: MappingConfig,
    *,
    salesforce: SalesforceClient | None = None,
    change_events: bool = False,
) -> list[Problem]:
    """Refuse a mapping the org or the Amplitude project cannot serve as written.

    Checks Amplitude's group-type limit, then every mapped object and field
    against the org's describe (through ``salesforce``, or a client of its own).
    Raises :class:`MappingError` listing every failed check, in the words of
    ``sfamp config verify``; returns the warnings. ``change_events`` also requires
    a change event for every object (what ``sfamp run`` subscribes to). Salesforce
    errors (unreachable, refused login) propagate as they are.
    """
    check_group_types(mapping, settings.amplitude.max_group_types)
    if salesforce is None:
        async with SalesforceClient.from_settings(settings.salesforce) as client:
            return await check_mapping_against_org(
                settings, mapping, salesforce=client, change_events=change_events
            )
    checks = await org_checks(salesforce, mapping, change_events=change_events)
    failed = [check.as_problem() for check in checks if check.status == "fail"]
    if failed:
        raise MappingError(
            f"the mapping does not match the Salesforce org: {plural(len(failed), 'problem')}",
            failed,
        )
    return [check.as_problem() for check in checks if check.status == "warn"]


async def org_checks(
    client: SalesforceClient, mapping: MappingConfig, *, change_events: bool
) -> list[Check]:
    """Object and field checks of every mapped object; Salesforce errors propagate."""
    entries = object_entries(await client.rest.describe_global())
    checks: list[Check] = []
    for sfdc_object in mapping.objects:
        checks += await _object_checks(client, mapping, sfdc_object, entries, change_events)
    return checks


async def _object_checks(
    client: SalesforceClient,
    mapping: MappingConfig,
    sfdc_object: str,
    entries: Mapping[str, Mapping[str, Any]],
    change_events: bool,
) -> list[Check]:
    refused = object_check(sfdc_object, entries)
    if refused is not None:
        return [refused]
    described = await _describe(client, mapping, sfdc_object)
    if isinstance(described, Check):
        return [described]
    count = len(described.schema.fields)
    checks = [
        Check(
            f"{sfdc_object}: object", "pass", f"exists and is queryable ({plural(count, 'field')})"
        )
    ]
    for object_mapping in mapping.for_object(sfdc_object):
        checks += field_checks(object_mapping, described, reconcile=mapping.reconcile.description)
        checks += shared_property_checks(object_mapping, described.schema)
    no_events = change_entity_check(sfdc_object, entries) if change_events else None
    return checks if no_events is None else [*checks, no_events]


async def _describe(
    client: SalesforceClient, mapping: MappingConfig, sfdc_object: str
) -> DescribedObject | Check:
    try:
        schema = schema_from_describe(await client.rest.describe(sfdc_object))
    except SalesforceError as exc:
        if exc.retriable:
            raise
        return Check(f"{sfdc_object}: object", "fail", f"describe failed: {message_of(exc)}")
    mapped = {f for m in mapping.for_object(sfdc_object) for f in m.fields}
    absent = mapped - set(schema.fields) - set(schema.components)
    unreadable = await unreadable_fields(client.rest, sfdc_object, absent)
    return DescribedObject(schema, unreadable)


# -- Salesforce -----------------------------------------------------------------------------


async def _verify_salesforce(
    settings: SalesforceSettings, mapping: MappingConfig, report: VerifyReport, sleep: Sleep
) -> None:
    async with SalesforceClient.from_settings(settings, sleep=sleep) as client:
        if not await _check_login(client, report):
            return
        try:
            checks = await org_checks(client, mapping, change_events=True)
        except SfampError as exc:
            report.add("Salesforce objects", "fail", message_of(exc))
            return
        report.checks += checks
        channels = _streamable_channels(mapping, checks)
        if settings.cdc_channel:
            channels = [settings.cdc_channel]
        if channels:
            await _check_streaming(client, channels, report)


def _streamable_channels(mapping: MappingConfig, checks: list[Check]) -> list[str]:
    """The channels of the objects that exist and offer change events."""
    status = {check.name: check.status for check in checks}
    return [
        channel_for(obj)
        for obj in mapping.objects
        if status.get(f"{obj}: object") == "pass" and f"{obj}: change events" not in status
    ]


async def _check_login(client: SalesforceClient, report: VerifyReport) -> bool:
    try:
        info = await client.rest.userinfo()  # logs in, with the REST retries
        token = await client.auth.token()
    except SfampError as exc:
        report.add("Salesforce login", "fail", message_of(exc))
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


async def _check_streaming(
    client: SalesforceClient, channels: list[str], report: VerifyReport
) -> None:
    """Open the product's own CometD client, subscribe to each channel, close it.

    The subscriptions start at the newest event and nothing is stored, so the
    check consumes nothing the service would miss.
    """
    # Imported here: the CometD client (aiosfstream, aiohttp) loads only for this check,
    # not for every command that checks a mapping against the org (`sfamp backfill`).
    from pipeline.salesforce.cdc import CdcSubscriber, DurableReplayStorage

    subscriber = CdcSubscriber(
        client.auth.streaming_authenticator(),
        [],
        DurableReplayStorage({}),
        api_version=client.settings.api_version,
        connection_timeout=client.settings.timeout_seconds,
    )
    try:
        async with subscriber:
            for channel in channels:
                report.checks.append(await _subscribe_check(subscriber, channel))
    except SfampError as exc:
        report.add("CDC streaming", "fail", f"CometD connection failed: {message_of(exc)}")


async def _subscribe_check(subscriber: CdcSubscriber, channel: str) -> Check:
    try:
        await subscriber.subscribe(channel)
    except SalesforceError as exc:
        if exc.retriable:
            raise
        return Check(f"CDC {channel}", "fail", f"subscribe refused: {message_of(exc)}")
    return Check(f"CDC {channel}", "pass", _SUBSCRIBED)


# -- Amplitude ------------------------------------------------------------------------------


async def check_amplitude(settings: AmplitudeSettings) -> Check:
    """Whether Amplitude accepts the API key: a failure when it refuses it (or none is
    set), a warning when it could not say (no answer, 429 or 5xx): an outage must not
    hold back an import or a Save, and ``sfamp run`` checks the key again at start."""
    name = "Amplitude API key"
    try:
        async with AmplitudeClient(settings) as amplitude:
            key_check = await amplitude.verify_api_key()
    except AmplitudeUnavailableError as exc:
        return Check(name, "warn", f"not checked: {message_of(exc)}")
    except SfampError as exc:  # AmplitudeAuthError for a refused key, or no key
        detail = message_of(exc)
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        # Amplitude echoes a refused key in its answer; a near-miss key is still a secret.
        return Check(name, "fail", detail.replace(key, "***") if key else detail)
    return Check(name, "pass", f"accepted by {key_check.url}")


async def check_amplitude_secret(settings: AmplitudeSettings) -> Check:
    """The API key and secret key as a pair (only asked when a secret key is set).

    A warning, never a failure: sfamp sends nothing with the secret key, so a wrong one
    (or a Dashboard REST host out of reach) must not hold back an import or a Save.
    """
    name = "Amplitude secret key"
    assert settings.secret_key is not None
    try:
        async with AmplitudeClient(settings) as amplitude:
            pair = await amplitude.verify_key_pair(settings.secret_key.get_secret_value())
    except SfampError as exc:
        return Check(name, "warn", message_of(exc))
    return Check(name, "pass", f"key pair accepted by {pair.url}")


def message_of(exc: BaseException) -> str:
    """One line for a check's detail; a settings or mapping error keeps its problems."""
    cause = exc.__cause__
    if not isinstance(exc, SfampError) and isinstance(cause, SfampError):
        exc = cause  # aiosfstream wraps our own login errors
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    problems: Any = getattr(exc, "problems", ())
    if problems:
        return f"{first.rstrip(':')}: " + "; ".join(str(p) for p in problems)
    return first


__all__ = [
    "Check",
    "VerifyReport",
    "check_amplitude",
    "check_amplitude_secret",
    "check_mapping_against_org",
    "org_checks",
    "verify_mapping",
]
