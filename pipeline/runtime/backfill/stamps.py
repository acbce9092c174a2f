"""Salesforce's ``SystemModstamp`` as a snapshot's catch-up reads it: parsed, compared as
text to the millisecond, and written as the SOQL literal of a window's start."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from pipeline.runtime.backfill.meaning import MODSTAMP, STAMP_CHARS

# Stamps are taken when a write happens but become visible at commit, so a long
# transaction (a Bulk API ingest batch, heavy Apex) lands "in the past". ETL tools
# look back several minutes for the same reason.
MARGIN_SECONDS: Final = 300


def parse_stamp(stamp: object) -> datetime | None:
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp)
    except ValueError:
        return None


def soql_since(moment: datetime, margin_seconds: float = MARGIN_SECONDS) -> str:
    """The SOQL datetime literal ``margin_seconds`` before ``moment``, in whole seconds."""
    return (moment - timedelta(seconds=margin_seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def all_before(stamps: Iterable[Any], floor: str) -> bool:
    """Whether every text among ``stamps`` (None and "" are none) sorts before ``floor``."""
    try:
        return bool(max(filter(None, stamps), default="") < floor)  # (compared in C)
    except TypeError:  # a value that is not text: the caller looks at each
        return False


def newest(moment: datetime | None, records: Iterable[Mapping[str, Any]]) -> datetime | None:
    """The later of ``moment`` and the newest ``SystemModstamp`` among ``records``.

    Stamps are UTC in either spelling (``Z``, ``+0000``), so the latest is found by
    comparing their text to the millisecond and only that one is parsed.
    """
    stamps = (r.get(MODSTAMP) for r in records)
    texts = [stamp for stamp in stamps if isinstance(stamp, str)]
    latest = max(texts, key=lambda text: text[:STAMP_CHARS], default=None)
    stamp = parse_stamp(latest)
    if stamp is None and latest is not None:  # not a stamp: look at each one
        parsed = [found for text in texts if (found := parse_stamp(text)) is not None]
        stamp = max(parsed, default=None)
    if stamp is not None and (moment is None or stamp > moment):
        return stamp
    return moment
