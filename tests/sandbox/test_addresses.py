"""A stand-in listening on every interface is named by loopback in what it prints."""

from __future__ import annotations

import pytest

from sfamp_sandbox.addresses import connect_host, http_url


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8410"),
        ("0.0.0.0", "http://127.0.0.1:8410"),
        ("", "http://127.0.0.1:8410"),
        ("::", "http://[::1]:8410"),
        ("::1", "http://[::1]:8410"),
        ("sandbox.internal", "http://sandbox.internal:8410"),
    ],
)
def test_a_url_names_an_address_a_client_can_dial(host: str, url: str) -> None:
    assert http_url(host, 8410) == url


def test_a_kafka_bootstrap_host_is_never_a_wildcard() -> None:
    assert connect_host("0.0.0.0") == "127.0.0.1"
    assert connect_host("::") == "::1"
    assert connect_host("10.1.2.3") == "10.1.2.3"
