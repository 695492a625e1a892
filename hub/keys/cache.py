"""A short-lived cache of API key checks, so the `/v1` hot path usually touches no database at all.

Entries live a few seconds; revoking a key, changing its settings or whose GPUs it reaches, or suspending a
member clears this process's cache at once. While the database is unreachable (`hub.outage`), an expired entry is
still served if it was read at most the outage's `seconds` ago; a key not in the cache then gets 503 with
Retry-After.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from hub import tokens
from hub.db import utcnow
from hub.errors import InvalidApiKey
from hub.keys import service as keys
from hub.keys.trust import ANY, Scope
from hub.outage import Outage, is_outage


@dataclass(frozen=True)
class Caller:
    """Who is calling `/v1`: the member, the key, whose GPUs and which models the key may reach, as plain values."""

    user_id: int
    key_id: int
    expires_at: datetime | None
    scope: Scope = ANY
    models: frozenset[str] = frozenset()  # the models the key may use; empty: every model

    def may_use(self, model: str) -> bool:
        return not self.models or model in self.models


class KeyCache:
    def __init__(self, ttl_seconds: float = 10.0, max_entries: int = 10_000, outage: Outage | None = None) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self.outage = outage or Outage()
        self.entries: dict[str, tuple[float, Caller]] = {}  # digest -> (good until, caller)

    async def lookup(self, session: Callable[[], AbstractAsyncContextManager[AsyncSession]], secret: str) -> Caller:
        digest = tokens.digest(secret)
        hit = self.entries.get(digest)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            caller = hit[1]
            if caller.expires_at is None or caller.expires_at > utcnow():
                return caller
            self.entries.pop(digest, None)
            raise InvalidApiKey("Incorrect API key provided. Create one on the hub's API keys page.")
        if self.outage.degraded:
            return self._stale(digest, hit)
        try:
            async with session() as db:
                user, key = await keys.authenticate(db, secret)
                scope = await keys.scope_of(db, key)
                models = await keys.models_of(db, key)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self.outage.noticed(exc)
            return self._stale(digest, self.entries.get(digest))  # not `hit`: revoked meanwhile is cleared
        self.outage.answered()
        caller = Caller(user_id=user.pk, key_id=key.id or 0, expires_at=key.expires_at, scope=scope, models=models)
        if len(self.entries) >= self.max_entries:
            self.entries.clear()
        self.entries[digest] = (now + self.ttl, caller)
        return caller

    def _stale(self, digest: str, hit: tuple[float, Caller] | None) -> Caller:
        """During an outage: the caller read last, unless it was never read, too long ago, or the key has expired."""
        if hit is None or not self.outage.usable(hit[0] - self.ttl):
            raise self.outage.unavailable("this API key")
        caller = hit[1]
        if caller.expires_at is not None and caller.expires_at <= utcnow():
            self.entries.pop(digest, None)
            raise InvalidApiKey("Incorrect API key provided. Create one on the hub's API keys page.")
        return caller

    def clear(self) -> None:
        self.entries.clear()
