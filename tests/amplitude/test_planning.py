"""The request planner: count limits, encoded byte limits, exact sizes. No network."""

from __future__ import annotations

import random
from urllib.parse import parse_qs, quote_plus

import orjson
import pytest

from pipeline.amplitude.payload import to_identification
from pipeline.amplitude.planning import (
    ChunkLimits,
    encoded_length,
    form_prefix,
    form_quote,
    make_chunk,
    plan_chunks,
)
from pipeline.transform.group_update import GroupUpdate

KEY = "sandbox-api-key"
PREFIX = form_prefix(KEY)


def _updates(n: int, **props: object) -> list[GroupUpdate]:
    values = props or {"name": "Acme"}
    return [GroupUpdate("account", f"001{i:06d}", values) for i in range(n)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "raw", [b"", b"abc", b'{"a": "b c"}', "é😀 ~._-+%&=".encode(), bytes(range(256))]
)
def test_encoded_length_matches_quote_plus(raw: bytes) -> None:
    assert encoded_length(raw) == len(quote_plus(raw))


def test_chunks_close_at_1024_identifications() -> None:
    chunks = plan_chunks(_updates(2500), len(PREFIX))
    assert [len(chunk) for chunk in chunks] == [1024, 1024, 452]


def test_chunks_close_at_1024_property_keys_in_total() -> None:
    props = {f"p{n}": n for n in range(10)}
    chunks = plan_chunks(_updates(300, **props), len(PREFIX))
    assert [chunk.property_keys for chunk in chunks] == [1020, 1020, 960]
    assert [len(chunk) for chunk in chunks] == [102, 102, 96]


def test_unset_keys_count_as_property_keys() -> None:
    updates = [GroupUpdate("account", str(i), {}, frozenset({"a", "b"})) for i in range(600)]
    assert [len(chunk) for chunk in plan_chunks(updates, len(PREFIX))] == [512, 88]


def test_byte_limit_with_long_non_ascii_values() -> None:
    # 1000 "ü" are 2000 UTF-8 bytes and 6000 bytes once percent-encoded.
    updates = _updates(400, notes="ü" * 1000, city="Zürich")
    chunks = plan_chunks(updates, len(PREFIX))
    limit = ChunkLimits().max_request_bytes
    assert sum(len(chunk) for chunk in chunks) == 400
    assert all(chunk.body_bytes <= limit for chunk in chunks)
    assert len(chunks) == 3
    # Full: one more identification would not have fitted.
    one = chunks[0].items[0].encoded_size + 3
    assert all(chunk.body_bytes + one > limit for chunk in chunks[:-1])


def test_planned_size_is_the_real_body_size() -> None:
    updates = [
        GroupUpdate("account", "1", {"name": "Ünïcødé & co", "n": 1.5, "tags": ["a b", "c"]}),
        GroupUpdate("account", "2", {"ok": True}, frozenset({"gone"})),
    ]
    (chunk,) = plan_chunks(updates, len(PREFIX))
    body = chunk.body(PREFIX)
    assert len(body) == chunk.body_bytes
    fields = parse_qs(body.decode())
    assert fields["api_key"] == [KEY]
    assert orjson.loads(fields["identification"][0]) == [to_identification(u) for u in updates]


def test_empty_updates_are_left_out() -> None:
    updates = [GroupUpdate("account", "1"), *_updates(2)]
    assert sum(len(chunk) for chunk in plan_chunks(updates, len(PREFIX))) == 2


def test_an_update_too_big_for_any_request_goes_alone() -> None:
    small = _updates(3)
    huge = GroupUpdate("account", "huge", {f"p{n}": n for n in range(1100)})
    chunks = plan_chunks([small[0], huge, small[1], small[2]], len(PREFIX))
    assert [len(chunk) for chunk in chunks] == [1, 1, 2]
    assert chunks[1].items[0].update is huge


def test_halves_keep_order_and_exact_sizes() -> None:
    (chunk,) = plan_chunks(_updates(5), len(PREFIX))
    left, right = chunk.halves(len(PREFIX))
    assert [item.update for item in left.items + right.items] == [i.update for i in chunk.items]
    assert (len(left), len(right)) == (2, 3)
    assert (
        len(right.body(PREFIX))
        == right.body_bytes
        == make_chunk(right.items, len(PREFIX)).body_bytes
    )


def test_custom_limits() -> None:
    limits = ChunkLimits(max_identifications=10, max_property_keys=5, max_request_bytes=10**6)
    assert [len(c) for c in plan_chunks(_updates(12), len(PREFIX), limits)] == [5, 5, 2]


@pytest.mark.parametrize(
    "raw",
    [b"", b'[{"a": "b c"}]', "é ü 日本 ~._-".encode(), bytes(range(256)), b"%+&=?/#"],
)
def test_form_quote_is_exactly_quote_plus(raw: bytes) -> None:
    assert form_quote(raw) == quote_plus(raw).encode()


@pytest.mark.parametrize("kinds", [1, 31, 32, 33, 64])
def test_form_quote_either_way_is_quote_plus(kinds: int) -> None:
    # Few kinds of escaped bytes take the replace path, many the lookup table.
    rng = random.Random(kinds)
    escaped = rng.sample([b for b in range(256) if not chr(b).isalnum()], kinds)
    alphabet = [*escaped, *b"%+ aZ09"]
    for _ in range(50):
        raw = bytes(rng.choice(alphabet) for _ in range(rng.randrange(200)))
        assert form_quote(raw) == quote_plus(raw).encode()
