"""Why an HTTP request got no answer, in words (pipeline/http_failures.py).

The exceptions are built the way httpx raises them: the httpx class on top, the
operating system's or the TLS library's error further down the chain.
"""

from __future__ import annotations

import errno
import socket
import ssl

import httpx
import pytest

from pipeline.http_failures import describe_connection_failure, describe_transport_failure

REQUEST = httpx.Request(
    "POST",
    "https://login.example.com/services/oauth2/token",
    extensions={"timeout": {"connect": 10.0, "read": 30.0, "write": 5.0, "pool": 2.5}},
)


def chained(top: httpx.TransportError, *causes: BaseException) -> httpx.TransportError:
    """``top`` raised from the first cause, raised from the next, as httpx and anyio do."""
    link: BaseException = top
    for cause in causes:
        link.__cause__ = cause
        link = cause
    return top


def every_transport_failure() -> list[type[httpx.TransportError]]:
    found: list[type[httpx.TransportError]] = []
    pending = [httpx.TransportError]
    while pending:
        kind = pending.pop()
        found.append(kind)
        pending.extend(kind.__subclasses__())
    return found


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (
            chained(
                httpx.ConnectError("All connection attempts failed"),
                OSError("All connection attempts failed"),
                ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"),
            ),
            "connection refused",
        ),
        (
            chained(
                httpx.ConnectError("[Errno -2] Name or service not known"),
                socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            ),
            "host name not found",
        ),
        (
            chained(
                httpx.ConnectError("[Errno -3] Temporary failure in name resolution"),
                socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
            ),
            "host name lookup failed (temporary failure in name resolution)",
        ),
        (
            chained(
                httpx.ConnectError("[Errno 101] Network is unreachable"),
                OSError(errno.ENETUNREACH, "Network is unreachable"),
            ),
            "network is unreachable",
        ),
        (
            chained(
                httpx.ConnectError("wrong version number"),
                ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"),
            ),
            "TLS handshake failed: wrong version number",
        ),
        (
            chained(
                httpx.ConnectError("certificate verify failed"),
                ssl.SSLCertVerificationError(
                    1,
                    "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                    "self-signed certificate (_ssl.c:1006)",
                ),
            ),
            "TLS handshake failed: certificate verify failed: self-signed certificate",
        ),
        (
            chained(httpx.ConnectError(""), ssl.SSLEOFError(8, "EOF occurred")),
            "TLS handshake failed: the connection was closed",
        ),
        (httpx.ConnectError(""), "the connection failed"),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            "the connection was closed before an answer",
        ),
        (
            httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body "
                "(incomplete chunked read)"
            ),
            "the connection was closed before the whole answer came",
        ),
        (
            httpx.RemoteProtocolError("illegal status line: bytearray(b'garbage')"),
            "the answer is not valid HTTP (illegal status line)",
        ),
        (
            chained(httpx.ReadError(""), ConnectionResetError(errno.ECONNRESET, "reset")),
            "the connection was reset",
        ),
        (httpx.ReadError(""), "the connection broke while reading the answer"),
        (
            chained(httpx.WriteError(""), BrokenPipeError(errno.EPIPE, "Broken pipe")),
            "broken pipe",
        ),
        (httpx.WriteError(""), "the connection broke while sending the request"),
        (httpx.CloseError(""), "the connection did not close cleanly"),
        (
            httpx.ProxyError("407 Proxy Authentication Required"),
            "the proxy failed: 407 Proxy Authentication Required",
        ),
        (
            httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'."),
            "request URL has an unsupported protocol 'ftp://'",
        ),
        (httpx.LocalProtocolError("Illegal header value b' x'"), "illegal header value b' x'"),
    ],
)
def test_a_failure_reads_as_its_reason(failure: httpx.TransportError, reason: str) -> None:
    assert describe_transport_failure(failure) == reason


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (httpx.ConnectTimeout("", request=REQUEST), "no answer within 10 s"),
        (httpx.ReadTimeout("", request=REQUEST), "no answer within 30 s"),
        (httpx.WriteTimeout("", request=REQUEST), "the request could not be sent within 5 s"),
        (httpx.PoolTimeout("", request=REQUEST), "no free connection within 2.5 s"),
        (httpx.ReadTimeout(""), "no answer in time"),  # no request to read the limit from
    ],
)
def test_a_timeout_names_the_limit_of_the_phase_that_ran_out(
    failure: httpx.TimeoutException, reason: str
) -> None:
    assert describe_transport_failure(failure) == reason


def test_a_limit_given_by_the_caller_wins() -> None:
    failure = httpx.ReadTimeout("", request=REQUEST)
    assert describe_transport_failure(failure, timeout_seconds=2) == "no answer within 2 s"


@pytest.mark.parametrize("kind", every_transport_failure(), ids=lambda kind: kind.__name__)
@pytest.mark.parametrize("text", ["", "line one\nTraceback (most recent call last):"])
def test_no_failure_reads_as_a_class_name_or_more_than_a_line(
    kind: type[httpx.TransportError], text: str
) -> None:
    reason = describe_transport_failure(kind(text))
    assert reason
    assert "\n" not in reason
    assert not any(other.__name__ in reason for other in every_transport_failure()), reason
    assert "Error" not in reason


def test_another_client_s_failure_reads_as_the_os_reason_down_its_chain() -> None:
    """What the CometD client raises wraps aiohttp's error, which wraps the OS error."""
    wrapped = RuntimeError("Cannot connect to host 127.0.0.1:9")
    wrapped.__cause__ = ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed")
    assert describe_connection_failure(wrapped) == "connection refused"
    assert describe_connection_failure(RuntimeError("Server disconnected")) == "server disconnected"
    assert describe_connection_failure(RuntimeError()) == "the connection failed"
