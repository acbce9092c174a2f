"""Names of sfamp's Kafka topics, all under one configurable prefix."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TopicNames:
    """``sfamp.changes.<Object>``, ``sfamp.replay``, ``sfamp.config``, ``sfamp.dlq`` and
    ``sfamp.sent``."""

    prefix: str = "sfamp"

    def changes(self, sfdc_object: str) -> str:
        return f"{self.prefix}.changes.{sfdc_object}"

    @property
    def changes_pattern(self) -> str:
        """Regex matching every changes topic, for a pattern subscription."""
        return rf"^{re.escape(self.prefix)}\.changes\..+$"

    @property
    def replay(self) -> str:
        return f"{self.prefix}.replay"

    @property
    def config(self) -> str:
        return f"{self.prefix}.config"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def sent(self) -> str:
        """Compacted: what was last sent per group and reconciled property (a digest)."""
        return f"{self.prefix}.sent"

    @property
    def control(self) -> frozenset[str]:
        """sfamp's topics other than the changes topics: created on their first write."""
        return frozenset({self.replay, self.config, self.dlq, self.sent})

    def object_of(self, topic: str) -> str | None:
        """The Salesforce object a changes topic carries, or None for other topics."""
        head = f"{self.prefix}.changes."
        return topic[len(head) :] if topic.startswith(head) else None

    def is_ours(self, topic: str) -> bool:
        return topic.startswith(f"{self.prefix}.")
