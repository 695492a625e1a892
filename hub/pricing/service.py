"""Prices, the club fee, and what a request costs. All integer micro-credits."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import User
from hub.accounts.service import require_admin
from hub.club.service import read_number, stage
from hub.errors import BadRequest
from hub.parsing import clean_text
from hub.pricing.models import DEFAULT, Price

FEE_KEY = "fee_bps"
PER_MILLION = 1_000_000
MS_PER_MINUTE = 60_000


@dataclass(frozen=True)
class Rate:
    input_per_million: int
    output_per_million: int
    default_max_tokens: int = 1024
    audio_per_minute: int = 0

    def cost(self, prompt_tokens: int, completion_tokens: int, audio_ms: int = 0) -> int:
        """Rounded up to the next micro-credit, so many tiny requests are never free by rounding.

        Tokens are priced per million and audio per minute (60,000 ms); both parts are summed over one common
        denominator so the total is rounded once, not each part.
        """
        tokens = prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million
        total = tokens * MS_PER_MINUTE + audio_ms * self.audio_per_minute * PER_MILLION
        return -(-total // (PER_MILLION * MS_PER_MINUTE))


async def rate_for(db: AsyncSession, model: str) -> Rate:
    price = await db.get(Price, model) or await db.get(Price, DEFAULT)
    if price is None:
        return Rate(0, 0)
    return Rate(price.input_per_million, price.output_per_million, price.default_max_tokens, price.audio_per_minute)


async def list_prices(db: AsyncSession) -> list[Price]:
    return list((await db.exec(select(Price).order_by(col(Price.model)))).all())


async def set_price(
    db: AsyncSession,
    actor: User | None,
    model: str,
    *,
    input_micro: int,
    output_micro: int,
    audio_micro: int | None = None,
) -> Price:
    """Set a model's token prices, and its price per audio minute unless `audio_micro` is None (kept as it is)."""
    if actor is not None:
        require_admin(actor)
    model = clean_text(model, what="model name", max_length=200, required=True)
    price = await db.get(Price, model) or Price(model=model)
    price.input_per_million, price.output_per_million = input_micro, output_micro
    if audio_micro is not None:
        price.audio_per_minute = audio_micro
    db.add(price)
    await db.commit()
    return price


async def remove_price(db: AsyncSession, actor: User, model: str) -> None:
    require_admin(actor)
    price = await db.get(Price, model)
    if price is not None:
        await db.delete(price)
        await db.commit()


async def fee_bps(db: AsyncSession) -> int:
    return await read_number(db, FEE_KEY) or 0


def parse_percent(text: str) -> int:
    """ "12.5" → 1250 basis points; 0 to 100 with at most two decimals."""
    whole, _, decimals = text.strip().removesuffix("%").partition(".")
    if not whole.isdigit() or (decimals and (not decimals.isdigit() or len(decimals) > 2)):
        raise BadRequest(f"The fee must be a percentage such as 10 or 12.5, got {text.strip()!r}.")
    bps = int(whole) * 100 + int(decimals.ljust(2, "0") or 0)
    if bps > 10_000:
        raise BadRequest("The fee must be between 0 and 100 percent.")
    return bps


async def set_fee(db: AsyncSession, actor: User | None, bps: int) -> int:
    if actor is not None:
        require_admin(actor)
    await stage(db, FEE_KEY, bps)
    await db.commit()
    return bps
