"""The checks of online verification, as pure functions over what the org described.

:mod:`pipeline.config.verify` asks Salesforce and Amplitude; everything here
only judges the answers, so every rule is tested without a network. A check
passes, warns (the mapping works, with a caveat the user should know) or fails
(the mapping cannot work as written).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

from pipeline.config.mapping import DEFAULT_RECONCILE as DEFAULT_RECONCILE_SCHEDULE
from pipeline.config.mapping import ObjectMapping
from pipeline.errors import Problem
from pipeline.salesforce.channels import channel_for
from pipeline.transform.change_event_fields import never_in_change_events
from pipeline.transform.formulas import formula_inputs
from pipeline.transform.plan import targets_of
from pipeline.transform.schema import ObjectSchema
from pipeline.wording import nearest

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
UNREADABLE: Final = "not readable by the integration user: grant read access (field-level security)"
NEVER_CARRIED: Final = "change events never carry it"
NOT_FOLLOWABLE: Final = "reads another record, a global or the clock"
RECONCILE_OFF: Final = 'the reconcile is off, so it goes stale (set "reconcile" in the mapping)'
# How the default mapping refreshes what change events cannot (its "reconcile" key).
DEFAULT_RECONCILE: Final = DEFAULT_RECONCILE_SCHEDULE.description


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str

    def as_problem(self) -> Problem:
        return Problem(self.name, self.detail)


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


@dataclass(frozen=True, slots=True)
class DescribedObject:
    """An object's describe, plus the mapped fields that exist but the user cannot read.

    ``unreadable`` gives each such field as the mapping names it, with its API name as
    the org spells it (the case may differ); ``None`` when the org would not say which
    fields exist beyond the describe: then a missing field may be either.
    """

    schema: ObjectSchema
    unreadable: Mapping[str, str] | None = field(default_factory=dict)


def object_entries(listing: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Global describe entries by lower-case name (API names are case-insensitive)."""
    sobjects = listing.get("sobjects")
    found: dict[str, Mapping[str, Any]] = {}
    for entry in sobjects if isinstance(sobjects, list) else []:
        if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
            found[entry["name"].lower()] = entry
    return found


def object_check(sfdc_object: str, entries: Mapping[str, Mapping[str, Any]]) -> Check | None:
    """A failed check when the object is missing, misspelt in case or not queryable."""
    name = f"{sfdc_object}: object"
    entry = entries.get(sfdc_object.lower())
    if entry is None:
        names = [str(entry["name"]) for entry in entries.values()]
        close = nearest(sfdc_object, names, cutoff=0.8)
        hint = (
            f"did you mean {close}?"
            if close
            else "custom objects end in __c; the user may also lack access"
        )
        return Check(name, "fail", f"no object {sfdc_object} in this org ({hint})")
    if entry["name"] != sfdc_object:
        return Check(
            name, "fail", f"spell it {entry['name']}: CDC channel names are case-sensitive"
        )
    if entry.get("queryable") is not True:
        return Check(name, "fail", f"{sfdc_object} is not queryable, so it cannot be backfilled")
    return None


def change_entity_check(sfdc_object: str, entries: Mapping[str, Mapping[str, Any]]) -> Check | None:
    """A failed check when Salesforce offers no change event for the object."""
    entity = channel_for(sfdc_object).removeprefix("/data/")
    if entity.lower() in entries:
        return None
    return Check(
        f"{sfdc_object}: change events",
        "fail",
        f"Salesforce offers no {entity}: CDC supports custom objects and some standard ones",
    )


def field_checks(
    mapping: ObjectMapping, described: DescribedObject, *, reconcile: str = DEFAULT_RECONCILE
) -> list[Check]:
    """The group name field and every property field of one mapping, against the describe;
    ``reconcile`` is the mapping's schedule as words (``off``: none)."""
    relation = f"{mapping.sfdc_object} -> {mapping.group_type}"
    checks = [
        group_name_check(
            f"{relation}: group name field {mapping.group_name_field}",
            described,
            mapping.group_name_field,
            on_delete=mapping.on_delete,
        )
    ]
    for prop in mapping.group_properties:
        name = f"{mapping.sfdc_object}.{prop.sfdc_field} -> {prop.amplitude_property}"
        checks.append(property_check(name, described, prop.sfdc_field, reconcile=reconcile))
    return checks


def shared_property_checks(mapping: ObjectMapping, schema: ObjectSchema) -> list[Check]:
    """A failed check per property two mapped fields would write: a compound field's
    component beside that component's own field (``BillingAddress -> billing_address``
    writes ``billing_address.City``, as ``BillingCity -> billing_address.City`` does),
    which offline validation cannot see without the describe. One field, one property."""
    writers: dict[str, list[str]] = {}
    for mapped in mapping.group_properties:
        for target in targets_of(mapped.sfdc_field, mapped.amplitude_property, schema):
            writers.setdefault(target.prop, []).append(mapped.sfdc_field)
    relation = f"{mapping.sfdc_object} -> {mapping.group_type}"
    return [
        Check(
            f"{relation}: property {prop}",
            "fail",
            f"written by both {' and '.join(dict.fromkeys(fields))}: map one field to each "
            "property (the compound writes one property per component)",
        )
        for prop, fields in writers.items()
        if len(set(fields)) > 1
    ]


