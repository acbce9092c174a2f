"""Person accounts: Account records that are a person rather than a business.

A person account has ``IsPersonAccount`` true (set when it is created, never changed), a
``Salutation``, ``FirstName`` and ``LastName`` (required), and a ``Name`` that Salesforce
composes from the first and last name (the salutation is not part of it). REST, SOQL and Bulk
API 2.0 give ``Name`` as that string; change events carry the compound instead, nested as
``"Name": {"Salutation": "Ms.", "FirstName": "Ada", "LastName": "Lovelace"}`` with
``Name.LastName`` in ``changedFields``. Business accounts have a plain ``Name`` and no person
name fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sfamp_sandbox.salesforce.api_error import not_writable
from sfamp_sandbox.salesforce.schema import ObjectDef

PERSON_NAME_FIELDS = frozenset({"Salutation", "FirstName", "LastName"})


def is_person(obj: ObjectDef, record: Sequence[Any]) -> bool:
    slot = obj.slots.get("IsPersonAccount")
    return slot is not None and bool(record[slot])


def person_name(first: str | None, last: str | None) -> str | None:
    """``Name`` of a person: first and last name, as Salesforce concatenates them."""
    return " ".join(part for part in (first, last) if part) or None


def check_writes(obj: ObjectDef, names: Iterable[str], person: bool) -> None:
    """Refuse ``Name`` on a person account and person name fields on a business account."""
    if "IsPersonAccount" not in obj.slots:
        return
    for name in names:
        if (name == "Name") if person else (name in PERSON_NAME_FIELDS):
            raise not_writable(name)


def compose_name(obj: ObjectDef, row: list[Any]) -> None:
    """Keep a person account's stored ``Name`` in step with its first and last name."""
    if is_person(obj, row):
        slots = obj.slots
        row[slots["Name"]] = person_name(row[slots["FirstName"]], row[slots["LastName"]])


def missing_fields(obj: ObjectDef, row: Sequence[Any]) -> list[str]:
    """Required fields left null by a create: ``LastName`` for a person account, else the
    object's required fields."""
    slots = obj.slots
    if is_person(obj, row):
        return [] if row[slots["LastName"]] is not None else ["LastName"]
    return [f.name for f in obj.fields if f.required and row[slots[f.name]] is None]
