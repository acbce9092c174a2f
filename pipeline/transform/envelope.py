"""The change envelope: one change to one Salesforce record, sfamp's domain record.

It lives in ``transform/`` beside its output (:mod:`pipeline.transform.group_update`):
every stage speaks it (Salesforce parsing builds it, Kafka carries it, the transform
reads it), and its codec is a pure function over data, so no adapter owns it and the
transform depends on no adapter. Kafka carries one per message of
``sfamp.changes.<Object>``.

Wire form (JSON, version 1)::

    {"v": 1, "object": "Account", "record_id": "001...", "op": "update",
     "commit_ts": 1714157000000, "commit_number": 1100670840000,
     "transaction_key": "000046c7-...", "sequence_number": 1,
     "channel": "/data/AccountChangeEvent", "replay_id": 18098167,
     "changed": ["BillingAddress.City", "Fax"], "nulled": ["Fax"],
     "fields": {"BillingAddress": {"City": "Oakland"}, "Fax": null},
     "full": false, "source": "cdc"}

``fields`` keeps the CDC body as Salesforce sent it (compound fields nested,
``changed`` and ``nulled`` in ``Parent.Component`` form); resolving names against
the object's schema is the transform's job, so ingest needs no describe call.

A *full* envelope (``full: true``) comes from a REST or Bulk re-read rather than
CDC: ``fields`` then holds every field that was read (nulls included); an absent
field was not read and says nothing. Its ``commit_ts`` is the read time, because
the read reflects every commit before it.

``gap_overflow`` names no record: its ``record_id`` is ``""`` (and
:attr:`ChangeEnvelope.kafka_key` falls back to the object name). Every other op
needs a record id. Unknown keys are ignored so that version 1 can grow optional
keys; anything else that does not fit raises :class:`~pipeline.errors.EnvelopeError`.

Decoding runs once per Kafka message in the deliver pump, so it has two paths
that accept and refuse the same messages: msgspec parses and type-checks a
message in one pass of C; anything it refuses goes through the checks below,
which say what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, NoReturn, cast, get_args

import msgspec
import orjson
from msgspec.structs import astuple

from pipeline.encoding import kept_json
from pipeline.errors import EnvelopeError

ENVELOPE_VERSION: Final = 1

Op = Literal[
    "create",
    "update",
    "delete",
    "undelete",
    "gap_create",
    "gap_update",
    "gap_delete",
    "gap_undelete",
    "gap_overflow",
]
OPS: Final[frozenset[str]] = frozenset(get_args(Op))
GAP_OPS: Final[frozenset[str]] = frozenset(op for op in OPS if op.startswith("gap_"))

Source = Literal["cdc", "rest", "bulk"]
SOURCES: Final[frozenset[str]] = frozenset(get_args(Source))


class ChangeEnvelope(msgspec.Struct, frozen=True, gc=False):
    """One change to one record, as carried through Kafka. Treat ``fields`` as read-only.

    A frozen msgspec Struct (the deliver pump makes one per Kafka message, and a Struct
    is built in C): copy one with changes by ``msgspec.structs.replace``. Not tracked by
    the garbage collector: an envelope never refers back to itself.
    """

    object: str
    record_id: str
    op: Op
    commit_ts: int
    commit_number: int = 0
    transaction_key: str = ""
    sequence_number: int = 0
    channel: str = ""
    replay_id: int | None = None
    changed: tuple[str, ...] = ()
    nulled: tuple[str, ...] = ()
    fields: Mapping[str, Any] = msgspec.field(default_factory=dict)
    full: bool = False
    source: Source = "cdc"

    @property
    def ordering(self) -> tuple[int, int, int]:
        """Commit order of this change; later compares greater."""
        return (self.commit_ts, self.commit_number, self.sequence_number)

    @property
    def kafka_key(self) -> bytes:
        """The record id; the object name for a ``gap_overflow``, which names no record."""
        return (self.record_id or self.object).encode()


def encode(env: ChangeEnvelope) -> bytes:
    """The JSON bytes of ``env`` (``v`` first); :func:`decode` gives back an equal envelope."""
    return kept_json(
        {
            "v": ENVELOPE_VERSION,
            "object": env.object,
            "record_id": env.record_id,
            "op": env.op,
            "commit_ts": env.commit_ts,
            "commit_number": env.commit_number,
            "transaction_key": env.transaction_key,
            "sequence_number": env.sequence_number,
            "channel": env.channel,
            "replay_id": env.replay_id,
            "changed": env.changed,
            "nulled": env.nulled,
            # orjson serialises dicts only; a read-only mapping is copied.
            "fields": env.fields if type(env.fields) is dict else dict(env.fields),
            "full": env.full,
            "source": env.source,
        }
    )


# (key, accepted types). `type(x) in types` rather than isinstance so that a JSON
# boolean is never taken for an integer.
_REQUIRED: Final[tuple[tuple[str, tuple[type, ...]], ...]] = (
    ("object", (str,)),
    ("record_id", (str,)),
    ("op", (str,)),
    ("commit_ts", (int,)),
    ("commit_number", (int,)),
    ("transaction_key", (str,)),
    ("sequence_number", (int,)),
    ("channel", (str,)),
    ("replay_id", (int, type(None))),
    ("changed", (list,)),
    ("nulled", (list,)),
    ("fields", (dict,)),
)
_OPTIONAL: Final[tuple[tuple[str, tuple[type, ...], Any], ...]] = (
    ("full", (bool,), False),
    ("source", (str,), "cdc"),
)
_MISSING: Final = object()
_KIND: Final[dict[type, str]] = {
    str: "a string",
    int: "an integer",
    list: "a list",
    dict: "an object",
    bool: "a boolean",
    type(None): "null",
}


# orjson, which the checked path uses, reads an integer beyond 64 bits as a float; msgspec
# would keep it exact, and no JSON encoder downstream could write it. Field values are
# therefore bounded, and a message holding such an integer takes the checked path. So
# does one nested deeper than three levels (a compound field's components, a related
# record's ``attributes``: Salesforce sends no deeper), rather than msgspec reading its
# innermost values unchecked. Salesforce itself never sends such an integer.
_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_Leaf = str | _Int64 | float | bool | None
_Inner = _Leaf | list[_Leaf] | dict[str, _Leaf]
_Value = _Leaf | list[_Inner] | dict[str, _Inner]


class _Wire(
    msgspec.Struct, tag_field="v", tag=ENVELOPE_VERSION, forbid_unknown_fields=True, gc=False
):
    """The wire form as msgspec checks it: the same keys and types as the checks below.

    A Struct rather than :class:`ChangeEnvelope` itself because every key but ``full``
    and ``source`` is required on the wire, while the dataclass has defaults. A key it
    does not know sends the message to the checked path: msgspec would skip its value
    without reading it, where the checked path refuses one that is not valid JSON.
    """

    object: str
    record_id: str
    op: Op
    commit_ts: _Int64
    commit_number: _Int64
    transaction_key: str
    sequence_number: _Int64
    channel: str
    replay_id: _Int64 | None
    changed: tuple[str, ...]
    nulled: tuple[str, ...]
    fields: dict[str, _Value]
    full: bool = False
    source: Source = "cdc"


class _OtherVersion(msgspec.Struct, tag_field="v", tag=0, gc=False):
    """Any version but 1, to the checked path. Decoding a union makes the tag required
    (msgspec needs it to choose), where for :class:`_Wire` alone it is optional.

    For a duplicate ``v`` msgspec checks each one, and the checked path the last: a
    message msgspec takes has no other version than 1 to be judged by.
    """


_WIRE: Final = msgspec.json.Decoder(_Wire | _OtherVersion)
if _Wire.__struct_fields__ != ChangeEnvelope.__struct_fields__:  # decode copies by position
    raise TypeError("_Wire must declare the fields of ChangeEnvelope, in the same order")


def decode(raw: bytes) -> ChangeEnvelope:
    """Parse one Kafka message value; :class:`EnvelopeError` says what is wrong with it."""
    if type(raw) is bytes:  # msgspec reads str too; the checked path refuses it
        try:
            wire = _WIRE.decode(raw)
        except msgspec.DecodeError:
            pass  # the checked path below says why
        else:
            if (
                type(wire) is _Wire
                and wire.object
                and (wire.record_id or wire.op == "gap_overflow")
            ):
                # Field by field in C: _Wire declares ChangeEnvelope's fields in its order.
                return ChangeEnvelope(*astuple(wire))
    return _decode_checked(raw)


def _decode_checked(raw: bytes) -> ChangeEnvelope:
    """The reference decoder: accepts what :data:`_WIRE` accepts, and names every refusal."""
    data = _load(raw)
    _check_version(data)
    for key, types in _REQUIRED:
        # Inline fast path: this runs for every key of every message.
        if type(data.get(key, _MISSING)) not in types:
            _refuse_type(data, key, types)
    for key, types, _ in _OPTIONAL:
        if key in data and type(data[key]) not in types:
            _refuse_type(data, key, types)
    _check_semantics(data)
    return ChangeEnvelope(
        object=data["object"],
        record_id=data["record_id"],
        op=data["op"],
        commit_ts=data["commit_ts"],
        commit_number=data["commit_number"],
        transaction_key=data["transaction_key"],
        sequence_number=data["sequence_number"],
        channel=data["channel"],
        replay_id=data["replay_id"],
        changed=tuple(data["changed"]),
        nulled=tuple(data["nulled"]),
        fields=data["fields"],
        full=data.get("full", False),
        source=data.get("source", "cdc"),
    )


def _load(raw: bytes) -> dict[str, Any]:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise EnvelopeError(f"envelope must be bytes, got {type(raw).__name__}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"envelope is not JSON: {exc}") from exc
    if type(data) is not dict:
        raise EnvelopeError(f"envelope must be a JSON object, got {_kind_of(data)}")
    return cast(dict[str, Any], data)


def _check_version(data: Mapping[str, Any]) -> None:
    version = data.get("v")
    if type(version) is not int or version != ENVELOPE_VERSION:
        raise EnvelopeError(
            f"unsupported envelope version {version!r} (this build reads v{ENVELOPE_VERSION})"
        )


def _refuse_type(data: Mapping[str, Any], key: str, types: tuple[type, ...]) -> NoReturn:
    if key not in data:
        raise EnvelopeError(f"envelope has no {key!r}")
    wanted = " or ".join(_KIND[t] for t in types)
    raise EnvelopeError(f"envelope {key!r} must be {wanted}, got {_kind_of(data[key])}")


def _check_semantics(data: Mapping[str, Any]) -> None:
    op = data["op"]
    if op not in OPS:
        raise EnvelopeError(f"envelope op {op!r} is not one of {', '.join(sorted(OPS))}")
    if not data["object"]:
        raise EnvelopeError("envelope 'object' is empty")
    if not data["record_id"] and op != "gap_overflow":
        raise EnvelopeError(f"envelope 'record_id' is empty for op {op!r}")
    if data.get("source", "cdc") not in SOURCES:
        raise EnvelopeError(f"envelope source {data['source']!r} is not one of cdc, rest, bulk")
    for key in ("changed", "nulled"):
        for name in data[key]:
            if type(name) is not str:
                raise EnvelopeError(f"envelope {key!r} must hold only field names (strings)")


def _kind_of(value: object) -> str:
    return _KIND.get(type(value), type(value).__name__)
