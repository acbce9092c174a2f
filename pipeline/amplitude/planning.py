"""Split group updates into ``/groupidentify`` requests that Amplitude accepts.

Pure: no I/O. A request carries at most 1024 identifications, at most 1024
property keys in total (the stricter reading of Amplitude's "1024 group
properties per request"), and stays under the 1 MB body limit *after* form
encoding. Form encoding turns every byte outside ``A-Za-z0-9_.-~`` into three
bytes (``%7B``), so JSON punctuation and non-ASCII text grow a lot; sizes are
therefore measured on the real encoded bytes, identification by identification,
and the request body is built from the very same pieces.

Amplitude keeps at most 1,024 characters of a string value and drops the rest
(reference §1.6). sfamp cuts every string, also inside arrays, to that length
before measuring, so a long text field costs no more than Amplitude keeps and
cannot push an identification over the request limit; each cut is reported
(:attr:`EncodedUpdate.cut`) so that it is counted and logged. An identification
still too large on its own goes alone, and Amplitude's answer to it names the
problem; its neighbours are unaffected.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote_plus

import msgspec

from pipeline.amplitude.payload import to_identification
from pipeline.encoding import kept_json
from pipeline.transform.group_update import GroupUpdate, PropertyValue

MAX_IDENTIFICATIONS = 1024
MAX_PROPERTY_KEYS = 1024
# Amplitude keeps this many characters of a string property value.
MAX_STRING_CHARS = 1024
# Amplitude says "1 MB" without saying 10**6 or 2**20 bytes; stay well under both.
MAX_REQUEST_BYTES = 950_000

_ALWAYS_SAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
# Bytes that quote_plus turns into %XX (a space becomes "+", still one byte).
_ESCAPED = bytes(b for b in range(256) if b not in _ALWAYS_SAFE and b != ord(" "))
_OPEN, _SEPARATOR, _CLOSE = b"%5B", b"%2C", b"%5D"  # "[", ",", "]" once encoded
_FRAME = len(_OPEN) + len(_CLOSE)


@dataclass(frozen=True, slots=True)
class ChunkLimits:
    """What one request may hold; lower them to test, or for a stricter proxy."""

    max_identifications: int = MAX_IDENTIFICATIONS
    max_property_keys: int = MAX_PROPERTY_KEYS
    max_request_bytes: int = MAX_REQUEST_BYTES
    # Amplitude's "1024 group properties per request" read strictly (summed over the
    # request) or per identification; see SFAMP_AMPLITUDE__PROPERTY_LIMIT_SCOPE.
    property_keys_per_request: bool = True


# quote_plus, byte by byte, as a lookup table (used when a body holds many kinds of
# escaped bytes, e.g. much non-ASCII text).
_FORM_BYTES = [
    bytes([b]) if b in _ALWAYS_SAFE else (b"+" if b == ord(" ") else b"%%%02X" % b)
    for b in range(256)
]
# Up to this many kinds of escaped bytes, one C-speed ``replace`` per kind beats the table.
_MAX_REPLACE_PASSES = 32


def form_quote(raw: bytes) -> bytes:
    """``quote_plus(raw).encode()``, without the per-byte Python loop of ``urllib``.

    JSON uses few kinds of punctuation, so replacing each kind in one pass over the
    body is about four times faster than mapping every byte. ``%`` goes first (the
    other replacements add ``%``) and ``+`` before the space (which becomes ``+``).
    """
    kinds = set(raw.translate(None, _ALWAYS_SAFE))
    if len(kinds) > _MAX_REPLACE_PASSES:
        return b"".join(map(_FORM_BYTES.__getitem__, raw))
    first = [byte for byte in (ord("%"), ord("+")) if byte in kinds]
    space = ord(" ") in kinds
    kinds.difference_update((ord("%"), ord("+"), ord(" ")))
    for byte in (*first, *kinds):
        raw = raw.replace(bytes((byte,)), _FORM_BYTES[byte])
    return raw.replace(b" ", b"+") if space else raw


def encoded_length(raw: bytes) -> int:
    """Length of ``quote_plus(raw)`` without building it (``translate`` runs in C)."""
    return len(raw) + 2 * (len(raw) - len(raw.translate(None, _ESCAPED)))


def form_prefix(api_key: str) -> bytes:
    """The body up to the identification JSON: ``api_key=...&identification=``."""
    return f"api_key={quote_plus(api_key)}&identification=".encode()


class EncodedUpdate(msgspec.Struct, frozen=True, eq=False, gc=False):
    """One update (strings cut) with its identification JSON and that JSON's encoded length.

    A frozen msgspec Struct, built in C: a backfill makes one per record. Not tracked
    by the garbage collector: it holds an update and bytes, never itself.
    """

    update: GroupUpdate
    json: bytes
    encoded_size: int
    property_keys: int
    cut: tuple[str, ...] = ()  # properties whose strings were cut to MAX_STRING_CHARS


def encode_update(update: GroupUpdate) -> EncodedUpdate:
    update, cut = cut_strings(update)
    raw = kept_json(to_identification(update))
    keys = len(update.set) + len(update.unset)
    return EncodedUpdate(update, raw, encoded_length(raw), keys, cut)


def cut_strings(
    update: GroupUpdate, limit: int = MAX_STRING_CHARS
) -> tuple[GroupUpdate, tuple[str, ...]]:
    """``update`` with every string value (also in arrays) cut to ``limit`` characters.

    Answers the same object, and no names, when nothing is too long (the common case).
    """
    # Inlined for the common case: a backfill measures every value it sends.
    cut = tuple(
        prop
        for prop, value in update.set.items()
        if (len(value) > limit if type(value) is str else type(value) is list)
        and _too_long(value, limit)
    )
    if not cut:
        return update, ()
    values = dict(update.set)
    for prop in cut:
        values[prop] = _cut(values[prop], limit)
    return msgspec.structs.replace(update, set=values), cut


def _too_long(value: object, limit: int) -> bool:
    if type(value) is str:
        return len(value) > limit
    if type(value) is list:
        return any(_too_long(item, limit) for item in value)
    return False


def _cut(value: PropertyValue, limit: int) -> PropertyValue:
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, list):
        return [_cut(item, limit) for item in value]
    return value


@dataclass(frozen=True, slots=True)
class Chunk:
    """The identifications of one request and the exact size of its form body."""

    items: tuple[EncodedUpdate, ...]
    body_bytes: int
    property_keys: int

    def __len__(self) -> int:
        return len(self.items)

    def body(self, prefix: bytes) -> bytes:
        """The form-encoded body; ``len(body(prefix)) == body_bytes`` for the planned key."""
        raw = b"[" + b",".join(item.json for item in self.items) + b"]"
        return prefix + form_quote(raw)

    def halves(self, prefix_len: int) -> tuple[Chunk, Chunk]:
        """Split in two (for a 413, or to bisect a 400); needs two or more items."""
        middle = len(self.items) // 2
        return (
            make_chunk(self.items[:middle], prefix_len),
            make_chunk(self.items[middle:], prefix_len),
        )


def request_bytes(prefix_len: int, payload_sizes: int, count: int) -> int:
    """Body size of a request whose identifications encode to ``payload_sizes`` bytes."""
    return prefix_len + _FRAME + payload_sizes + len(_SEPARATOR) * (count - 1)


def make_chunk(items: Sequence[EncodedUpdate], prefix_len: int) -> Chunk:
    sizes = sum(item.encoded_size for item in items)
    keys = sum(item.property_keys for item in items)
    return Chunk(tuple(items), request_bytes(prefix_len, sizes, len(items)), keys)


def plan_chunks(
    updates: Iterable[GroupUpdate], prefix_len: int, limits: ChunkLimits = ChunkLimits()
) -> list[Chunk]:
    """Fill requests in order, closing one as soon as the next update would break a limit.

    Empty updates are left out; strings are cut to :data:`MAX_STRING_CHARS` first.
    An update too big to share a request goes alone; Amplitude's answer for it
    (400 or 413) then names the problem.
    """
    chunks: list[Chunk] = []
    items: list[EncodedUpdate] = []
    size = keys = 0
    for update in updates:
        if update.is_empty():
            continue
        item = encode_update(update)
        grown = size + item.encoded_size + (len(_SEPARATOR) if items else 0)
        fits = (
            len(items) < limits.max_identifications
            and (
                keys + item.property_keys <= limits.max_property_keys
                or not limits.property_keys_per_request
            )
            and prefix_len + _FRAME + grown <= limits.max_request_bytes
        )
        if items and not fits:
            chunks.append(make_chunk(items, prefix_len))
            items, size, keys = [], 0, 0
            grown = item.encoded_size
        items.append(item)
        size, keys = grown, keys + item.property_keys
    if items:
        chunks.append(make_chunk(items, prefix_len))
    return chunks


def cut_properties(chunks: Iterable[Chunk]) -> Counter[tuple[str, str]]:
    """How many values were cut, per (group type, property), over planned chunks."""
    cut = [item for chunk in chunks for item in chunk.items if item.cut]
    return Counter((item.update.group_type, prop) for item in cut for prop in item.cut)
