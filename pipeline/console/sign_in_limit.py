"""How many failed sign-ins a client address may make: the token cannot be guessed at speed.

At most :data:`MAX_FAILURES` failed sign-ins per address in any :data:`WINDOW_SECONDS`
(a sliding window). Once an address has made that many, its further attempts are
refused without looking at the token until the oldest of them leaves the window;
a successful sign-in forgets the address. A steady guesser gets five tries per five
minutes, about 1,440 a day: a token made with ``secrets.token_urlsafe()`` is out of reach.

IPv6 clients are counted by their /64 network: one host is usually given a whole
/64, and counting each of its addresses apart would give it 2^64 fresh counts.
An IPv4 address mapped into IPv6 counts as the IPv4 address.

Behind a reverse proxy every client has the proxy's address, so they share one
count: guessing stays limited, and the operator may have to wait out a window.

Memory is bounded: at most :data:`MAX_ADDRESSES` addresses are tracked, the one
whose last failure is oldest is dropped first, and each keeps at most
:data:`MAX_FAILURES` times. Time is an argument (``clock``), so tests need no waiting.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

# A mistyped token or two costs the operator nothing; a guesser is slowed to one try a minute.
MAX_FAILURES: Final = 5
WINDOW_SECONDS: Final = 300.0
# About 2 MB at most (measured: IPv6 keys, five times each). An attacker with more
# addresses than this could push out its own counts, but each address has its own anyway.
MAX_ADDRESSES: Final = 4096
IPV6_PREFIX: Final = 64


def client_key(address: str | None) -> str:
    """What ``address`` is counted as: an IPv4 address, an IPv6 /64, or the text as given."""
    if not address:
        return "unknown"
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/{IPV6_PREFIX}", strict=False))
    return str(parsed)


class SignInLimiter:
    """Failed sign-ins per client address in a sliding window (see the module docstring)."""

    def __init__(
        self,
        *,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW_SECONDS,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self._max_addresses = max_addresses
        self._clock = clock
        # address -> times of its failures in the window, oldest first; least recent first
        self._failures: OrderedDict[str, tuple[float, ...]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, address: str | None) -> int:
        """Whole seconds before ``address`` may try again; 0 when it may now."""
        now = self._clock()
        times = self._recent(client_key(address), now)
        if times is None or len(times) < self.max_failures:
            return 0
        return max(1, math.ceil(times[0] + self.window - now))

    def failed(self, address: str | None) -> int:
        """Count a failed sign-in; the seconds ``address`` must now wait (0: none)."""
        key = client_key(address)
        now = self._clock()
        times = self._recent(key, now) or ()
        self._failures[key] = (*times, now)[-self.max_failures :]
        self._failures.move_to_end(key)
        while len(self._failures) > self._max_addresses:
            self._failures.popitem(last=False)
        return self.retry_after(address)

    def succeeded(self, address: str | None) -> None:
        """A successful sign-in: the address starts afresh."""
        self._failures.pop(client_key(address), None)

    def _recent(self, key: str, now: float) -> tuple[float, ...] | None:
        """The address's failures still in the window (None, and forgotten, if none is)."""
        times = self._failures.get(key)
        if times is None:
            return None
        times = tuple(t for t in times if t > now - self.window)
        if not times:
            del self._failures[key]
            return None
        self._failures[key] = times
        return times
