"""Records of ``<prefix>.sent`` (compacted): what was last sent per group and property.

- key: the JSON array ``[group_type, group_value, property]``;
- value: 16 hex digits, a 64-bit digest of the value as sent
  (:func:`pipeline.runtime.reconcile.digest.value_digest`).

Plain text both ways, so ``sfamp topics tail sent`` shows them as they are.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

DIGEST_HEX: Final = 16


def sent_key(group_type: str, group_value: str, prop: str) -> bytes:
    return orjson.dumps([group_type, group_value, prop])


def decode_sent_key(key: bytes | None) -> tuple[str, str, str] | None:
    """``(group_type, group_value, property)`` of a key; None if it is not one."""
    try:
        parts: Any = orjson.loads(key or b"")
    except orjson.JSONDecodeError:
        return None
    if isinstance(parts, list) and len(parts) == 3 and all(isinstance(p, str) for p in parts):
        return parts[0], parts[1], parts[2]
    return None


def encode_sent_digest(digest: int) -> bytes:
    return f"{digest:016x}".encode()


def decode_sent_digest(raw: bytes | None) -> int | None:
    """The digest a value holds; None for a tombstone or anything that is not 16 hex digits."""
    if raw is None or len(raw) != DIGEST_HEX:
        return None
    try:
        return int(raw, 16)
    except ValueError:
        return None
