"""Which fields exist although the connected user cannot read them (field-level security).

A describe lists only the fields the user may read, so a field hidden by
field-level security looks exactly like a misspelt one. ``FieldDefinition``
lists an object's fields whatever the user's field access, which tells the two
apart: a field it knows that the describe left out is hidden from the user.
"""

from __future__ import annotations

from collections.abc import Collection

import structlog

from pipeline.errors import SalesforceRequestError
from pipeline.salesforce.rest import SalesforceRest

log = structlog.get_logger(__name__)


async def unreadable_fields(
    rest: SalesforceRest, sfdc_object: str, absent: Collection[str]
) -> dict[str, str] | None:
    """Those of ``absent`` (left out of the describe) that exist on ``sfdc_object``, each
    with its API name as the org spells it (SOQL matches names whatever their case;
    change events carry them in this case only).

    ``None`` when the org will not say (``FieldDefinition`` not queryable by this
    user): the caller cannot tell a hidden field from a missing one. Names are
    API names validated by the mapping model, so they are safe to quote here.
    """
    if not absent:
        return {}
    names = ", ".join(f"'{name}'" for name in sorted(absent))
    where = f"EntityDefinition.QualifiedApiName = '{sfdc_object}' AND QualifiedApiName IN ({names})"
    soql = f"SELECT QualifiedApiName FROM FieldDefinition WHERE {where}"  # noqa: S608
    try:
        rows = [row async for row in rest.query(soql)]
    except SalesforceRequestError as exc:
        log.debug("field_definitions_unavailable", object=sfdc_object, reason=str(exc))
        return None
    known = {str(row.get("QualifiedApiName", "")).lower(): row for row in rows}
    return {
        name: str(known[name.lower()]["QualifiedApiName"])
        for name in absent
        if name.lower() in known
    }
