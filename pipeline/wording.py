"""Words for what sfamp prints and raises: counts ("1 entry", "2 entries", never
"entr(y/ies)") and the nearest known name to a misspelt one."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``count`` (with thousands separators) and the noun in the number it calls for.

    ``plural(1, "entry", "entries")`` is "1 entry", ``plural(1204, "call")`` is
    "1,204 calls"; the plural is ``singular + "s"`` unless given.
    """
    word = singular if count == 1 else (plural_form or f"{singular}s")
    return f"{count:,} {word}"


def nearest(word: str, known: Iterable[str], *, cutoff: float = 0.75) -> str | None:
    """The known name closest to ``word`` (difflib's ratio at least ``cutoff``, case
    ignored: "DLQ" is near "dlq"), if any; the known name as it is spelt."""
    spelt: dict[str, str] = {}
    for name in sorted(set(known)):
        spelt.setdefault(name.lower(), name)
    close = difflib.get_close_matches(word.lower(), list(spelt), n=1, cutoff=cutoff)
    return spelt[close[0]] if close else None


def not_one_of(given: Any, expected: str) -> str:
    """A value outside a fixed set, said with the value and, when one is near, the allowed
    value meant: "'delete' is not one of 'ignore', 'mark', 'unset' (did you mean ...)".

    ``expected`` is pydantic's listing of a ``literal_error`` ("'ignore', 'mark' or 'unset'").
    """
    allowed = re.findall(r"'([^']*)'", expected)
    if not allowed:  # not strings: pydantic lists them bare ("1")
        return f"must be {expected}, not {given!r}"
    listed = ", ".join(map(repr, allowed))
    close = nearest(given, allowed) if isinstance(given, str) else None
    return f"{given!r} is not one of {listed}" + (f" (did you mean {close!r}?)" if close else "")
