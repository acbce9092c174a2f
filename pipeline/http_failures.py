"""The one clause that says why an HTTP request got no answer, for messages and log reasons.

httpx names its failures by class (``ConnectError``, ``ReadTimeout``) and keeps the
operating system's reason further down the exception chain, often behind a summary
such as "All connection attempts failed". :func:`describe_transport_failure` walks
that chain and answers a short plain clause, "connection refused", "host name not
found", "no answer within 30 s", in the style of the Kafka adapter's
``describe_failure``: lower case, one line, no Python reprs, never a class name.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from typing import Final

import httpx

MAX_REASON_CHARS: Final = 200
_CHAIN_LIMIT: Final = 10  # links of __cause__/__context__ followed, in case of a cycle
_SSL_TEXT: Final = re.compile(r"^\[[^\]]+\]\s*|\s*\(_ssl\.c:\d+\)$")
_ERRNO_PREFIX: Final = re.compile(r"^\[Errno -?\d+\]\s*")
_NAME_NOT_FOUND: Final = frozenset(
    code
    for name in ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY")
    if (code := getattr(socket, name, None)) is not None
)
# Which phase of the request each timeout bounds (httpx keeps the seconds per phase
# in the request's "timeout" extension), and what running out of it means.
_TIMEOUTS: Final = (
    (httpx.ConnectTimeout, "connect", "no answer"),
    (httpx.ReadTimeout, "read", "no answer"),
    (httpx.WriteTimeout, "write", "the request could not be sent"),
    (httpx.PoolTimeout, "pool", "no free connection"),
)
# When nothing down the chain says more than the class does.
_WITHOUT_TEXT: Final = (
    (httpx.ConnectError, "the connection failed"),
    (httpx.ReadError, "the connection broke while reading the answer"),
    (httpx.WriteError, "the connection broke while sending the request"),
    (httpx.CloseError, "the connection did not close cleanly"),
)


def describe_transport_failure(
    exc: httpx.TransportError, timeout_seconds: float | None = None
) -> str:
    """Why ``exc`` left the request without an answer, as a short clause.

    ``timeout_seconds`` overrides the limit a timeout names; without it the limit
    comes from the request httpx attached to the error, when there is one.
    """
    if isinstance(exc, httpx.TimeoutException):
        return _timed_out(exc, timeout_seconds)
    cause = _os_cause(exc)
    if isinstance(cause, ssl.SSLError):
        during = "TLS handshake failed" if isinstance(exc, httpx.ConnectError) else "TLS failed"
        return f"{during}: {_ssl_reason(cause)}"
    if cause is not None:
        return _os_reason(cause)
    if isinstance(exc, httpx.RemoteProtocolError):
        return _protocol_reason(exc)
    text = _first_line(exc)
    if isinstance(exc, httpx.ProxyError):
        return f"the proxy failed: {text}" if text else "the proxy failed"
    if text:
        return text
    return next((words for kind, words in _WITHOUT_TEXT if isinstance(exc, kind)), "no answer")


def describe_connection_failure(exc: BaseException) -> str:
    """Why a connection of another client (not httpx) failed, as a short clause: the
    operating system's reason down the chain when there is one, else the error's text."""
    cause = _os_cause(exc)
    if isinstance(cause, ssl.SSLError):
        return f"TLS failed: {_ssl_reason(cause)}"
    if cause is not None:
        return _os_reason(cause)
    return _first_line(exc) or "the connection failed"


def _timed_out(exc: httpx.TimeoutException, timeout_seconds: float | None) -> str:
    phase, words = next(
        ((phase, words) for kind, phase, words in _TIMEOUTS if isinstance(exc, kind)),
        ("read", "no answer"),
    )
    seconds = timeout_seconds if timeout_seconds is not None else _request_timeout(exc, phase)
    return f"{words} in time" if seconds is None else f"{words} within {seconds:g} s"


def _request_timeout(exc: httpx.TimeoutException, phase: str) -> float | None:
    try:
        request = exc.request
    except RuntimeError:  # raised without a request (only by hand, not by httpx)
        return None
    limits = request.extensions.get("timeout")
    seconds = limits.get(phase) if isinstance(limits, dict) else None
    return float(seconds) if isinstance(seconds, int | float) else None


def _os_cause(exc: BaseException) -> OSError | None:
    """The first TLS error down the chain, else the first OS error that has a number."""
    found: OSError | None = None
    link: BaseException | None = exc
    for _ in range(_CHAIN_LIMIT):
        if link is None:
            break
        if isinstance(link, ssl.SSLError):
            return link
        if found is None and isinstance(link, OSError) and link.errno:
            found = link
        link = link.__cause__ or link.__context__
    return found


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        if exc.errno in _NAME_NOT_FOUND:
            return "host name not found"
        return f"host name lookup failed ({_lower(exc.strerror or _first_line(exc))})"
    if isinstance(exc, ConnectionResetError):
        return "the connection was reset"
    if exc.errno and exc.errno > 0:
        return os.strerror(exc.errno).lower()
    return _first_line(exc) or "the connection failed"


def _ssl_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLEOFError):
        return "the connection was closed"
    return _SSL_TEXT.sub("", _first_line(exc)) or "no reason given"


def _protocol_reason(exc: httpx.RemoteProtocolError) -> str:
    text = _first_line(exc)
    if "without sending a response" in text or "disconnected" in text.lower():
        return "the connection was closed before an answer"
    if "peer closed connection" in text:
        return "the connection was closed before the whole answer came"
    what = text.split(":", 1)[0]  # h11 goes on with a repr of the bytes it refused
    return f"the answer is not valid HTTP ({what})" if what else "the answer is not valid HTTP"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = _ERRNO_PREFIX.sub("", lines[0]).rstrip(".") if lines else ""
    return _lower(text[:MAX_REASON_CHARS])


def _lower(text: str) -> str:
    """A sentence's capital dropped for a clause; an acronym (TLS, SSL) keeps its own."""
    if len(text) > 1 and text[0].isupper() and not text[1].isupper():
        return text[0].lower() + text[1:]
    return text
