"""One verified TLS context for every HTTPS client of the process.

httpx builds a new ``ssl.SSLContext`` for each ``AsyncClient`` it is not given one
for, and loading the CA bundle into it costs about 50 ms of CPU: every command
paid that once per client before its first request, a backfill twice, the
console at each Salesforce sign-in. :func:`verified_context` builds the context
once, as httpx would (certifi's bundle, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``
when set), and every client shares it; an ``SSLContext`` is made to be shared
between connections.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def verified_context() -> ssl.SSLContext:
    """The process's context for verified HTTPS (built at the first call, then shared)."""
    return httpx.create_ssl_context()
