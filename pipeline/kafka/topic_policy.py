"""What sfamp's topics must be configured like, and the command that fixes one that is not.

Pure functions over the configs a broker reported; :mod:`pipeline.kafka.admin`
asks the broker. Two ways a topic created outside sfamp (or before these
checks) loses data without any error:

- ``<prefix>.replay``, ``<prefix>.config`` and ``<prefix>.sent`` hold one current
  value per key and are read in full; under ``cleanup.policy=delete`` retention
  removes the stored replay ids, the published mapping and the digest of what was
  sent (the reconcile would then send every value it re-reads again).
- A changes topic buffers changes until the next flush; when its retention is
  shorter than the cadence, plus a margin for a deliver outage, changes expire
  before they are delivered. A compacted changes topic keeps only the newest
  change per record and loses the fields older updates carried.

A config the broker did not report is unknown and not judged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from pipeline.errors import Problem

RETENTION_MARGIN_SECONDS: Final = 86_400  # a day of deliver outage survives
RETENTION_SETTING: Final = "SFAMP_KAFKA__CHANGES_RETENTION_HOURS"
_HOUR_MS: Final = 3_600_000


def required_retention_ms(cadence_seconds: int) -> int:
    """The shortest retention a changes topic may have under a cadence of this period."""
    return (cadence_seconds + RETENTION_MARGIN_SECONDS) * 1000


def hours(ms: int) -> str:
    return f"{ms / _HOUR_MS:g} h"


def fix_command(bootstrap: str, topic: str, config: str) -> str:
    return (
        f"kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics "
        f"--entity-name {topic} --add-config {config}"
    )


def retention_setting_problems(retention_hours: int, cadence_seconds: int) -> list[Problem]:
    """The retention sfamp gives the changes topics it creates must outlast the cadence."""
    needed = required_retention_ms(cadence_seconds)
    if retention_hours * _HOUR_MS >= needed:
        return []
    at_least = -(-needed // _HOUR_MS)
    return [
        Problem(
            RETENTION_SETTING,
            f"{retention_hours} h is shorter than the cadence plus a day ({hours(needed)}): "
            f"set it to at least {at_least}",
        )
    ]


def compacted_topic_problems(
    topic: str, configs: Mapping[str, str], bootstrap: str
) -> list[Problem]:
    """A replay, config or sent topic must be compacted, or retention deletes what it keeps."""
    policy = configs.get("cleanup.policy")
    if policy is None or "compact" in _policies(policy):
        return []
    return [
        Problem(
            topic,
            f"cleanup.policy={policy} deletes the values sfamp keeps here; make it compacted: "
            + fix_command(bootstrap, topic, "cleanup.policy=compact"),
        )
    ]


def changes_topic_problems(
    topic: str, configs: Mapping[str, str], bootstrap: str, cadence_seconds: int
) -> list[Problem]:
    """A changes topic must keep every change (no compaction) for the cadence plus a margin."""
    problems = []
    policy = configs.get("cleanup.policy")
    if policy is not None and "compact" in _policies(policy):
        problems.append(
            Problem(
                topic,
                f"cleanup.policy={policy} keeps only the newest change per record and loses "
                "older updates' fields: " + fix_command(bootstrap, topic, "cleanup.policy=delete"),
            )
        )
    retention = _integer(configs.get("retention.ms"))
    needed = required_retention_ms(cadence_seconds)
    if retention is not None and 0 <= retention < needed:
        problems.append(
            Problem(
                topic,
                f"retention.ms={retention} ({hours(retention)}) is shorter than the cadence "
                f"plus a day ({hours(needed)}), so changes can expire before their flush: "
                + fix_command(bootstrap, topic, f"retention.ms={needed}"),
            )
        )
    return problems


def _policies(policy: str) -> set[str]:
    return {part.strip() for part in policy.split(",")}


def _integer(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None
