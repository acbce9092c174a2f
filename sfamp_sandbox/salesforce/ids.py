"""Salesforce record ids: 15 case-sensitive characters plus a 3-character checksum.

The first three characters are the key prefix of the object (``001`` Account), the next two
name the pod, the rest is a base-62 counter. Base-62 digits are ordered ``0-9A-Za-z`` so that
ids of one object sort lexically in creation order, as an ordered store relies on.
"""

from __future__ import annotations

import re

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID_PATTERN = re.compile(r"^[a-zA-Z0-9]{15}(?:[A-Za-z0-5]{3})?$")
POD = "RM"
_COUNTER_WIDTH = 10


def checksum(id15: str) -> str:
    """The three checksum letters of a 15-character id."""
    letters = []
    for start in (0, 5, 10):
        bits = 0
        for position, char in enumerate(id15[start : start + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << position
        letters.append(_CHECKSUM_ALPHABET[bits])
    return "".join(letters)


def to_18(record_id: str) -> str:
    """A 15- or 18-character id in its 18-character form; ValueError when malformed."""
    if not _ID_PATTERN.match(record_id):
        raise ValueError(f"malformed id {record_id}")
    id15 = record_id[:15]
    if len(record_id) == 18:
        # The 18-char form is case-insensitive: its checksum says which letters are upper case.
        id15 = _restore_case(id15, record_id[15:].upper())
    full = id15 + checksum(id15)
    if len(record_id) == 18 and record_id.upper() != full.upper():
        raise ValueError(f"malformed id {record_id}")
    return full


def _restore_case(id15: str, suffix: str) -> str:
    chars = list(id15)
    for chunk, letter in enumerate(suffix):
        bits = _CHECKSUM_ALPHABET.find(letter)
        if bits < 0:
            raise ValueError(f"malformed id suffix {suffix}")
        for position in range(5):
            index = chunk * 5 + position
            upper = bool(bits & (1 << position))
            chars[index] = chars[index].upper() if upper else chars[index].lower()
    return "".join(chars)


def encode_counter(value: int, width: int = _COUNTER_WIDTH) -> str:
    digits = []
    while value:
        value, remainder = divmod(value, 62)
        digits.append(_BASE62[remainder])
    return "".join(reversed(digits)).rjust(width, "0")


def make_id(key_prefix: str, counter: int) -> str:
    id15 = f"{key_prefix}{POD}{encode_counter(counter)}"
    return id15 + checksum(id15)


class IdSequence:
    """Hands out increasing ids for one key prefix."""

    def __init__(self, key_prefix: str, start: int = 1) -> None:
        if len(key_prefix) != 3:
            raise ValueError("a key prefix has three characters")
        self.key_prefix = key_prefix
        self._next = start

    def next_id(self) -> str:
        record_id = make_id(self.key_prefix, self._next)
        self._next += 1
        return record_id

    def take(self, count: int) -> list[str]:
        """``count`` consecutive ids. The hot path of seeding: prefix and pod fill the first
        5-character checksum chunk exactly, so its letter is computed once."""
        head = f"{self.key_prefix}{POD}"
        head_letter = checksum(head + "0" * _COUNTER_WIDTH)[0]
        first = self._next
        self._next += count
        ids = []
        for value in range(first, first + count):
            counter = encode_counter(value)
            tail = checksum("00000" + counter)[1:]
            ids.append(f"{head}{counter}{head_letter}{tail}")
        return ids
