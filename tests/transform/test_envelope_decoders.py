"""The envelope's two decoders (msgspec's, and the checked one that names refusals) agree."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from pipeline.errors import EnvelopeError
from pipeline.transform.envelope import ChangeEnvelope, _decode_checked, decode, encode

# What earlier versions wrote (v1 before `full` and `source`), and a writer with another order.
EARLIER = (
    b'{"v":1,"object":"Account","record_id":"001RM000004UF9sYAG","op":"update",'
    b'"commit_ts":1714157000000,"commit_number":1100670840000,'
    b'"transaction_key":"000046c7-a642-11e2-c29b-229c6786473e","sequence_number":1,'
    b'"channel":"/data/AccountChangeEvent","replay_id":18098167,'
    b'"changed":["BillingAddress.City","Fax"],"nulled":["Fax"],'
    b'"fields":{"BillingAddress":{"City":"Oakland"},"Fax":null}}'
)
REORDERED = (
    b'{"object":"Account","record_id":"001RM000004UF9sYAG","op":"update",'
    b'"commit_ts":1714157000000,"commit_number":1100670840000,'
    b'"transaction_key":"000046c7-a642-11e2-c29b-229c6786473e","sequence_number":1,'
    b'"channel":"/data/AccountChangeEvent","replay_id":18098167,'
    b'"changed":["BillingAddress.City","Fax"],"nulled":["Fax"],'
    b'"fields":{"BillingAddress":{"City":"Oakland"},"Fax":null},"v":1}'
)
EXPECTED = ChangeEnvelope(
    object="Account",
    record_id="001RM000004UF9sYAG",
    op="update",
    commit_ts=1714157000000,
    commit_number=1100670840000,
    transaction_key="000046c7-a642-11e2-c29b-229c6786473e",
    sequence_number=1,
    channel="/data/AccountChangeEvent",
    replay_id=18098167,
    changed=("BillingAddress.City", "Fax"),
    nulled=("Fax",),
    fields={"BillingAddress": {"City": "Oakland"}, "Fax": None},
)


@pytest.mark.parametrize("raw", [EARLIER, REORDERED], ids=["earlier", "reordered"])
def test_messages_of_earlier_writers_still_decode(raw: bytes) -> None:
    assert decode(raw) == EXPECTED
    assert decode(encode(decode(raw))) == EXPECTED


def test_an_integer_beyond_64_bits_is_read_as_before() -> None:
    """orjson reads it as a float; no encoder on the way to Amplitude could write it exact."""
    raw = EARLIER.replace(b'"Fax":null}', b'"Fax":null,"Big":%d,"N":{"x":-%d}}' % (2**70, 2**66))
    assert orjson.loads(raw)["fields"]["Big"] == float(2**70)
    fields = decode(raw).fields
    assert fields["Big"] == float(2**70)
    assert type(fields["Big"]) is float
    assert fields["N"] == {"x": -float(2**66)}


MUTATIONS: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    2**63,
    1.5,
    "",
    "x",
    "update",
    "gap_overflow",
    "bulk",
    [],
    ["Fax"],
    [1],
    {},
    {"A": {"B": 1}},
)


def outcome(raw: bytes, decoder: Any) -> Any:
    try:
        return decoder(raw)
    except EnvelopeError as exc:
        return ("refused", str(exc))


def test_both_decoders_accept_and_refuse_the_same_messages() -> None:
    rng = random.Random(5)
    base = orjson.loads(EARLIER) | {"full": False, "source": "cdc"}
    for _ in range(3000):
        data = dict(base)
        for _ in range(rng.randint(1, 3)):
            key = rng.choice([*base, "extra"])
            if rng.random() < 0.2:
                data.pop(key, None)
            else:
                data[key] = rng.choice(MUTATIONS)
        raw = orjson.dumps(data)
        assert outcome(raw, decode) == outcome(raw, _decode_checked), raw


@pytest.mark.parametrize(
    ("key", "value"),
    [("commit_ts", 2**70), ("commit_number", -(2**66)), ("sequence_number", 2**64),
     ("replay_id", 2**65)],
)  # fmt: skip
def test_an_order_beyond_64_bits_is_refused_by_both(key: str, value: int) -> None:
    # It would order its record after every later change, and no encoder could write it again.
    raw = EARLIER.replace(b'"%s":' % key.encode(), b'"%s":%d,"was":' % (key.encode(), value))
    assert outcome(raw, decode) == outcome(raw, _decode_checked)
    assert outcome(raw, decode)[0] == "refused", raw


def message(items: list[tuple[str, Any]]) -> bytes:
    """A JSON object of ``items`` as given: any order, duplicate keys kept."""
    return b"{%s}" % b",".join(
        orjson.dumps(key) + b":" + orjson.dumps(value) for key, value in items
    )


VERSIONS: tuple[Any, ...] = (1, 1, 1, 0, 2, -1, 1.0, True, "1", None)


def test_both_decoders_agree_wherever_the_version_stands() -> None:
    """msgspec takes ``v`` at any place (every encoder writes it first); a missing,
    repeated or other version goes the checked path's way."""
    rng = random.Random(9)
    base = [(key, value) for key, value in orjson.loads(EARLIER).items() if key != "v"]
    taken_with_v_inside = 0
    for _ in range(2000):
        items = list(base)
        if rng.random() < 0.3:
            key = rng.choice([key for key, _ in base])
            items = [(k, rng.choice(MUTATIONS) if k == key else v) for k, v in items]
        for _ in range(rng.choice((0, 1, 1, 1, 2))):  # no version, one, or a duplicate
            items.insert(rng.randint(0, len(items)), ("v", rng.choice(VERSIONS)))
        if rng.random() < 0.5:
            rng.shuffle(items)
        raw = message(items)
        assert outcome(raw, decode) == outcome(raw, _decode_checked), raw
        if items[0][0] != "v" and type(outcome(raw, decode)) is ChangeEnvelope:
            taken_with_v_inside += 1
    assert taken_with_v_inside > 200, "messages with v elsewhere than first were compared"


