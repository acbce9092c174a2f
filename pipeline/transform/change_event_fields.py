"""Fields Salesforce change events never carry, whatever the change type.

A change event holds the record's stored fields; values Salesforce derives or
keeps as system bookkeeping are left out (the object reference: "Never included
in change events: IsDeleted, SystemModstamp, formula fields and other derived
values (e.g. LastActivityDate, PhotoUrl)"). For a mapped field in this list a
missing value in a CREATE or UNDELETE means "not sent", never "null": only
backfills and re-syncs, which read the record, can refresh it.

This is the one list: online verification warns about these fields and the
transform must not unset them.
"""

from __future__ import annotations

from typing import Final

NEVER_IN_CHANGE_EVENTS: Final[frozenset[str]] = frozenset(
    (
        "IsDeleted",
        "SystemModstamp",
        "LastActivityDate",
        "LastViewedDate",
        "LastReferencedDate",
        "PhotoUrl",
    )
)


def never_in_change_events(field_name: str, *, calculated: bool = False) -> bool:
    """Whether change events never carry this field (``calculated``: a formula field)."""
    return calculated or field_name in NEVER_IN_CHANGE_EVENTS
