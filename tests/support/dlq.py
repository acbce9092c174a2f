"""Dead letters as deliver writes them, for tests that need some in ``sfamp.dlq``."""

from __future__ import annotations

import time
from typing import Any

from pipeline.kafka.records import DlqEntry


def rejected(group_value: str, properties: dict[str, Any] | None = None) -> DlqEntry:
    """Amplitude's refusal of one ``account`` group, stamped now; ``properties`` are the
    ``$set`` it carried (the stale payload a replay must not send)."""
    now = int(time.time() * 1000)
    operations = {"$set": properties} if properties else {}
    return DlqEntry(
        id=f"rejected:account:{group_value}:{now}",
        reason="rejected",
        detail="Amplitude answered 400: invalid_identification",
        at_ms=now,
        key=f"account:{group_value}",
        payload={
            "group_type": "account",
            "group_value": group_value,
            "group_properties": operations,
        },
    )
