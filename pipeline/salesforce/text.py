"""Text from Salesforce that is not valid Unicode, made valid the same way on every read path.

Salesforce keeps text as UTF-16, and its string functions count a character beyond
the Basic Multilingual Plane (an emoji, some CJK) as two, so a formula or Apex
``LEFT``/``MID`` can cut one in half and store one unpaired surrogate ("Surrogate
Pair Characters Are Treated as Two Characters", Salesforce Help article 005166849).
JSON carries it as an escape (``"\\ud83d"``), which orjson refuses along with the
whole message, and CSV as the three bytes of CESU-8, which are not UTF-8. Neither
could reach Amplitude as it is: a JSON encoder writes no unpaired surrogate.

:func:`read_json` and :data:`UNDECODABLE` (a codec error handler) turn each unpaired
surrogate, and each byte that is not UTF-8, into U+FFFD, the replacement character,
whether it came by CometD, REST or Bulk CSV, so every path gives the same value; the
rest of the message is read as it is.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any, Final

import orjson
import structlog

log = structlog.get_logger(__name__)

REPLACEMENT: Final = "\ufffd"
UNDECODABLE: Final = "sfamp-salesforce-text"  # a codec error handler: decode(..., UNDECODABLE)
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _replace_undecodable(error: UnicodeError) -> tuple[str, int]:
    """One U+FFFD for a surrogate in CESU-8 (three bytes), as for its JSON escape; one
    for each other run of bytes that is not UTF-8, as Python's ``replace`` gives."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    data, start = error.object, error.start
    if (
        len(data) >= start + 3
        and data[start] == 0xED
        and 0xA0 <= data[start + 1] <= 0xBF
        and 0x80 <= data[start + 2] <= 0xBF
    ):
        return REPLACEMENT, start + 3
    return REPLACEMENT, error.end


codecs.register_error(UNDECODABLE, _replace_undecodable)


def read_json(data: bytes | str) -> Any:
    """The JSON value of ``data``, unpaired surrogates and undecodable bytes replaced.

    orjson reads it when it is valid Unicode (nearly always); otherwise the standard
    library reads it and the strings are repaired. Raises ``ValueError`` (a
    ``json.JSONDecodeError``) when it is not JSON.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "surrogate" not in str(exc):  # orjson's word for text that is not Unicode
            raise
    text = data if isinstance(data, str) else bytes(data).decode("utf-8", UNDECODABLE)
    value = repaired(json.loads(text))
    log.warning(
        "salesforce_text_repaired",
        detail="text that is not valid Unicode (a character cut in half) was read "
        "with U+FFFD in its place",
    )
    return value


def repaired(value: Any) -> Any:
    """``value`` (JSON's types) with every unpaired surrogate in its strings replaced."""
    if isinstance(value, str):
        return _SURROGATE.sub(REPLACEMENT, value)
    if isinstance(value, list):
        return [repaired(item) for item in value]
    if isinstance(value, dict):
        return {repaired(key): repaired(item) for key, item in value.items()}
    return value
