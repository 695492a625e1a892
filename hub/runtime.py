"""The hub's live state, owned by one typed object, and the small interfaces it sits behind.

`create_app` builds one `Runtime` and handlers reach it with `runtime_of(request)`. The tunnels, the purses, the
rate limiter and the key cache are typed by what the rest of the hub calls on them (the protocols below), so an
implementation that shares them between replicas (Redis, PostgreSQL) can replace today's in-memory ones without
touching their callers. "Something changed" goes through `changes`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from litestar import Litestar
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.signin.throttle import SignInThrottle

if TYPE_CHECKING:
    from hub.agents.disputes import Disputes
    from hub.agents.live import Link
    from hub.agents.prober import Prober
    from hub.background import Background
    from hub.changes import Changes
    from hub.db import Database
    from hub.drain import Drain
    from hub.keys.cache import Caller
    from hub.keys.trust import Scope as TrustScope
    from hub.metrics import Metrics
    from hub.outage import Outage
    from hub.proxy.admission import Admission
    from hub.proxy.bills import Bills
    from hub.proxy.recorder import Recorder
    from hub.proxy.relay import Proxy
    from hub.quotas.limiter import Scope, Ticket
    from hub.quotas.service import Limits
    from hub.settings import Settings
    from hub.signin.providers import Provider
    from hub.tokenizers.counting import Tokenizers


class Tunnels(Protocol):
    """The agents connected now, and which of them may serve whom."""

    links: dict[int, Link]
    changed: list[Callable[[], None]]  # called when a tunnel comes, goes or changes (the scheduler wakes waiters)

    def add(self, link: Link) -> Link | None: ...
    def remove(self, link: Link) -> None: ...
    def notify(self) -> None: ...
    def get(self, agent_id: int) -> Link | None: ...
    def configure(self, agent_id: int, *, name: str, shared: bool, paused: bool) -> None: ...
    def vouch(self, agent_id: int, *, verified: bool) -> None: ...
    async def disconnect(self, agent_id: int, reason: str) -> None: ...
    def serving(self, model: str, user_id: int, scope: TrustScope = ..., api: str = ...) -> list[Link]: ...
    def reachable(self, user_id: int, scope: TrustScope = ...) -> dict[str, list[Link]]: ...
    def club_models(self) -> dict[str, int]: ...


class Balances(Protocol):
    """Members' balances with the credits held for requests in flight and the costs not yet written."""

    async def reserve(self, user_id: int, amount: int, call_id: str) -> None: ...
    def release(self, user_id: int, call_id: str, *, cost: int = 0) -> None: ...
    def written(self, cost_by_user: dict[int, int], balances: dict[int, int]) -> None: ...
    def stale(self, user_id: int) -> None: ...
    def stale_all(self) -> None: ...
    def held_by(self, user_id: int) -> int: ...
    def sweep(self) -> int: ...


class RateLimits(Protocol):
    """Requests per minute, tokens per day and concurrency, per member and per key."""

    def expire(self) -> None: ...
    def needs_seed(self, scope: Scope) -> bool: ...
    def seed(self, scope: Scope, used_today: int) -> None: ...
    def used_today(self, scope: Scope) -> int | None: ...
    def admit(self, checks: list[tuple[Scope, Limits]], estimate: int) -> Ticket: ...
    def finish(self, ticket: Ticket, used_tokens: int) -> None: ...
    def headers(self, checks: list[tuple[Scope, Limits]]) -> dict[str, str]: ...


class KeyLookup(Protocol):
    """API key checks, cached for a few seconds."""

    async def lookup(self, session: Callable[[], AbstractAsyncContextManager[AsyncSession]], secret: str) -> Caller: ...
    def clear(self) -> None: ...


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    database: Database
    providers: dict[str, Provider]
    changes: Changes
    registry: Tunnels
    keys: KeyLookup
    purses: Balances
    admission: Admission
    recorder: Recorder
    bills: Bills
    proxy: Proxy
    metrics: Metrics
    background: Background
    disputes: Disputes
    tokenizers: Tokenizers
    prober: Prober
    drain: Drain
    outage: Outage  # the database is unreachable: /v1 serves what was read last (hub.outage)
    signin_throttle: SignInThrottle = field(default_factory=SignInThrottle)  # sign-in links asked for by email


def runtime_of(owner: Any) -> Runtime:
    """The runtime of an app, or of the app a request, a WebSocket or a test client belongs to."""
    app: Litestar = owner if isinstance(owner, Litestar) else owner.app
    runtime: Runtime = app.state.runtime
    return runtime
