"""The Group Identify payload: what Amplitude receives for one group update.

Shape (Amplitude's Group Identify API, ``shared/reference/amplitude-api.md``)::

    {"group_type": "account", "group_value": "001…",
     "group_properties": {"$set": {...}, "$unset": {"name": "-"}}}

The HTTP V2 transport wraps the same object in a ``$groupidentify`` event.
"""

from __future__ import annotations

from typing import Any

from pipeline.transform.group_update import GroupUpdate


def to_identification(update: GroupUpdate) -> dict[str, Any]:
    """The JSON object Amplitude's Group Identify API expects for ``update``."""
    return {
        "group_type": update.group_type,
        "group_value": update.group_value,
        "group_properties": group_properties(update),
    }


def group_properties(update: GroupUpdate, *, shared: bool = False) -> dict[str, Any]:
    """``{"$set": {...}, "$unset": {name: "-"}}`` of ``update``, each only when it has keys.

    The ``$set`` object is a copy, as the answer may be kept (a summary's sample, a
    dead letter); ``shared``: ``update.set`` itself when it is a dict, for an answer
    serialised at once and dropped (an event's JSON: one copy fewer per record).
    """
    operations: dict[str, Any] = {}
    if update.set:
        values = update.set
        operations["$set"] = values if shared and type(values) is dict else dict(values)
    if update.unset:
        operations["$unset"] = dict.fromkeys(sorted(update.unset), "-")
    return operations
