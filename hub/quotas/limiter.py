"""Enforcing limits at admission, in this process: requests per minute, tokens per day, concurrent requests.

Admission is one synchronous step on the event loop (check everything, then count), so however many requests
arrive at once none is admitted past a limit. Requests per minute use the `limits` library's moving window;
tokens per day count what was used today (seeded once a day from the usage table) plus what admitted requests
may still use; concurrency counts requests in flight.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from hub.errors import TooManyRequests
from hub.quotas.service import Limits

Scope = tuple[str, int]  # ("user", id) or ("key", id)


class QuietMemoryStorage(MemoryStorage):
    """`limits`' in-memory storage without its expiry thread.

    The stock storage starts a `threading.Timer` after nearly every hit to drop old entries, which costs a new
    thread (and the GIL hand-offs that come with it) on the hot path. The moving window ignores old entries by
    itself, so dropping them is only about memory: housekeeping does it once a minute through `expire`.
    """

    def _MemoryStorage__schedule_expiry(self) -> None:  # the name `limits` calls internally
        pass

    def expire(self) -> None:
        self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


@dataclass
class Ticket:
    """What one admitted request holds until it finishes."""

    scopes: list[tuple[Scope, Limits]]
    day: int
    reserved: int
    headers: dict[str, str] = field(default_factory=dict)


def _today() -> int:
    """Today in UTC, as days since 1970 (cheaper than formatting a date on every request)."""
    return int(time.time() // 86_400)


def _seconds_to_midnight() -> int:
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((midnight - now).total_seconds()))


class Limiter:
    def __init__(self) -> None:
        self.storage = QuietMemoryStorage()
        self.window = MovingWindowRateLimiter(self.storage)
        self.in_flight: dict[Scope, int] = {}
        self.tokens: dict[tuple[Scope, int], int] = {}  # used today plus reserved by admitted requests

    def expire(self) -> None:
        """Forget rate counters that have left their window and token counts of past days."""
        self.storage.expire()
        today = _today()
        for key in [key for key in self.tokens if key[1] != today]:
            del self.tokens[key]

    def needs_seed(self, scope: Scope) -> bool:
        return (scope, _today()) not in self.tokens

    def seed(self, scope: Scope, used_today: int) -> None:
        self.tokens.setdefault((scope, _today()), used_today)

    def used_today(self, scope: Scope) -> int | None:
        """Tokens counted today (used, plus reserved by requests in flight); None before the day's first request."""
        return self.tokens.get((scope, _today()))

    def admit(self, checks: list[tuple[Scope, Limits]], estimate: int) -> Ticket:
        """Count the request against every scope, or refuse it without counting anything."""
        day = _today()
        for scope, limits in checks:
            self._check(scope, limits, day, estimate)
        ticket = Ticket(scopes=checks, day=day, reserved=estimate)
        for scope, limits in checks:
            if limits.rpm is not None:
                self.window.hit(RateLimitItemPerMinute(limits.rpm), *map(str, scope))
            self.in_flight[scope] = self.in_flight.get(scope, 0) + 1
            self.tokens[(scope, day)] = self.tokens.get((scope, day), 0) + estimate
        ticket.headers = self.headers(checks)
        return ticket

    def _check(self, scope: Scope, limits: Limits, day: int, estimate: int) -> None:
        who = "this API key" if scope[0] == "key" else "you"
        if limits.rpm is not None and not self.window.test(RateLimitItemPerMinute(limits.rpm), *map(str, scope)):
            reset = self.window.get_window_stats(RateLimitItemPerMinute(limits.rpm), *map(str, scope)).reset_time
            wait = max(1, math.ceil(reset - time.time()))
            raise self._refuse(
                f"Rate limit reached: {who} may send {limits.rpm} requests per minute.", wait, scope, limits
            )
        if limits.concurrency is not None and self.in_flight.get(scope, 0) >= limits.concurrency:
            raise self._refuse(
                f"Concurrency limit reached: {who} may have {limits.concurrency} requests in flight.", 1, scope, limits
            )
        used = self.tokens.get((scope, day), 0)
        if limits.tokens_per_day is not None and used + estimate > limits.tokens_per_day:
            raise self._refuse(
                f"Daily token limit reached: {who} may use {limits.tokens_per_day} tokens a day "
                f"({used} used or reserved, this request may need {estimate}).",
                _seconds_to_midnight(),
                scope,
                limits,
            )

    def _refuse(self, message: str, retry_after: int, scope: Scope, limits: Limits) -> TooManyRequests:
        error = TooManyRequests(message, retry_after=retry_after)
        error.headers = self.headers([(scope, limits)])
        return error

    def finish(self, ticket: Ticket, used_tokens: int) -> None:
        """The request is over: free its slot and replace its token reservation with what it really used."""
        for scope, _ in ticket.scopes:
            self.in_flight[scope] = max(0, self.in_flight.get(scope, 0) - 1)
            key = (scope, ticket.day)
            if key in self.tokens:
                self.tokens[key] = max(0, self.tokens[key] - ticket.reserved + used_tokens)

    def headers(self, checks: list[tuple[Scope, Limits]]) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers for the tightest limits that apply."""
        headers: dict[str, str] = {}
        for scope, limits in checks:
            if limits.rpm is not None and "x-ratelimit-limit-requests" not in headers:
                stats = self.window.get_window_stats(RateLimitItemPerMinute(limits.rpm), *map(str, scope))
                headers["x-ratelimit-limit-requests"] = str(limits.rpm)
                headers["x-ratelimit-remaining-requests"] = str(max(0, stats.remaining))
                headers["x-ratelimit-reset-requests"] = f"{max(0, math.ceil(stats.reset_time - time.time()))}s"
            if limits.tokens_per_day is not None and "x-ratelimit-limit-tokens" not in headers:
                used = self.tokens.get((scope, _today()), 0)
                headers["x-ratelimit-limit-tokens"] = str(limits.tokens_per_day)
                headers["x-ratelimit-remaining-tokens"] = str(max(0, limits.tokens_per_day - used))
                headers["x-ratelimit-reset-tokens"] = f"{_seconds_to_midnight()}s"
        return headers
