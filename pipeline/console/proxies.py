"""Requests through a trusted reverse proxy: the client, scheme and host it forwards.

Behind a reverse proxy every request reaches the console from the proxy's
address, often over plain HTTP and for the proxy's idea of the host, so every
client would share one sign-in count, session cookies would not be marked
``Secure`` and the browser's ``Origin`` would not match. For a peer in
``SFAMP_CONSOLE__TRUSTED_PROXIES`` the console reads what the proxy forwards
instead, in the de-facto standard headers (MDN, "X-Forwarded-For",
"X-Forwarded-Proto", "X-Forwarded-Host"):

* the client is the right-most ``X-Forwarded-For`` address that is not itself a
  trusted proxy: a client can write anything to the left of what its proxy adds.
  An entry with a port (``198.51.100.7:4711``, ``[2001:db8::7]:443``) counts as its
  address; one that is no address at all leaves the nearest proxy as the client;
* the scheme is ``X-Forwarded-Proto`` (``http`` or ``https``), the host
  ``X-Forwarded-Host`` (with ``X-Forwarded-Port`` when it is not the scheme's
  default), each its right-most value, the one the nearest proxy wrote; a host
  that is not a plain ``name[:port]`` is ignored.

A request from any other peer is taken as it came, whatever headers it carries.
Trusting a proxy needs ``SFAMP_CONSOLE__TOKEN``: the console is then reached from
other hosts (:func:`pipeline.console.server.check_exposure`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SCHEMES: Final = frozenset(("http", "https"))
_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}
# A host name or IPv4 address, or a bracketed IPv6 address, with an optional port.
_HOST: Final = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


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
        address = _address(hop)
        if address is None:
            return peer  # not an address ("unknown", an obfuscated name): stop trusting here
        if not is_trusted(address, trusted):
            return address
    return peer  # only proxies on the way (or no header): the nearest one is the client


def forwarded_host(host: str, port: str, scheme: str) -> str | None:
    """``X-Forwarded-Host`` with ``X-Forwarded-Port`` (right-most values), or None when the
    host is not a plain ``name[:port]`` (a user part, a path, spaces...)."""
    host, port = _last(host), _last(port)
    if not host or not _HOST.fullmatch(host):
        return None
    if port.isdigit() and not _has_port(host) and port != _DEFAULT_PORTS.get(scheme):
        return f"{host}:{port}"
    return host


def forwarded_middleware(trusted: Sequence[Network]) -> web.middleware:  # type: ignore[valid-type]
    """Take the client, scheme and host of a request from a trusted proxy's headers."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_trusted(request.remote, trusted):
            return await handler(request)
        headers = request.headers
        client = forwarded_client(request.remote, headers.getall("X-Forwarded-For", []), trusted)
        scheme = _last(headers.get("X-Forwarded-Proto", "")).lower()
        scheme = scheme if scheme in _SCHEMES else request.scheme
        host = forwarded_host(
            headers.get("X-Forwarded-Host", ""), headers.get("X-Forwarded-Port", ""), scheme
        )
        forwarded = request.clone(remote=client or "", scheme=scheme, host=host or request.host)
        return await handler(forwarded)

    return middleware


def _address(hop: str) -> str | None:
    """The IP address of one ``X-Forwarded-For`` entry, without a port or brackets."""
    text = hop
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _has_port(host: str) -> bool:
    return host.rpartition("]")[2].count(":") == 1 if host.startswith("[") else ":" in host


def _last(value: str) -> str:
    return value.rsplit(",", 1)[-1].strip()
