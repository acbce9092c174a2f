"""What the transform needs to know about an object's fields, built from a REST describe.

Two things depend on it: value conversion (the Salesforce ``type`` of a field)
and compound fields. CDC nests a compound field's components under the parent
with short component names (``BillingAddress: {"City": ...}``, Contact
``Name: {"FirstName": ...}``), REST nests them with lower-case names
(``BillingAddress: {"city": ...}``), and Bulk CSV has only the flat component
fields (``BillingCity``). The schema ties the three together.

Only address and geolocation fields split into one property per component. A
person name (Contact, Lead, person-account ``Name``) is a text field of its own:
REST and Bulk return it composed (``"Ada Lovelace"``), and a change event's nested
``Name: {"FirstName": ...}`` is composed the same way (:func:`compose_person_name`).

Without a schema the transform still works: component names follow Salesforce's
naming rule (:func:`component_field_name`) and values are kept as they come.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pipeline.errors import SalesforceError
from pipeline.transform.change_event_fields import never_in_change_events

COMPOUND_TYPES: Final[frozenset[str]] = frozenset(("address", "location"))
# A person name composes these components, in this order (Salutation is not part of it).
PERSON_NAME_PARTS: Final = ("FirstName", "MiddleName", "LastName", "Suffix")
# The components of an address field (``BillingCity`` of ``BillingAddress``).
ADDRESS_PARTS: Final = (
    "Street", "City", "State", "StateCode", "PostalCode", "Country", "CountryCode",
    "Latitude", "Longitude", "GeocodeAccuracy",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """One field of a describe, reduced to what the transform and verification use."""

    name: str
    type: str
    compound_parent: str | None = None
    calculated: bool = False
    formula: str | None = None  # a formula field's calculatedFormula
    unique: bool = False
    id_lookup: bool = False
    external_id: bool = False

    @property
    def component(self) -> str | None:
        """The CDC component name (``BillingCity`` -> ``City``), for a compound component."""
        if self.compound_parent is None:
            return None
        return component_key(self.compound_parent, self.name)

    @property
    def in_change_events(self) -> bool:
        """False for fields change events never carry (system stamps, formulas)."""
        return not never_in_change_events(self.name, calculated=self.calculated)


@dataclass(frozen=True, slots=True)
class ObjectSchema:
    """The fields of one object, with compound components indexed both ways.

    ``components`` holds the compounds that split into one property per component
    (addresses, geolocations); ``person_names`` the composed ones (``Name``).
    """

    name: str
    fields: Mapping[str, FieldInfo]
    components: Mapping[str, tuple[FieldInfo, ...]] = field(default_factory=dict)
    by_component: Mapping[tuple[str, str], str] = field(default_factory=dict)
    person_names: frozenset[str] = frozenset()

    def field(self, name: str) -> FieldInfo | None:
        return self.fields.get(name)

    def type_of(self, name: str) -> str | None:
        info = self.fields.get(name)
        return None if info is None else info.type

    def is_compound(self, name: str) -> bool:
        """True for a compound that splits into components (an address, a geolocation)."""
        return name in self.components

    def omits(self, name: str) -> bool:
        """True when the describe leaves ``name`` out: a field the user may not read
        (field-level security), or one that does not exist."""
        return name not in self.fields and name not in self.components

    def is_person_name(self, name: str) -> bool:
        """True for a composed name (``Name`` of a Contact or person account)."""
        return name in self.person_names

    def components_of(self, parent: str) -> tuple[FieldInfo, ...]:
        return self.components.get(parent, ())

    def component_field(self, parent: str, component: str) -> str:
        """The flat field name of ``parent.component`` (``BillingAddress``, ``City``)."""
        known = self.by_component.get((parent, component.lower()))
        return known if known is not None else component_field_name(parent, component)


def schema_from_describe(describe: Mapping[str, Any]) -> ObjectSchema:
    """Build the schema from ``GET /sobjects/{Object}/describe`` JSON.

    A describe answer of the wrong shape raises :class:`SalesforceError`.
    """
    name = describe.get("name")
    raw_fields = describe.get("fields")
    if not isinstance(name, str) or not isinstance(raw_fields, list):
        raise SalesforceError("describe answer has no object 'name' and 'fields' list")
    infos = [_field_info(raw) for raw in raw_fields]
    fields = {info.name: info for info in infos}
    components: dict[str, list[FieldInfo]] = {}
    for info in infos:
        if info.compound_parent is not None:
            components.setdefault(info.compound_parent, []).append(info)
    by_component = {
        (parent, component_key(parent, info.name).lower()): info.name
        for parent, members in components.items()
        for info in members
    }
    names = frozenset(parent for parent in components if _composed(fields.get(parent)))
    return ObjectSchema(
        name=name,
        fields=fields,
        components={
            parent: tuple(members) for parent, members in components.items() if parent not in names
        },
        by_component=by_component,
        person_names=names,
    )


def _composed(parent: FieldInfo | None) -> bool:
    """A compound whose parent is a text field of its own (a person name), not a split one."""
    return parent is not None and parent.type not in COMPOUND_TYPES


def unreadable_fields(schema: ObjectSchema, names: Iterable[str]) -> list[str]:
    """The names a read cannot select: the describe omits them.

    Describe leaves out a field the user may not read (field-level security) as
    well as one that does not exist; either way a read without it must not pass
    for a read of the whole record.
    """
    return [name for name in dict.fromkeys(names) if schema.omits(name)]


def compose_person_name(parts: Mapping[str, Any]) -> str | None:
    """A person ``Name`` from its components, as Salesforce composes it for REST and Bulk.

    ``{"Salutation": "Dr.", "FirstName": "Ada", "LastName": "Lovelace"}`` ->
    ``"Ada Lovelace"``; ``None`` when no component has a value.
    """
    words = [str(parts[key]) for key in PERSON_NAME_PARTS if parts.get(key)]
    return " ".join(words) or None


def _field_info(raw: Any) -> FieldInfo:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        raise SalesforceError(f"describe field without a name: {raw!r:.200}")
    parent = raw.get("compoundFieldName")
    return FieldInfo(
        name=raw["name"],
        type=str(raw.get("type") or "string"),
        compound_parent=parent if isinstance(parent, str) and parent else None,
        calculated=raw.get("calculated") is True,
        formula=formula if isinstance(formula := raw.get("calculatedFormula"), str) else None,
        unique=raw.get("unique") is True,
        id_lookup=raw.get("idLookup") is True,
        external_id=raw.get("externalId") is True,
    )


def _prefix_of(parent: str) -> tuple[str, str]:
    """The prefix and suffix that turn a component name into a field name.

    ``BillingAddress`` -> ``Billing`` + City; ``Loc__c`` -> ``Loc__`` + Latitude +
    ``__s``; a person ``Name`` (and User's ``Address``) -> the bare component.
    """
    if parent.endswith("__c"):
        return parent[:-1], "__s"
    if parent.endswith("Address"):
        return parent[: -len("Address")], ""
    return "", ""


def component_key(parent: str, field_name: str) -> str:
    """The CDC component name of a flat component field; inverse of :func:`component_field_name`.

    ``BillingAddress``, ``BillingCity`` -> ``City``;
    ``Loc__c``, ``Loc__Latitude__s`` -> ``Latitude``.
    """
    prefix, suffix = _prefix_of(parent)
    key = field_name[len(prefix) :] if field_name.startswith(prefix) else field_name
    if suffix and key.endswith(suffix):
        key = key[: -len(suffix)]
    return key


def component_field_name(parent: str, component: str) -> str:
    """``(BillingAddress, City)`` -> ``BillingCity``; REST's lower-case ``city`` works too."""
    prefix, suffix = _prefix_of(parent)
    return f"{prefix}{normalise_component(component)}{suffix}"


def normalise_component(component: str) -> str:
    """CDC spells components ``PostalCode``, REST ``postalCode``; properties use CDC's form."""
    return component[:1].upper() + component[1:]


def compound_candidates(field_name: str) -> tuple[tuple[str, str], ...]:
    """The (compound field, component key) pairs ``field_name`` may be a component of, by
    Salesforce's naming alone, for when no describe says (change events nest components
    under their compound field: ``BillingAddress: {"City": ...}``).

    ``BillingCity`` -> (BillingAddress, City); ``Addr__City__s`` -> (Addr__c, City);
    ``Loc__Latitude__s`` -> (Loc__c, Latitude); ``FirstName`` -> (Name, FirstName).
    """
    pairs: list[tuple[str, str]] = []
    if field_name.endswith("__s"):
        stem, _, part = field_name[:-3].rpartition("__")
        if stem:
            pairs.append((stem + "__c", part))
    else:
        pairs += [
            (field_name[: -len(part)] + "Address", part)
            for part in ADDRESS_PARTS
            if field_name.endswith(part)
        ]
    if field_name in (*PERSON_NAME_PARTS, "Salutation"):
        pairs.append(("Name", field_name))
    return tuple(dict.fromkeys(pairs))


def component_keys_by_name(field_name: str) -> tuple[str, ...]:
    """The component keys a field named ``field_name`` would have if it were compound, by
    naming alone: an address's (``…Address``), a geolocation's or a custom address's
    (``…__c``); none for other names."""
    # ADDRESS_PARTS holds a geolocation's Latitude and Longitude too.
    return ADDRESS_PARTS if field_name.endswith(("Address", "__c")) else ()
