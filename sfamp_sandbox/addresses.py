"""The address to connect to a stand-in by, from the one it listens on.

A stand-in told to listen on every interface (``--host 0.0.0.0`` or ``::``, as in a
container) is reached here through loopback: its printed URLs and exports name
``127.0.0.1`` (``[::1]``), which every platform connects to, rather than the
wildcard, which some do not. An IPv6 literal is bracketed in a URL (RFC 3986, 3.2.2).
"""

from __future__ import annotations

from typing import Final

_LOOPBACK: Final = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}  # noqa: S104


def connect_host(host: str) -> str:
    """``host``, or loopback when it is a wildcard: what a client on this machine dials."""
    return _LOOPBACK.get(host, host)


def http_url(host: str, port: int) -> str:
    """``http://host:port`` to reach a stand-in listening on ``host``."""
    dialled = connect_host(host)
    return f"http://[{dialled}]:{port}" if ":" in dialled else f"http://{dialled}:{port}"
