"""Letting a request in: the key's models, quotas, then credits held for it against the key's budget and the
member's balance, all in memory, so admission rarely waits for the database.

After the request, `finish` frees its quota slot and its holds at once and queues what it cost and used for the
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
from sqlmodel import col, select

from hub.db import Database
from hub.errors import InsufficientCredits, ModelNotAllowed
from hub.ledger.batch import Charge
from hub.outage import Outage, is_outage
from hub.pricing import service as pricing
from hub.pricing.service import Rate
from hub.proxy.bounds import Limits
from hub.proxy.meter import Counts, estimate_tokens
from hub.proxy.recorder import Finished, Recorder
from hub.quotas import service as quotas
from hub.quotas.budgets import Budgets, period_start
from hub.quotas.limiter import Limiter, Scope, Ticket
from hub.quotas.service import KeyRules
from hub.quotas.service import Limits as QuotaLimits
from hub.runtime import Balances, RateLimits
from hub.usage.models import UsageRecord
from hub.usage.service import start_of_day

CACHE_SECONDS = 10.0
_WHAT = {"rate": "this model's price", "limits": "your limits", "fee": "the club's fee", "budget": "this key's spend"}


def not_allowed(model: str, models: frozenset[str] | set[str]) -> ModelNotAllowed:
    """403 for a model outside the key's allowlist: the same whether a GPU serves it now or not."""
    return ModelNotAllowed(
        f"This API key may not use the model '{model}'; it may use: {', '.join(sorted(models))}. "
        "Its owner can change that on the API keys page."
    )


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
    key_id: int = 0  # its spend counts against the key's budget, if the key has one (`Budgets.finish`)


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
    budgets: Budgets = field(default_factory=Budgets)
    cache: dict[tuple[str, Any], _Cached] = field(default_factory=dict)
    loading: dict[tuple[str, Any], asyncio.Future[Any]] = field(default_factory=dict)
    outage: Outage = field(default_factory=Outage)

    def forget(self) -> None:
        """Prices, fees or limits changed: read them again on the next request."""
        self.cache.clear()

    def forget_key(self, user_id: int, key_id: int) -> None:
        """One key's limits or budget changed: read that key's again on its next request (the rest stay cached)."""
        self.cache.pop(("limits", (user_id, key_id)), None)

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
        """The key's models, quotas, then the holds; `size` gives the request's limits from the model's default
        `max_tokens`, and a `free` request (Anthropic's count_tokens) holds and costs nothing."""
        rate: Rate = await self._cached(("rate", model), lambda db: pricing.rate_for(db, model))
        rules: KeyRules
        member, rules = await self._cached(
            ("limits", (user_id, key_id)), lambda db: quotas.limits_for(db, user_id, key_id)
        )
        if rules.models and model not in rules.models:
            raise not_allowed(model, rules.models)
        limits = size(rate.default_max_tokens)
        checks: list[tuple[Scope, QuotaLimits]] = [(("user", user_id), member)]
        if rules.limits != QuotaLimits():
            checks.append((("key", key_id), rules.limits))
        for scope, quota in checks:
            if quota.tokens_per_day is not None and self.limiter.needs_seed(scope):
                self.limiter.seed(scope, await self._used_today(scope))
        ticket = self.limiter.admit(checks, estimate_tokens(limits.prompt_chars) + limits.completion)
        # The hold covers the most the hub would believe of the provider, so the charge never exceeds it.
        amount = 0 if free else rate.cost(limits.prompt, limits.completion, limits.audio_ms)
        admitted = Pass(call_id, user_id, rate, ticket, held=0, limits=limits, key_id=key_id)
        if amount <= 0:
            return admitted
        try:
            admitted.fee_bps = await self._cached(("fee", None), pricing.fee_bps)
            for kind in rules.budget.kinds:
                if self.budgets.needs_seed(key_id, kind):
                    await self._seed_budget(key_id, kind)
            await self.purses.reserve(user_id, amount, call_id)
            # The balance first (a member out of credits hears that), then the key's budget with no await between
            # its check and its hold; a refusal gives the credit hold back.
            if rules.budget.kinds:
                try:
                    self.budgets.reserve(key_id, rules.budget, amount, call_id)
                except BaseException:
                    self.purses.release(user_id, call_id)
                    raise
        except InsufficientCredits:  # the balance, or the key's budget (KeyBudgetExceeded)
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

    async def _seed_budget(self, key_id: int, kind: str) -> None:
        """What the key spent in the current period, read once per period; concurrent requests share one read."""
        period = self.budgets.current(kind)
        key = ("budget", (key_id, kind, period))
        loading = self.loading.get(key)
        if loading is None:
            loading = self.loading[key] = asyncio.ensure_future(self._read_spent(key_id, kind, period))
        spent: int = await asyncio.shield(loading)
        self.budgets.seed(key_id, kind, period, spent)

    async def _read_spent(self, key_id: int, kind: str, period: int) -> int:
        key = ("budget", (key_id, kind, period))
        try:
            if self.outage.degraded:
                raise self.outage.unavailable(_WHAT["budget"])
            late = self.budgets.late_calls(key_id, kind, period)  # counted from memory, not twice
            query = select(func.coalesce(func.sum(UsageRecord.cost), 0)).where(
                UsageRecord.key_id == key_id, UsageRecord.created_at >= period_start(kind, period)
            )
            if late:
                query = query.where(col(UsageRecord.request_id).not_in(late))
            try:
                async with self.database.session() as db:
                    return int((await db.exec(query)).one())
            except Exception as exc:
                if not is_outage(exc):
                    raise
                self.outage.noticed(exc)
                raise self.outage.unavailable(_WHAT["budget"]) from None
        finally:
            self.loading.pop(key, None)

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
            # What the ledger will charge: the member's own GPU (or a GPU gone, whose owner earns nothing) is free.
            charged = provider_id is not None and provider_id != admitted.user_id
            self.budgets.finish(admitted.key_id, admitted.call_id, cost if charged else 0)
        finally:
            try:
                self.limiter.finish(admitted.ticket, tokens)
            finally:
                finished = self._queue(admitted, provider_id, cost, usage, agent_id)
        return finished

    def _queue(
        self, admitted: Pass, provider_id: int | None, cost: int, usage: dict[str, Any] | None, agent_id: int | None
    ) -> Finished | None:
        """Free the credit hold and queue the cost and the usage row for the recorder."""
        charge = None
        finished = None
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
