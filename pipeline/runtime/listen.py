"""Whether a port can be listened on, checked before anything else starts.

Every listener sfamp opens (the health endpoint, the sandboxes, the embedded
broker) reports a taken port as one :class:`~pipeline.errors.ListenError` that
names the option or setting that changes it, instead of a traceback from deep
inside a server's start-up.
"""

from __future__ import annotations

import socket

from pipeline.errors import ListenError


def bind_error(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be listened on, or None when it can.

    Binds the way asyncio servers and the embedded broker do (``SO_REUSEADDR``), so a
    port left in TIME_WAIT counts as free and one another process listens on does not.
    Port 0 (any free port) is always free.
    """
    with socket.socket(_family(host)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen()
        except OSError as exc:
            return exc
    return None


def check_listen(what: str, host: str, port: int, change: str, *, change_host: str) -> None:
    """Raise :class:`ListenError` when ``host:port`` cannot be listened on, saying
    ``change`` when the port is the problem and ``change_host`` when the host is."""
    refused = bind_error(host, port)
    if refused is not None:
        raise ListenError(what, host, port, refused, change, change_host=change_host)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
