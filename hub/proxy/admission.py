"""Letting a request in: quotas, then credits held for it, both in memory, so admission rarely waits for the database.

After the request, `finish` frees its quota slot and its hold at once and queues what it cost and used for the
recorder, which writes many finished requests in one transaction. While the database is unreachable
(`hub.outage`), prices, fees and limits read at most the outage's `seconds` ago are used as they were.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func
from sqlmodel import select

from hub.db import Database
from hub.errors import InsufficientCredits
from hub.ledger.batch import Charge
from hub.outage import Outage, is_outage
from hub.pricing import service as pricing
from hub.pricing.service import Rate
from hub.proxy.bounds import Limits
from hub.proxy.meter import Counts, estimate_tokens
from hub.proxy.recorder import Finished, Recorder
from hub.quotas import service as quotas
from hub.quotas.limiter import Limiter, Scope, Ticket
from hub.quotas.service import Limits as QuotaLimits
from hub.runtime import Balances, RateLimits
from hub.usage.models import UsageRecord
from hub.usage.service import start_of_day

CACHE_SECONDS = 10.0
_WHAT = {"rate": "this model's price", "limits": "your limits", "fee": "the club's fee"}


@dataclass
class Pass:
    """What an admitted request holds: a quota ticket and maybe a credit hold."""

    call_id: str
    user_id: int
    rate: Rate
    ticket: Ticket
    held: int
    limits: Limits
    fee_bps: int = 0
    own_only: bool = False
    finished: bool = False


@dataclass
class _Cached:
    until: float
    value: Any


@dataclass
class Admission:
    database: Database
    purses: Balances
    recorder: Recorder
    limiter: RateLimits = field(default_factory=Limiter)
    cache: dict[tuple[str, Any], _Cached] = field(default_factory=dict)
    loading: dict[tuple[str, Any], asyncio.Future[Any]] = field(default_factory=dict)
    outage: Outage = field(default_factory=Outage)

    def forget(self) -> None:
        """Prices, fees or limits changed: read them again on the next request."""
        self.cache.clear()

    async def _cached(self, key: tuple[str, Any], load: Any) -> Any:
        hit = self.cache.get(key)
        if hit is not None and hit.until > time.monotonic():
            return hit.value
        if self.outage.degraded:
            return self._stale(key)
        # However many requests find it stale at once, one of them reads it; the others wait for that answer.
        loading = self.loading.get(key)
        if loading is None:
            loading = self.loading[key] = asyncio.ensure_future(self._load(key, load))
        return await asyncio.shield(loading)

    async def _load(self, key: tuple[str, Any], load: Any) -> Any:
        try:
            async with self.database.session() as db:
                value = await load(db)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self.outage.noticed(exc)
            return self._stale(key)
        finally:
            self.loading.pop(key, None)
        self.outage.answered()
        self.cache[key] = _Cached(time.monotonic() + CACHE_SECONDS, value)
        return value

    def _stale(self, key: tuple[str, Any]) -> Any:
        """During an outage: the value read last, unless it was never read or too long ago."""
        hit = self.cache.get(key)
        if hit is None or not self.outage.usable(hit.until - CACHE_SECONDS):
            raise self.outage.unavailable(_WHAT[key[0]])
        return hit.value

    async def admit(
        self,
        *,
        call_id: str,
        user_id: int,
        key_id: int,
        model: str,
        size: Callable[[int], Limits],
        owns_agent_for_model: bool,
        free: bool = False,
    ) -> Pass:
        """Quotas, then the hold; `size` gives the request's limits from the model's default `max_tokens`, and a
        `free` request (Anthropic's count_tokens) holds and costs nothing."""
        rate: Rate = await self._cached(("rate", model), lambda db: pricing.rate_for(db, model))
        member, own = await self._cached(
            ("limits", (user_id, key_id)), lambda db: quotas.limits_for(db, user_id, key_id)
        )
        limits = size(rate.default_max_tokens)
        checks: list[tuple[Scope, QuotaLimits]] = [(("user", user_id), member)]
        if own != QuotaLimits():
            checks.append((("key", key_id), own))
        for scope, quota in checks:
            if quota.tokens_per_day is not None and self.limiter.needs_seed(scope):
                self.limiter.seed(scope, await self._used_today(scope))
        ticket = self.limiter.admit(checks, estimate_tokens(limits.prompt_chars) + limits.completion)
        # The hold covers the most the hub would believe of the provider, so the charge never exceeds it.
        amount = 0 if free else rate.cost(limits.prompt, limits.completion, limits.audio_ms)
        admitted = Pass(call_id=call_id, user_id=user_id, rate=rate, ticket=ticket, held=0, limits=limits)
        if amount <= 0:
            return admitted
        admitted.fee_bps = await self._cached(("fee", None), pricing.fee_bps)
        try:
            await self.purses.reserve(user_id, amount, call_id)
        except InsufficientCredits:
            if not owns_agent_for_model:
                self.limiter.finish(ticket, 0)
                raise
            admitted.own_only = True  # their own GPU costs nothing, so no hold is needed
            return admitted
        except BaseException:
            self.limiter.finish(ticket, 0)
            raise
        admitted.held = amount
        return admitted

    async def _used_today(self, scope: Scope) -> int:
        """Tokens used today, read once a day per member and key; during an outage, a day never read is refused."""
        if self.outage.degraded:
            raise self.outage.unavailable("what you used today")
        column = UsageRecord.user_id if scope[0] == "user" else UsageRecord.key_id
        try:
            async with self.database.session() as db:
                total = (
                    await db.exec(
                        select(
                            func.coalesce(func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens), 0)
                        ).where(column == scope[1], UsageRecord.created_at >= start_of_day())
                    )
                ).one()
        except Exception as exc:
            if not is_outage(exc):
                raise
            self.outage.noticed(exc)
            raise self.outage.unavailable("what you used today") from None
        return int(total)

    def finish(
        self,
        admitted: Pass,
        *,
        provider_id: int | None,
        counts: Counts,
        delivered: bool,
        usage: dict[str, Any] | None,
        agent_id: int | None = None,
    ) -> Finished | None:
        """The request is over: quotas and its hold now; cost and usage are queued for the recorder (and returned,
        for the bill the agent keeps).

        Each step runs even if the one before it raised: a slot or a hold must never stay taken.
        """
        if admitted.finished:
            return None
        admitted.finished = True
        tokens = counts.prompt_tokens + counts.completion_tokens if delivered else 0
        cost = admitted.rate.cost(counts.prompt_tokens, counts.completion_tokens, counts.audio_ms) if delivered else 0
        cost = min(cost, admitted.held)  # what was not held was never owed (a free model, or the member's own GPU)
        finished = None
        try:
            self.limiter.finish(admitted.ticket, tokens)
        finally:
            charge = None
            try:
                if admitted.held:
                    self.purses.release(admitted.user_id, admitted.call_id, cost=cost)
                    memo = str(usage["model"]) if usage else ""
                    charge = Charge(admitted.call_id, admitted.user_id, provider_id, cost, admitted.fee_bps, memo)
            finally:
                if charge is not None or usage is not None:
                    finished = Finished(charge, usage, agent_id=agent_id)
                    try:
                        self.recorder.add(finished)
                    except BaseException:
                        if charge is not None:  # it will never be written: stop reserving it
                            self.purses.written({charge.consumer_id: charge.cost}, {})
                        raise
        return finished
