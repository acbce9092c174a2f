"""Field and object definitions of the sandbox org, and their describe metadata.

Records are stored as tuples in the order of an object's *stored* fields. Derived fields (the
``BillingAddress`` compound, Contact ``Name``, formula fields) are computed from stored values
on read and never stored, which is also why CDC never carries formula fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Getter = Callable[[str], Any]

SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "int": "xsd:int",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
    "address": "urn:address",
}
TEXT_TYPES = frozenset(
    {"string", "picklist", "multipicklist", "email", "url", "textarea", "phone", "id", "reference"}
)
NUMBER_TYPES = frozenset({"int", "double", "currency", "percent"})
# Component suffix of an address field -> key in REST (lowercase) and in CDC (capitalised).
ADDRESS_PARTS = (
    ("Street", "street"),
    ("City", "city"),
    ("State", "state"),
    ("PostalCode", "postalCode"),
    ("Country", "country"),
)


@dataclass(frozen=True, slots=True)
class FieldDef:
    """One field of an object, with the describe flags sfamp and its tests look at."""

    name: str
    type: str
    label: str
    length: int = 0
    nillable: bool = True
    unique: bool = False
    id_lookup: bool = False
    external_id: bool = False
    createable: bool = True
    updateable: bool = True
    calculated: bool = False
    formula: str | None = None
    compound: str | None = None  # compoundFieldName of a component
    picklist: tuple[str, ...] = ()
    reference_to: tuple[str, ...] = ()
    relationship_name: str | None = None
    name_field: bool = False
    defaulted: bool = False
    precision: int = 0
    scale: int = 0
    derive: Callable[[Getter], Any] | None = None  # set for fields computed on read
    extra_type_info: str | None = None  # "personname" and friends, as describe reports

    @property
    def stored(self) -> bool:
        return self.derive is None and self.type != "address"

    @property
    def custom(self) -> bool:
        return self.name.endswith("__c")

    @property
    def required(self) -> bool:
        return not self.nillable and self.createable and not self.defaulted


@dataclass(frozen=True, slots=True)
class ObjectDef:
    """An sObject type: its fields in describe order and the slot of each stored field."""

    name: str
    label: str
    label_plural: str
    key_prefix: str
    fields: tuple[FieldDef, ...]
    by_name: dict[str, FieldDef] = field(init=False, repr=False)
    by_lower: dict[str, FieldDef] = field(init=False, repr=False)
    slots: dict[str, int] = field(init=False, repr=False)
    stored_names: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        stored = tuple(f.name for f in self.fields if f.stored)
        object.__setattr__(self, "by_name", {f.name: f for f in self.fields})
        object.__setattr__(self, "by_lower", {f.name.lower(): f for f in self.fields})
        object.__setattr__(self, "slots", {n: i for i, n in enumerate(stored)})
        object.__setattr__(self, "stored_names", stored)

    @property
    def custom(self) -> bool:
        return self.name.endswith("__c")

    def find(self, name: str) -> FieldDef | None:
        """Field names are case-insensitive in SOQL and in request bodies."""
        return self.by_lower.get(name.lower())

    def components(self, compound: str) -> tuple[FieldDef, ...]:
        return tuple(f for f in self.fields if f.compound == compound)


def cdc_component(field_def: FieldDef) -> str:
    """The key of a compound component inside its nested CDC object (``BillingCity`` ->
    ``City``; ``FirstName`` stays ``FirstName``)."""
    if field_def.compound is None or field_def.compound == "Name":
        return field_def.name
    return field_def.name[len(field_def.compound) - len("Address") :]


def text_field(name: str, label: str, length: int = 255, **kw: Any) -> FieldDef:
    return FieldDef(name, kw.pop("type", "string"), label, length=length, **kw)


def picklist_field(
    name: str, label: str, values: tuple[str, ...], *, multi: bool = False
) -> FieldDef:
    kind = "multipicklist" if multi else "picklist"
    return FieldDef(name, kind, label, length=4099 if multi else 255, picklist=values)


def number_field(name: str, label: str, kind: str, precision: int = 18, scale: int = 2) -> FieldDef:
    return FieldDef(name, kind, label, precision=precision, scale=scale)


def lookup_field(name: str, label: str, target: str, relationship: str) -> FieldDef:
    return FieldDef(
        name, "reference", label, length=18, reference_to=(target,), relationship_name=relationship
    )


def system_fields(label: str) -> tuple[FieldDef, ...]:
    def audit(name: str, text: str, kind: str = "datetime", **kw: Any) -> FieldDef:
        return FieldDef(
            name,
            kind,
            text,
            nillable=False,
            createable=False,
            updateable=False,
            defaulted=True,
            **kw,
        )

    return (
        audit("Id", f"{label} ID", "id", length=18, id_lookup=True),
        audit("IsDeleted", "Deleted", "boolean"),
        FieldDef(
            "OwnerId",
            "reference",
            "Owner ID",
            length=18,
            nillable=False,
            defaulted=True,
            reference_to=("User",),
            relationship_name="Owner",
        ),
        audit("CreatedDate", "Created Date"),
        audit("CreatedById", "Created By ID", "reference", length=18, reference_to=("User",)),
        audit("LastModifiedDate", "Last Modified Date"),
        audit(
            "LastModifiedById",
            "Last Modified By ID",
            "reference",
            length=18,
            reference_to=("User",),
        ),
        audit("SystemModstamp", "System Modstamp"),
    )


def address_fields(prefix: str) -> tuple[FieldDef, ...]:
    compound = f"{prefix}Address"
    parts = tuple(
        FieldDef(
            f"{prefix}{part}",
            "textarea" if part == "Street" else "string",
            f"{prefix} {part}",
            length=255 if part == "Street" else 40,
            compound=compound,
        )
        for part, _ in ADDRESS_PARTS
    )
    return (
        FieldDef(compound, "address", f"{prefix} Address", createable=False, updateable=False),
        *parts,
    )


def revenue_per_employee(get: Getter) -> float | None:
    revenue, employees = get("AnnualRevenue"), get("NumberOfEmployees")
    if revenue is None or not employees:
        return None
    ratio: float = round(float(revenue) / float(employees), 2)
    return ratio


def full_name(get: Getter) -> str | None:
    parts = [p for p in (get("FirstName"), get("LastName")) if p]
    return " ".join(parts) or None
