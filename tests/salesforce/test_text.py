"""Text from Salesforce that is not valid Unicode: one value on every read path, never a
refused message or a value no encoder writes."""

from __future__ import annotations

import json

import httpx
import orjson
import pytest

from pipeline.salesforce.bulk_csv import parse_csv
from pipeline.salesforce.cdc import _loads as cometd_loads
from pipeline.salesforce.change_events import envelopes_from_event
from pipeline.salesforce.rest import _json as rest_json
from pipeline.salesforce.text import REPLACEMENT, read_json
from pipeline.transform.envelope import decode, encode
from tests.transform.fixtures import cdc_message

# "Caf" and half of U+1F600 (an emoji cut by LEFT), as JSON escapes and as CESU-8 bytes
CUT_ESCAPED = b'"Caf\\ud83d"'
CUT_CESU = "Caf\ud83d".encode("utf-8", "surrogatepass")
CUT = f"Caf{REPLACEMENT}"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"Name": ' + CUT_ESCAPED + b"}", {"Name": CUT}),
        (b'{"Name": "\\udc00x"}', {"Name": f"{REPLACEMENT}x"}),  # a low half alone
        (b'{"Name": "\\ud83d\\ud83d\\ude00"}', {"Name": f"{REPLACEMENT}\U0001f600"}),
        (b'{"Name": "' + CUT_CESU + b'"}', {"Name": CUT}),  # one character, as escaped
        (b'{"Name": "a\xffb"}', {"Name": f"a{REPLACEMENT}b"}),
        (b'[{"\\ud800": [' + CUT_ESCAPED + b", 1, null]}]", [{REPLACEMENT: [CUT, 1, None]}]),
        ('{"Name": "Caf\ud83d"}', {"Name": CUT}),  # text already decoded
    ],
)
def test_what_is_not_unicode_is_read_as_the_replacement_character(
    body: bytes | str, expected: object
) -> None:
    value = read_json(body)
    assert value == expected
    orjson.dumps(value)  # what every encoder downstream can write


def test_valid_text_and_malformed_json_are_read_as_before() -> None:
    assert read_json(b'{"Name": "\\ud83d\\ude00 \xc3\xa9"}') == {"Name": "\U0001f600 é"}
    with pytest.raises(orjson.JSONDecodeError, match="trailing comma"):
        read_json(b'{"Name": "x",}')
    with pytest.raises(json.JSONDecodeError):  # not JSON, with a cut character in it
        read_json(b'{"Name": ' + CUT_ESCAPED)


def test_every_read_path_gives_the_same_value() -> None:
    cometd = cometd_loads(b'[{"data": {"payload": {"Name": ' + CUT_ESCAPED + b"}}}]")
    rest = rest_json(httpx.Response(200, content=b'{"Name": ' + CUT_ESCAPED + b"}"))
    (bulk,) = parse_csv(b'"Name","Description"\n"' + CUT_CESU + b'","a\xffb"\n')
    assert cometd[0]["data"]["payload"]["Name"] == rest["Name"] == bulk["Name"] == CUT
    assert bulk["Description"] == f"a{REPLACEMENT}b"


def test_a_change_event_with_a_cut_character_reaches_kafka() -> None:
    """Read as CometD hands it over, it becomes an envelope that encodes and decodes."""
    raw = orjson.dumps(cdc_message("UPDATE", body={"Name": "PLACEHOLDER"}, changed=["Name"]))
    message = cometd_loads(raw.replace(b'"PLACEHOLDER"', CUT_ESCAPED))
    (envelope,) = envelopes_from_event(message)
    assert decode(encode(envelope)).fields["Name"] == CUT
