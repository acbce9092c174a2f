"""Counts in words for what sfamp prints and raises: "1 entry", "2 entries", never "entr(y/ies)"."""

from __future__ import annotations


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``count`` (with thousands separators) and the noun in the number it calls for.

    ``plural(1, "entry", "entries")`` is "1 entry", ``plural(1204, "call")`` is
    "1,204 calls"; the plural is ``singular + "s"`` unless given.
    """
    word = singular if count == 1 else (plural_form or f"{singular}s")
    return f"{count:,} {word}"
