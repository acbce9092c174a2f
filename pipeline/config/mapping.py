"""The mapping users export and import: which Salesforce object feeds which group type.

Concepts follow Amplitude's own Salesforce source: a *relation* (object to group
type), a *group name field* (whose value names the group) and *group properties*
(one Salesforce field to one Amplitude property).
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

# Salesforce API names: a letter, then letters, digits and single underscores, with an
# optional namespace prefix (ns__) and suffix (__c, __r, __x, ...). Double underscores
# elsewhere, a trailing underscore, spaces and dots are not allowed.
_WORD = r"[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*"
SFDC_NAME = re.compile(rf"^(?:{_WORD}__)?{_WORD}(?:__[A-Za-z]+)?$")
_HH_MM = re.compile(r"^(?:[01]\d|2[0-3]):[0-5]\d$")
MAX_NAME_LENGTH = 1024  # Amplitude truncates longer strings; refuse rather than truncate.


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


def _check_hh_mm(value: str) -> str:
    if not _HH_MM.match(value):
        raise ValueError("must be a UTC time HH:MM between 00:00 and 23:59")
    return value


class DailyCadence(_Model):
    """Flush once a day at HH:MM UTC."""

    mode: Literal["daily"]
    at: str = "00:00"

    _at = field_validator("at")(_check_hh_mm)

    @property
    def period_seconds(self) -> int:
        """The longest a change may wait in Kafka for its flush."""
        return 86_400


class HourlyCadence(_Model):
    """Flush at minute 0 of every hour."""

    mode: Literal["hourly"]

    @property
    def period_seconds(self) -> int:
        return 3_600


class IntervalCadence(_Model):
    """Flush every N seconds: near real time."""

    mode: Literal["interval"]
    # Strict: a quoted "5" or a true (which lax parsing reads as 1 s) is refused.
    every_seconds: StrictInt = Field(ge=1, le=86_400)

    @property
    def period_seconds(self) -> int:
        return self.every_seconds


SyncCadence = Annotated[DailyCadence | HourlyCadence | IntervalCadence, Field(discriminator="mode")]


class DailyReconcile(_Model):
    """Re-read what change events cannot keep fresh once a day at HH:MM UTC."""

    mode: Literal["daily"]
    at: str = "03:00"

    _at = field_validator("at")(_check_hh_mm)

    @property
    def description(self) -> str:
        return f"daily at {self.at} UTC"


class HourlyReconcile(_Model):
    """Re-read what change events cannot keep fresh every hour, at ``minute``."""

    mode: Literal["hourly"]
    minute: StrictInt = Field(0, ge=0, le=59)

    @property
    def description(self) -> str:
        return f"hourly at minute {self.minute}"


class ReconcileOff(_Model):
    """No scheduled reconcile: formulas that change events cannot follow go stale."""

    mode: Literal["off"]

    @property
    def description(self) -> str:
        return "off"


ReconcileSchedule = Annotated[
    DailyReconcile | HourlyReconcile | ReconcileOff, Field(discriminator="mode")
]
DEFAULT_RECONCILE: Final = DailyReconcile(mode="daily")


def _check_sfdc_name(value: str) -> str:
    if not SFDC_NAME.match(value):
        raise ValueError(
            f"{value!r} is not a Salesforce API name (letters, digits, single underscores, "
            "optional __c style suffix)"
        )
    return value


def _check_amplitude_name(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if value != value.strip():
        raise ValueError(f"{value!r} has leading or trailing spaces")
    if value.startswith("$"):
        raise ValueError(f"{value!r} starts with '$', which Amplitude reserves for operations")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"is longer than {MAX_NAME_LENGTH} characters")
    if any(ord(ch) < 32 for ch in value):
        raise ValueError(f"{value!r} contains control characters")
    return value


class PropertyMapping(_Model):
    """One Salesforce field imported as one Amplitude group property."""

    sfdc_field: str
    amplitude_property: str

    _sfdc = field_validator("sfdc_field")(_check_sfdc_name)
    _amp = field_validator("amplitude_property")(_check_amplitude_name)


class ObjectMapping(_Model):
    """A relation: a Salesforce object feeding an Amplitude group type."""

    sfdc_object: str
    group_type: str
    group_name_field: str
    group_properties: list[PropertyMapping] = Field(min_length=1)
    on_delete: Literal["ignore", "mark", "unset"] = "ignore"

    _object = field_validator("sfdc_object", "group_name_field")(_check_sfdc_name)
    _group = field_validator("group_type")(_check_amplitude_name)

    @property
    def fields(self) -> list[str]:
        """Every Salesforce field this mapping reads, group name field first, no repeats."""
        names = [self.group_name_field, *(p.sfdc_field for p in self.group_properties)]
        return list(dict.fromkeys(names))


class MappingConfig(_Model):
    """The whole exported config: format version, cadence, reconcile and the relations."""

    version: Literal[1] = 1
    sync_cadence: SyncCadence
    # Costs nothing for objects without formula fields or fields events never carry.
    reconcile: ReconcileSchedule = DEFAULT_RECONCILE
    mappings: list[ObjectMapping] = Field(min_length=1)

    def for_object(self, sfdc_object: str) -> list[ObjectMapping]:
        return [m for m in self.mappings if m.sfdc_object == sfdc_object]

    @property
    def objects(self) -> list[str]:
        return list(dict.fromkeys(m.sfdc_object for m in self.mappings))

    def objects_to_backfill(self, before: MappingConfig | None) -> list[str]:
        """The objects this mapping writes something ``before`` did not: a new relation,
        group name field or property, or deletes now marked or unset. Existing groups get
        it only from a backfill of them (``sfamp backfill --object``): changes carry just
        the fields they change, and only a backfill reads the recycle bin (and, under
        ``mark``, sets ``sfdc_deleted: false`` on every live group). A new cadence or
        reconcile schedule, a property dropped or ``on_delete: ignore`` needs none.
        """
        done = set() if before is None else set(before._writes())
        return list(dict.fromkeys(write[0] for write in self._writes() if write not in done))

    def _writes(self) -> list[tuple[str, str, str, str, str]]:
        """(object, group type, group name field, field, property) of every property, and
        (..., "on_delete", policy) of deletes that are marked or unset."""
        return [
            (m.sfdc_object, m.group_type, m.group_name_field, field, prop)
            for m in self.mappings
            for field, prop in [
                *((p.sfdc_field, p.amplitude_property) for p in m.group_properties),
                *([("on_delete", m.on_delete)] if m.on_delete != "ignore" else []),
            ]
        ]
