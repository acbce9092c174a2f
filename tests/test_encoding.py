"""JSON bytes held until sent (pipeline/encoding.py): the same bytes orjson writes."""

from __future__ import annotations

import orjson

from pipeline.encoding import kept_json


def test_kept_json_is_what_orjson_writes() -> None:
    document = {"event_type": "$groupidentify", "groups": {"account": "001A"}, "n": [1, 2.5]}
    written = orjson.dumps(document)
    kept = kept_json(document)
    assert kept == written
    assert type(kept) is bytes
