"""JSON bytes that are held a while: encoded once, kept until a request or a batch is sent."""

from __future__ import annotations

from typing import Any

import orjson


def kept_json(document: Any) -> bytes:
    """``orjson.dumps(document)``, copied into a bytes object of its own size.

    For JSON held until it is sent (an identification or event until its request
    goes, a change envelope until its Kafka batch does). What orjson answers keeps the
    larger block it was written in; held by the tens of thousands, as a backfill's
    batches in flight hold them, each cost 2-3 µs more in the allocator than the
    encoding itself (measured on 300-byte events: 2.7-3.5 µs a call when kept,
    0.5-0.6 µs when dropped). The copy, with orjson's block freed at once, brings it
    to about 0.7 µs.
    """
    return bytes(memoryview(orjson.dumps(document)))
