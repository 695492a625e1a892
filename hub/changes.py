"""One notifier for "something changed" that live state must follow at once.

A page that revokes a key, suspends a member, sets a price or pauses an agent publishes one change here; the
parts that keep live state (the key cache, the admission cache, the purses, the tunnel registry) subscribe to the
changes they follow, once, where the app is built. Today's `Changes` delivers in this process; a replica-aware
one would also publish to the others (through Redis or PostgreSQL's NOTIFY) and deliver what they publish.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar


@dataclass(frozen=True)
class KeysChanged:
    """A key was revoked or reaches other GPUs now; or a member's role or standing changed (their keys with it)."""


@dataclass(frozen=True)
class PricesChanged:
    """Prices, the club fee or limits changed: read them again on the next request."""


@dataclass(frozen=True)
class KeyLimitsChanged:
    """One key's limits or budget changed: admission reads that key's again on its next request."""

    user_id: int
    key_id: int


@dataclass(frozen=True)
class BalanceChanged:
    """A balance changed outside the recorder (a grant, a deduction, a payment, a refund); None: any member's."""

    user_id: int | None = None


@dataclass(frozen=True)
class AgentChanged:
    """An agent's settings changed: a connected tunnel follows at once, not at its next connect."""

    agent_id: int
    name: str
    shared: bool
    paused: bool
    verified: bool


@dataclass(frozen=True)
class AgentRevoked:
    """An agent's token was revoked: its tunnel closes."""

    agent_id: int
    reason: str


Change = KeysChanged | PricesChanged | KeyLimitsChanged | BalanceChanged | AgentChanged | AgentRevoked
C = TypeVar("C", bound=Change)
Handler = Callable[[Any], Awaitable[None] | None]


class Changes:
    """Subscribers by kind of change; `publish` calls each, in the order they subscribed."""

    def __init__(self) -> None:
        self.handlers: dict[type, list[Handler]] = defaultdict(list)

    def subscribe(self, kind: type[C], handler: Callable[[C], Awaitable[None] | None]) -> None:
        self.handlers[kind].append(handler)

    async def publish(self, change: Change) -> None:
        for handler in self.handlers.get(type(change), ()):
            result = handler(change)
            if result is not None:
                await result
