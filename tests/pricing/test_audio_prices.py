"""Prices per audio minute: a transcription costs its audio seconds at the model's price, rounded up once."""

from __future__ import annotations

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.pricing import service as pricing
from hub.pricing.service import Rate

CREDIT = 1_000_000


@pytest.mark.parametrize(
    ("audio_ms", "cost"),
    [
        (60_000, 6_000),  # a minute at 0.006 credits a minute
        (12_345, 1_235),  # 1234.5 micro-credits, rounded up
        (1, 1),  # a millisecond is never free
        (0, 0),
    ],
)
def test_audio_is_billed_by_the_millisecond_at_the_price_per_minute_rounded_up(audio_ms: int, cost: int) -> None:
    assert Rate(0, 0, audio_per_minute=6_000).cost(0, 0, audio_ms) == cost


def test_tokens_and_audio_are_summed_before_rounding_up_once() -> None:
    half_a_micro_credit_a_token_and_a_second = Rate(500_000, 0, audio_per_minute=30)

    # 0.5 micro-credits of tokens and 0.5 of audio make one micro-credit, not two.
    assert half_a_micro_credit_a_token_and_a_second.cost(1, 0, 1_000) == 1
    assert half_a_micro_credit_a_token_and_a_second.cost(2, 0, 1_000) == 2  # 1.5, rounded up


def test_token_prices_alone_cost_what_they_did() -> None:
    rate = Rate(input_per_million=1_500_000, output_per_million=3_000_000)

    assert rate.cost(1_000, 1_000) == 4_500
    assert rate.cost(1, 0) == 2  # 1.5 rounded up
    assert rate.cost(1, 0, 60_000) == 2  # no audio price: audio costs nothing


async def test_a_price_per_audio_minute_is_kept_until_it_is_set_again(db: AsyncSession) -> None:
    await pricing.set_price(db, None, "whisper", input_micro=0, output_micro=0, audio_micro=6_000)
    await pricing.set_price(db, None, "whisper", input_micro=CREDIT, output_micro=2 * CREDIT)  # audio untouched

    rate = await pricing.rate_for(db, "whisper")
    assert (rate.input_per_million, rate.output_per_million, rate.audio_per_minute) == (CREDIT, 2 * CREDIT, 6_000)
    await pricing.set_price(db, None, "whisper", input_micro=0, output_micro=0, audio_micro=0)
    assert (await pricing.rate_for(db, "whisper")).audio_per_minute == 0


async def test_a_model_without_its_own_price_uses_the_defaults_audio_price(db: AsyncSession) -> None:
    await pricing.set_price(db, None, "*", input_micro=0, output_micro=0, audio_micro=12_000)

    assert (await pricing.rate_for(db, "whisper")).cost(0, 0, 30_000) == 6_000