def missing_field(described: DescribedObject, field_name: str) -> str:
    """Why a mapped field is not in the describe: spelt in another case, hidden from the
    user, or not there."""
    schema = described.schema
    by_case = {name.lower(): name for name in (*schema.fields, *schema.components)}
    hidden = described.unreadable or {}
    spelled = by_case.get(field_name.lower(), hidden.get(field_name, field_name))
    if spelled != field_name:
        # SOQL takes any case; change events carry the API name, which the mapping must match.
        return f"spell it {spelled}: field names in change events are case-sensitive"
    if described.unreadable is not None and field_name in described.unreadable:
        return f"{field_name} is {UNREADABLE}"
    detail = f"no field {field_name} on {schema.name}"
    close = nearest(field_name, schema.fields, cutoff=0.8)
    if close:
        detail += f" (did you mean {close}?)"
    if described.unreadable is None:
        detail += f", or it is {UNREADABLE}"
    return detail


def group_name_check(
    name: str, described: DescribedObject, field_name: str, *, on_delete: str = "ignore"
) -> Check:
    """Only Id and fields the describe marks ``unique`` name one record per value. An id
    lookup field (Account.Name, Contact.Email) or an external id without the unique flag
    may repeat, so records sharing a value share one group: a warning, which says too
    what ``on_delete`` then does to the others' group."""
    schema = described.schema
    info = schema.field(field_name)
    if info is None and not schema.is_compound(field_name):
        return Check(name, "fail", missing_field(described, field_name))
    if info is None or schema.is_compound(field_name) or info.type in UNSUPPORTED:
        kind = "compound" if info is None else info.type
        return Check(name, "fail", f"{kind} fields cannot name a group")
    if field_name == "Id" or info.type == "id":
        return Check(name, "pass", "the record Id: one group per record")
    if info.unique:
        kind = "unique external id" if info.external_id else "unique"
        return Check(name, "pass", f"{kind}: one group per record")
    kinds = [
        label
        for label, flag in (
            ("an id lookup field", info.id_lookup),
            ("an external id", info.external_id),
        )
        if flag
    ]
    what = f"{' and '.join(kinds)} but not unique" if kinds else "not unique"
    deletes = {
        "mark": "; a delete of one marks the group deleted while others feed it",
        "unset": "; a delete of one unsets the properties others feed",
    }
    return Check(
        name,
        "warn",
        f"{field_name} ({info.type}) is {what}: records sharing a value share one group, "
        "and the last change wins" + deletes.get(on_delete, ""),
    )


def property_check(
    name: str, described: DescribedObject, field_name: str, *, reconcile: str = DEFAULT_RECONCILE
) -> Check:
    """Whether the field exists, can be read, and sfamp can convert its type; what keeps it
    fresh when change events cannot (the reconcile, on the ``reconcile`` schedule)."""
    schema = described.schema
    if schema.is_compound(field_name):
        parts = ", ".join(part.name for part in schema.components_of(field_name))
        return Check(name, "pass", f"compound: one property per component ({parts})")
    info = schema.field(field_name)
    if info is None:
        return Check(name, "fail", missing_field(described, field_name))
    if info.type in UNSUPPORTED:
        return Check(name, "fail", f"{info.type}: {UNSUPPORTED[info.type]}")
    converted = CONVERSIONS.get(info.type)
    if converted is None:
        return Check(name, "warn", f"unknown field type {info.type}: sent as it comes")
    if info.calculated and info.formula is not None:
        return formula_check(name, info.type, info.formula, reconcile=reconcile)
    if never_in_change_events(field_name, calculated=info.calculated):
        kind = f"formula ({info.type})" if info.calculated else f"{info.type} -> {converted}"
        if reconcile == "off":
            return Check(name, "warn", f"{kind}: {NEVER_CARRIED}; {RECONCILE_OFF}")
        refreshed = f"refreshed by the reconcile ({reconcile}), backfills and re-syncs"
        return Check(name, "warn", f"{kind}: {NEVER_CARRIED}; {refreshed}")
    return Check(name, "pass", f"{info.type} -> {converted}")


def formula_check(
    name: str, sf_type: str, formula: str, *, reconcile: str = DEFAULT_RECONCILE
) -> Check:
    """A formula whose inputs are fields of the same record is re-read when one changes;
    one that reads another record, a global or the clock only by the reconcile."""
    inputs = formula_inputs(formula)
    if inputs is None:
        only = f"formula ({sf_type}) {NOT_FOLLOWABLE}: refreshed by the reconcile only"
        if reconcile == "off":
            return Check(name, "warn", f"{only}, and {RECONCILE_OFF}")
        return Check(name, "warn", f"{only} ({reconcile})")
    if not inputs:
        return Check(name, "pass", f"formula ({sf_type}) of constants")
    return Check(
        name, "pass", f"formula ({sf_type}): re-read when {', '.join(sorted(inputs))} change"
    )
