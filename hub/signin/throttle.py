"""How often sign-in links may be asked for by email: per address, per client network and per invitation, in
bounded memory."""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

PER_ADDRESS = 3  # links per email address per window: enough for "it did not arrive, send another"
PER_CLIENT = 10  # requests per client IP (an IPv6 client: per /64) per window, whatever the addresses
PER_INVITATION = 20  # links asked for through one invitation's page per window, whatever the addresses
WINDOW_SECONDS = 15 * 60
MAX_KEYS = 10_000  # each window remembers at most this many keys; when all still count, new ones wait


def client_key(host: str) -> str:
    """Who a client is for counting: its IPv4 address, or its IPv6 /64 (one host usually has a whole /64)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class Window:
    """At most `limit` hits per key in any `seconds`, for at most `max_keys` keys.

    A key is forgotten only once its window has passed, so a full table never resets anyone's count: a new key
    waits instead until the least recent key's window has passed.
    """

    limit: int
    seconds: float
    max_keys: int = MAX_KEYS
    clock: Callable[[], float] = time.monotonic
    hits: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)

    def full(self, key: str) -> float:
        """Seconds until `key` may hit again; 0 when it may now."""
        now = self.clock()
        times = self.hits.get(key)
        if times is None:
            return self._room(now)
        while times and times[0] <= now - self.seconds:
            times.popleft()
        if len(times) < self.limit:
            return 0.0
        return times[0] + self.seconds - now

    def hit(self, key: str) -> None:
        """Count one hit for `key`, which `full` just let through."""
        times = self.hits.setdefault(key, deque(maxlen=self.limit))
        times.append(self.clock())
        self.hits.move_to_end(key)

    def _room(self, now: float) -> float:
        """0 when a new key fits (forgetting keys whose window has passed); else the seconds until one has."""
        while len(self.hits) >= self.max_keys:
            latest = next(iter(self.hits.values()))  # the least recently hit key's latest hit
            if latest and latest[-1] > now - self.seconds:
                return latest[-1] + self.seconds - now
            self.hits.popitem(last=False)
        return 0.0


@dataclass
class SignInThrottle:
    """Asking for a sign-in link: counted for the address and for the client whether or not the address is a
    member's, so being refused says nothing about membership; and for the invitation asked through, if any."""

    addresses: Window = field(default_factory=lambda: Window(PER_ADDRESS, WINDOW_SECONDS))
    clients: Window = field(default_factory=lambda: Window(PER_CLIENT, WINDOW_SECONDS))
    invitations: Window = field(default_factory=lambda: Window(PER_INVITATION, WINDOW_SECONDS))

    def take(self, email: str, client: str, invitation: int | None = None) -> float:
        """Count one request, or return the seconds to wait (and count nothing)."""
        client = client_key(client)
        waits = [self.addresses.full(email), self.clients.full(client)]
        if invitation is not None:
            waits.append(self.invitations.full(str(invitation)))
        wait = max(waits)
        if wait > 0:
            return wait
        self.addresses.hit(email)
        self.clients.hit(client)
        if invitation is not None:
            self.invitations.hit(str(invitation))
        return 0.0