def test_a_message_with_its_version_last_decodes_as_the_encoder_wrote_it() -> None:
    assert decode(REORDERED) == _decode_checked(REORDERED) == EXPECTED
    for version in (0, 2):
        raw = REORDERED.replace(b'"v":1}', b'"v":%d}' % version)
        assert outcome(raw, decode) == outcome(raw, _decode_checked)
        assert outcome(raw, decode)[0] == "refused"


# JSON text msgspec would not read for a key it does not know, or past its levels, and
# the checked path does: invalid UTF-8, an infinite number, an integer beyond 64 bits.
UNREAD: tuple[bytes, ...] = (
    b'"\xff"',
    b'"\xc0\xaf"',
    b"1e400",
    b"-1e400",
    b"%d" % 2**64,
    b'{"\xff":1}',
    b"[1e400]",
    b'{"a":{"b":%d}}' % 2**64,
    b'{"a":{"b":[%d]}}' % 2**70,
    b'{"a":{"b":{"c":1}}}',
    b'[[["x"]]]',
)


@pytest.mark.parametrize("fragment", UNREAD, ids=lambda fragment: repr(fragment))
@pytest.mark.parametrize("where", ["unknown key first", "unknown key last", "field value"])
def test_both_decoders_agree_on_what_msgspec_would_skip(fragment: bytes, where: str) -> None:
    """An unknown key's value, or one nested deeper than msgspec's levels, is judged by
    the checked path: refused when orjson refuses it, read as orjson reads it."""
    if where == "unknown key first":
        raw = EARLIER.replace(b'{"v":1,', b'{"v":1,"later":%s,' % fragment)
    elif where == "unknown key last":
        raw = REORDERED.replace(b'"v":1}', b'"v":1,"later":%s}' % fragment)
    else:
        raw = EARLIER.replace(b'"Fax":null}', b'"Fax":null,"Deep":{"x":%s}}' % fragment)
    assert repr(outcome(raw, decode)) == repr(outcome(raw, _decode_checked)), raw
