"""A member's standing in the club: balance, limits and what is left of them today, and when to warn them.

Shown on every signed-in page, so it is read with one query of indexed single-row lookups (the member's account,
their overrides, a few club settings, whether anything costs credits), plus, only for a member with a daily token
limit, the sum of today's tokens (the same index admission seeds its count from). Holds come from the hub's
memory (`hub.ledger.purses`), never from the database.

The low-balance warning shows when the credits a member has available fall below the club's threshold (the
`low_balance_warning` setting, in micro-credits; 1 credit when unset; 0 turns it off), and only while some model
has a price: in a club where everything is free a balance means nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, or_
from sqlalchemy import select as select_columns
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import User
from hub.accounts.service import require_admin
from hub.club.models import ClubSetting
from hub.club.service import read_number, stage
from hub.errors import BadRequest
from hub.ledger.models import MICRO, Account
from hub.parsing import format_credits
from hub.pricing.models import Price
from hub.quotas.models import MemberPolicy
from hub.quotas.service import ALLOWANCE_KEY, DEFAULTS, FIELDS, Limits
from hub.usage.models import UsageRecord
from hub.usage.service import start_of_day

WARNING_KEY = "low_balance_warning"
DEFAULT_WARNING = MICRO  # 1 credit
MAX_WARNING = 1_000_000 * MICRO


@dataclass(frozen=True)
class Standing:
    balance: int  # micro-credits, as written
    held: int  # for requests in flight and costs not yet written (the hub's memory)
    own: Limits  # the member's overrides (None: the club default applies)
    defaults: Limits  # the club's defaults (None: unlimited)
    own_allowance: int | None
    default_allowance: int
    warn_below: int  # micro-credits; 0: never warn
    charges: bool  # some model has a price
    tokens_today: int | None = None  # read only when a daily token limit applies

    @property
    def available(self) -> int:
        return self.balance - self.held

    @property
    def limits(self) -> Limits:
        """What admission enforces: each override, else the club default."""
        return Limits(**{name: _first(getattr(self.own, name), getattr(self.defaults, name)) for name in FIELDS})

    @property
    def allowance(self) -> int:
        return self.default_allowance if self.own_allowance is None else self.own_allowance

    @property
    def tokens_left(self) -> int | None:
        per_day = self.limits.tokens_per_day
        if per_day is None or self.tokens_today is None:
            return None
        return max(0, per_day - self.tokens_today)

    @property
    def low(self) -> bool:
        return self.charges and self.warn_below > 0 and self.available < self.warn_below


def _first(value: int | None, fallback: int | None) -> int | None:
    return fallback if value is None else value


def _number(text: Any) -> int | None:
    return int(text) if isinstance(text, str) and text.isdigit() else None


def _setting(key: str) -> Any:
    return select_columns(col(ClubSetting.value)).where(col(ClubSetting.key) == key).scalar_subquery()


async def standing(db: AsyncSession, user_id: int, *, held: int = 0, used_today: int | None = None) -> Standing:
    """The member's standing; `held` is what the hub's purses hold for them now, `used_today` the tokens admission
    counts for them today when it has counted them (in memory: no sum over the request log on every page)."""

    def own(column: Any) -> Any:
        return select_columns(column).where(col(MemberPolicy.user_id) == user_id).scalar_subquery()

    priced = or_(col(Price.input_per_million) > 0, col(Price.output_per_million) > 0, col(Price.audio_per_minute) > 0)
    query = select_columns(
        select_columns(col(Account.balance)).where(col(Account.user_id) == user_id).scalar_subquery(),
        *(own(getattr(MemberPolicy, name)) for name in FIELDS),
        own(col(MemberPolicy.allowance)),
        *(_setting(DEFAULTS[name]) for name in FIELDS),
        _setting(ALLOWANCE_KEY),
        _setting(WARNING_KEY),
        exists().where(priced),
    )
    row = (await db.exec(query)).one()  # type: ignore[call-overload]
    balance, rpm, per_day, concurrency, allowance, *club, warning, charges = row
    warn = _number(warning)
    found = Standing(
        balance=int(balance or 0),
        held=held,
        own=Limits(rpm, per_day, concurrency),
        defaults=Limits(*(_number(value) for value in club[:3])),
        own_allowance=None if allowance is None else int(allowance),
        default_allowance=_number(club[3]) or 0,
        warn_below=DEFAULT_WARNING if warn is None else warn,
        charges=bool(charges),
    )
    if found.limits.tokens_per_day is None:
        return found
    used = await tokens_today(db, user_id) if used_today is None else used_today
    return Standing(**{**found.__dict__, "tokens_today": used})


async def tokens_today(db: AsyncSession, user_id: int) -> int:
    """Tokens the member's requests used today (UTC), as admission counts them when it starts the day."""
    used = func.coalesce(func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens), 0)
    query = select(used).where(UsageRecord.user_id == user_id, UsageRecord.created_at >= start_of_day())
    return int((await db.exec(query)).one())


# The threshold ------------------------------------------------------------------------------------------


async def low_balance_warning(db: AsyncSession) -> int:
    """Micro-credits below which members are warned (0: never)."""
    found = await read_number(db, WARNING_KEY)
    return DEFAULT_WARNING if found is None else found


async def set_low_balance_warning(db: AsyncSession, actor: User, micro: int) -> int:
    require_admin(actor)
    if not 0 <= micro <= MAX_WARNING:
        raise BadRequest(f"The low-balance warning must be between 0 and {format_credits(MAX_WARNING)} credits.")
    await stage(db, WARNING_KEY, micro)
    await db.commit()
    return micro
