"""Field-level security of the API user (the integration user every token belongs to).

Salesforce hides a field the user cannot read everywhere that user looks: describe omits it,
SOQL (REST query, queryAll, retrieve, Bulk API 2.0) answers ``INVALID_FIELD`` exactly as for
a field that does not exist, a write naming it is refused, and change events leave it out of
their body and of ``changedFields``. The control API (an administrator) still sees everything.

Address components share the security of their compound field, as in Setup: hiding
``BillingCity`` or ``BillingAddress`` hides the whole billing address.
"""

from __future__ import annotations

from sfamp_sandbox.salesforce.schema import FieldDef, ObjectDef


class FieldSecurityError(ValueError):
    """A field that does not exist or that field-level security cannot hide."""


def permissionable(field: FieldDef) -> bool:
    """Whether an administrator can change the field's security: not for the Id, audit and
    owner fields, the record's required name, nor the components of a person name."""
    if field.compound == "Name" or field.name == "Name":
        return False
    if field.calculated or field.nillable:
        return True
    return field.type == "boolean" and field.updateable


class FieldSecurity:
    """The fields hidden from the API user, per object."""

    def __init__(self) -> None:
        self._hidden: dict[str, frozenset[str]] = {}

    def hidden(self, object_name: str) -> frozenset[str]:
        return self._hidden.get(object_name, frozenset())

    def hides(self, object_name: str, field_name: str) -> bool:
        hidden = self._hidden.get(object_name)
        return hidden is not None and field_name in hidden

    def set_readable(self, obj: ObjectDef, field_name: str, readable: bool) -> None:
        """Hide a field (and the rest of its address) or make it readable again."""
        field = obj.find(field_name)
        if field is None:
            raise FieldSecurityError(f"no field {field_name!r} on {obj.name}")
        if not permissionable(field):
            raise FieldSecurityError(
                f"{obj.name}.{field.name} is always readable: field-level security does not"
                " apply to it"
            )
        group = _security_group(obj, field)
        current = self.hidden(obj.name)
        updated = current - group if readable else current | group
        if updated:
            self._hidden[obj.name] = updated
        else:
            self._hidden.pop(obj.name, None)

    def snapshot(self) -> dict[str, list[str]]:
        """Hidden fields per object, sorted, for the control API."""
        return {name: sorted(fields) for name, fields in sorted(self._hidden.items())}

    def clear(self) -> None:
        self._hidden.clear()


def _security_group(obj: ObjectDef, field: FieldDef) -> frozenset[str]:
    compound = field.name if field.type == "address" else field.compound
    if compound is None:
        return frozenset({field.name})
    return frozenset({compound, *(f.name for f in obj.components(compound))})
