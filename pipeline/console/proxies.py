"""Requests through a trusted reverse proxy: the client, scheme and host it forwards.

Behind a reverse proxy every request reaches the console from the proxy's
address, often over plain HTTP and for the proxy's idea of the host, so every
client would share one sign-in count, session cookies would not be marked
``Secure`` and the browser's ``Origin`` would not match. For a peer in
``SFAMP_CONSOLE__TRUSTED_PROXIES`` the console reads what the proxy forwards
instead, in the de-facto standard headers (MDN, "X-Forwarded-For",
"X-Forwarded-Proto", "X-Forwarded-Host"):

* the client is the right-most ``X-Forwarded-For`` address that is not itself a
  trusted proxy: a client can write anything to the left of what its proxy adds;
* the scheme is ``X-Forwarded-Proto`` (``http`` or ``https``), the host
  ``X-Forwarded-Host``, each its first value.

A request from any other peer is taken as it came, whatever headers it carries.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SCHEMES: Final = frozenset(("http", "https"))


def is_trusted(address: str | None, trusted: Sequence[Network]) -> bool:
    """Whether ``address`` (an IP address as text; None or a name: no) is in ``trusted``."""
    if not address or not trusted:
        return False
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return any(parsed in network for network in trusted)


def forwarded_client(
    peer: str | None, forwarded_for: Iterable[str], trusted: Sequence[Network]
) -> str | None:
    """The client behind ``peer``: ``peer`` itself unless it is trusted, else the right-most
    ``X-Forwarded-For`` entry (headers in order, comma-separated) that is not trusted."""
    if not is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    for hop in reversed(hops):
        if hop and not is_trusted(hop, trusted):
            return hop
    return peer  # only proxies on the way (or no header): the nearest one is the client


def forwarded_middleware(trusted: Sequence[Network]) -> web.middleware:  # type: ignore[valid-type]
    """Take the client, scheme and host of a request from a trusted proxy's headers."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_trusted(request.remote, trusted):
            return await handler(request)
        headers = request.headers
        client = forwarded_client(request.remote, headers.getall("X-Forwarded-For", []), trusted)
        scheme = _first(headers.get("X-Forwarded-Proto")).lower()
        host = _first(headers.get("X-Forwarded-Host"))
        forwarded = request.clone(
            remote=client or "",
            scheme=scheme if scheme in _SCHEMES else request.scheme,
            host=host or request.host,
        )
        return await handler(forwarded)

    return middleware


def _first(value: str | None) -> str:
    return (value or "").split(",", 1)[0].strip()
