"""What the org offers the Mapping setup form: queryable objects and their fields.

The choices come from the org's describe (global, then per object), kept for a
few minutes so that every change of the form does not ask Salesforce again. The
ordering rules are pure functions (:func:`object_options`, :func:`field_options`);
:class:`OrgCatalog` only fetches and caches. Without credentials, or when the org
does not answer, the catalog says why and the form falls back to text inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pipeline.config.checks import UNSUPPORTED
from pipeline.config.settings import SalesforceSettings
from pipeline.errors import SfampError
from pipeline.salesforce.channels import channel_for
from pipeline.salesforce.client import SalesforceClient
from pipeline.transform.schema import COMPOUND_TYPES

CACHE_SECONDS: Final = 300.0
RETRY_SECONDS: Final = 10.0
NOT_NAMING: Final = "not unique: records sharing a value share one group"


@dataclass(frozen=True, slots=True)
class ObjectOption:
    name: str
    label: str
    change_events: bool

    @property
    def text(self) -> str:
        events = ", change events" if self.change_events else ", no change events"
        return f"{self.name} ({self.label}{events})"


@dataclass(frozen=True, slots=True)
class FieldOption:
    name: str
    label: str
    type: str
    names_group: bool  # Id or unique: one group per record
    can_name_group: bool  # not compound, not binary
    can_be_property: bool

    @property
    def text(self) -> str:
        return f"{self.name} ({self.label}, {self.type})"

    @property
    def group_name_text(self) -> str:
        return self.text if self.names_group else f"{self.text}: {NOT_NAMING}"


def object_options(listing: Mapping[str, Any]) -> list[ObjectOption]:
    """Queryable objects of a global describe, by name, each marked with its change events."""
    entries = [e for e in listing.get("sobjects") or () if isinstance(e, Mapping)]
    names = {str(e.get("name", "")).lower() for e in entries}
    options = [
        ObjectOption(
            name=str(e["name"]),
            label=str(e.get("label") or e["name"]),
            change_events=channel_for(str(e["name"])).removeprefix("/data/").lower() in names,
        )
        for e in entries
        if isinstance(e.get("name"), str) and e.get("queryable") is True
    ]
    return sorted(options, key=lambda o: o.name.lower())


def field_options(describe: Mapping[str, Any]) -> list[FieldOption]:
    """An object's fields: Id first, then those naming one record, then the rest, by name.

    Only Id and fields the describe marks ``unique`` name one record. External ids and
    id lookup fields need not be unique (an external id is unique only when the
    describe says so; Account.Name and Contact.Email are id lookups that repeat in
    real orgs): records sharing a value would share one group, so they go with the
    rest, with that hint.
    """
    options = []
    for entry in describe.get("fields") or ():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            continue
        kind = str(entry.get("type", ""))
        naming = kind == "id" or entry.get("unique") is True
        options.append(
            FieldOption(
                name=entry["name"],
                label=str(entry.get("label") or entry["name"]),
                type=kind,
                names_group=naming,
                can_name_group=kind not in COMPOUND_TYPES and kind not in UNSUPPORTED,
                can_be_property=kind not in UNSUPPORTED,
            )
        )
    return sorted(options, key=lambda o: (o.name != "Id", not o.names_group, o.name.lower()))


@dataclass(slots=True)
class _Cached:
    value: Any
    until: float


class OrgCatalog:
    """Describes from the org, cached; ``problem`` says why the last attempt gave nothing."""

    def __init__(
        self, settings: SalesforceSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.problem: str | None = None
        self._clock = clock
        self._client: SalesforceClient | None = None
        self._cache: dict[str, _Cached] = {}

    @property
    def configured(self) -> bool:
        return not self.settings.credential_problems()

    async def objects(self, *, fetch: bool = True) -> list[ObjectOption] | None:
        """The org's queryable objects; ``fetch=False``: only as last read (None if never),
        without asking the org."""
        listing = await self._describe("", fetch=fetch)
        return None if listing is None else object_options(listing)

    async def fields(self, sfdc_object: str, *, fetch: bool = True) -> list[FieldOption] | None:
        if not sfdc_object:
            return None
        described = await self._describe(sfdc_object, fetch=fetch)
        return None if described is None else field_options(described)

    async def _describe(self, sfdc_object: str, *, fetch: bool = True) -> Mapping[str, Any] | None:
        if not self.configured:
            self.problem = "no Salesforce credentials are set"
            return None
        cached = self._cache.get(sfdc_object)
        if not fetch:
            return None if cached is None else cached.value
        if cached is not None and cached.until > self._clock():
            return cached.value  # type: ignore[no-any-return]
        try:
            value = await self._fetch(sfdc_object)
        except SfampError as exc:
            self.problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            value = None
        until = self._clock() + (CACHE_SECONDS if value is not None else RETRY_SECONDS)
        self._cache[sfdc_object] = _Cached(value, until)
        return value

    async def _fetch(self, sfdc_object: str) -> Mapping[str, Any]:
        if self._client is None:
            self._client = SalesforceClient.from_settings(self.settings, max_attempts=1)
        rest = self._client.rest
        return await (rest.describe(sfdc_object) if sfdc_object else rest.describe_global())

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
