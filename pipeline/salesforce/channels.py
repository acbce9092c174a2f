"""Change Data Capture channel names and the replay ids that are not an event's.

Apart from :mod:`pipeline.salesforce.cdc` so that naming a channel loads no CometD
client: a backfill records where the stream starts without streaming.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

# The replay ids a CometD subscribe takes for "only events published from now on" and
# "every event still retained (72 hours)" (Streaming API Developer Guide, "Message
# Durability"; the subscribe error's own text: "-2 to replay all events, or -1 to
# replay only new events").
LATEST: Final = -1
EARLIEST: Final = -2


def channel_for(sfdc_object: str) -> str:
    """Account -> /data/AccountChangeEvent; a custom Plan__c -> /data/Plan__ChangeEvent."""
    if sfdc_object.endswith("__c"):
        return f"/data/{sfdc_object[:-1]}ChangeEvent"
    return f"/data/{sfdc_object}ChangeEvent"


def channels_for(objects: Iterable[str], custom: str | None = None) -> list[str]:
    """The channels that carry ``objects``' change events: ``custom`` alone when set
    (``SFAMP_SALESFORCE__CDC_CHANNEL``), else one per object."""
    return [custom] if custom else list(dict.fromkeys(map(channel_for, objects)))
