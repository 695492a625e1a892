"""Holds make concurrent requests safe: a balance for exactly ten requests pays for exactly ten, never more."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.ledger import service as ledger
from hub.ledger.grants import grant
from hub.ledger.models import Kind
from hub.pricing import service as pricing
from tests.proxy.conftest import proxy_hub
from tests.support.cluster import agent_process, agent_token, member, provision
from tests.support.fake_upstream import fake_upstream

CREDIT = 1_000_000
ONE_CREDIT_PER_5_TOKENS = 200_000 * CREDIT  # output price per million tokens: 5 tokens cost exactly 1 credit


async def test_forty_concurrent_requests_with_credits_for_ten_charge_exactly_ten(
    tmp_path: Path, database_url: str
) -> None:
    with proxy_hub(tmp_path / "hub", GPUCLUB_DATABASE_URL=database_url) as hub, fake_upstream(["m"]) as upstream:
        provider = member(hub, "provider@lab.example.org")
        alice = member(hub, "alice@lab.example.org")

        async def prepare(db: AsyncSession) -> None:
            await pricing.set_price(db, None, "m", input_micro=0, output_micro=ONE_CREDIT_PER_5_TOKENS)
            await pricing.set_fee(db, None, 1000)  # 10 %
            await grant(db, None, await accounts.get_member(db, alice.email), 10 * CREDIT, reason="test")

        provision(hub, prepare)
        with agent_process(hub, agent_token(hub, provider.email, "gpu"), f"{upstream.url}/v1", capacity=64):
            async with openai.AsyncOpenAI(base_url=f"{hub.url}/v1", api_key=alice.key, max_retries=0) as sdk:
                results = await asyncio.gather(
                    *(
                        sdk.chat.completions.create(
                            model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=5
                        )
                        for _ in range(40)
                    ),
                    return_exceptions=True,
                )
            hub.process.process.terminate()  # a clean stop waits for every settlement to be written
            hub.process.process.wait(timeout=20)

        async def outcome(db: AsyncSession) -> tuple[int, int, int, list[str]]:
            alice_now = await ledger.balance_of(db, (await accounts.get_member(db, alice.email)).pk)
            provider_now = await ledger.balance_of(db, (await accounts.get_member(db, provider.email)).pk)
            club = await ledger.system_account(db, Kind.CLUB)
            return alice_now.balance + alice_now.held, provider_now.balance, club.balance, await ledger.check(db)

        alice_left, earned, club_fee, problems = provision(hub, outcome)

    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    answered = [r for r in results if not isinstance(r, BaseException)]
    assert len(answered) == 10 and len(refused) == 30
    assert {(e.status_code, e.code) for e in refused} == {(402, "insufficient_quota")}
    assert alice_left == 0
    assert earned == 9 * CREDIT and club_fee == 1 * CREDIT
    assert problems == []
