"""What members see when limits and credits apply: 429 with OpenAI's headers, 402, and exact charges."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.keys import service as keys
from hub.ledger import service as ledger
from hub.ledger.grants import grant
from hub.pricing import service as pricing
from hub.quotas import service as quotas
from hub.quotas.models import KeyPolicy
from tests.proxy.conftest import proxy_hub
from tests.support.cluster import Member, agent_process, agent_token, member, provision
from tests.support.fake_upstream import RunningFake, fake_upstream
from tests.support.hub import LiveHub

CREDIT = 1_000_000
HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@dataclass
class Club:
    hub: LiveHub
    upstream: RunningFake
    provider: Member


@pytest.fixture
def club(tmp_path: Path) -> Iterator[Club]:
    with proxy_hub(tmp_path / "hub") as hub, fake_upstream(["m"]) as upstream:
        provider = member(hub, "provider@lab.example.org")
        with agent_process(hub, agent_token(hub, provider.email, "gpu"), f"{upstream.url}/v1", capacity=32):
            yield Club(hub, upstream, provider)


def chat(club: Club, who: Member, **extra: object) -> httpx.Response:
    body = {"model": "m", "messages": HI, "max_tokens": 4, **extra}
    return httpx.post(f"{club.hub.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {who.key}"})


def balance(club: Club, email: str) -> ledger.Balance:
    async def read(db: AsyncSession) -> ledger.Balance:
        return await ledger.balance_of(db, (await accounts.get_member(db, email)).pk)

    return provision(club.hub, read)


def test_requests_per_minute_are_limited_with_openais_headers(club: Club) -> None:
    alice = member(club.hub, "alice@lab.example.org")

    async def limit(db: AsyncSession) -> None:
        await quotas.set_member_limits(db, None, await accounts.get_member(db, alice.email), rpm=3)

    provision(club.hub, limit)
    answers = [chat(club, alice) for _ in range(5)]

    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
    assert answers[2].headers["x-ratelimit-remaining-requests"] == "0"
    refused = answers[3]
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert "3 requests per minute" in refused.json()["error"]["message"]


async def test_concurrent_requests_never_overshoot_the_concurrency_limit(tmp_path: Path) -> None:
    with proxy_hub(tmp_path / "hub") as hub, fake_upstream(["m"], "stall") as upstream:
        provider, alice = member(hub, "provider@lab.example.org"), member(hub, "alice@lab.example.org")

        async def limit(db: AsyncSession) -> None:
            await quotas.set_member_limits(db, None, await accounts.get_member(db, alice.email), concurrency=2)

        provision(hub, limit)
        with agent_process(hub, agent_token(hub, provider.email, "gpu"), f"{upstream.url}/v1", capacity=32):
            async with httpx.AsyncClient(base_url=hub.url, timeout=30) as http:
                calls = [
                    asyncio.create_task(
                        http.post(
                            "/v1/chat/completions",
                            json={"model": "m", "messages": HI},
                            headers={"Authorization": f"Bearer {alice.key}"},
                        )
                    )
                    for _ in range(10)
                ]
                stats = await upstream.stats(in_flight=2)
                for _ in range(8):  # each round ends as soon as one more answer arrives
                    waiting = [call for call in calls if not call.done()]
                    if len(waiting) <= 2:
                        break
                    await asyncio.wait(waiting, timeout=10, return_when=asyncio.FIRST_COMPLETED)
                answered = [call.result().status_code for call in calls if call.done()]
                for call in calls:
                    call.cancel()

    assert stats["in_flight"] == 2
    assert answered == [429] * 8


def test_a_daily_token_limit_counts_what_was_used(club: Club) -> None:
    alice = member(club.hub, "alice@lab.example.org")

    async def limit(db: AsyncSession) -> None:
        await quotas.set_member_limits(db, None, await accounts.get_member(db, alice.email), tokens_per_day=12)

    provision(club.hub, limit)
    first = chat(club, alice)  # reserves 1 (prompt estimate) + 4, uses 1 + 4
    second = chat(club, alice)
    third = chat(club, alice)

    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
    assert third.headers["x-ratelimit-limit-tokens"] == "12"
    assert "Daily token limit" in third.json()["error"]["message"]


def test_a_key_can_have_its_own_tighter_limit(club: Club) -> None:
    alice = member(club.hub, "alice@lab.example.org")

    async def second_key_with_limit(db: AsyncSession) -> str:
        user = await accounts.get_member(db, alice.email)
        key, secret = await keys.create_key(db, user, name="ci")
        db.add(KeyPolicy(key_id=key.id or 0, rpm=1))
        await db.commit()
        return secret

    limited = Member(alice.email, provision(club.hub, second_key_with_limit))

    assert chat(club, limited).status_code == 200
    refused = chat(club, limited)
    assert refused.status_code == 429 and "this API key" in refused.json()["error"]["message"]
    assert chat(club, alice).status_code == 200


def test_without_credits_a_priced_model_is_402_but_your_own_gpu_is_free(club: Club) -> None:
    alice = member(club.hub, "alice@lab.example.org")

    async def price(db: AsyncSession) -> None:
        await pricing.set_price(db, None, "m", input_micro=CREDIT, output_micro=CREDIT)

    provision(club.hub, price)
    refused = chat(club, alice)
    own = chat(club, club.provider)

    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert own.status_code == 200
    assert balance(club, club.provider.email) == ledger.Balance(0, 0)


def test_a_stream_is_charged_exactly_and_shows_no_usage_chunk(club: Club) -> None:
    alice = member(club.hub, "alice@lab.example.org")

    async def prepare(db: AsyncSession) -> None:
        await pricing.set_price(db, None, "m", input_micro=0, output_micro=250_000 * CREDIT)  # 4 tokens: 1 credit
        await grant(db, None, await accounts.get_member(db, alice.email), 3 * CREDIT)

    provision(club.hub, prepare)
    with openai.OpenAI(base_url=f"{club.hub.url}/v1", api_key=alice.key, max_retries=0) as sdk:
        chunks = list(sdk.chat.completions.create(model="m", messages=HI, max_tokens=4, stream=True))
    club.hub.process.process.terminate()  # settlements are written before a clean stop
    club.hub.process.process.wait(timeout=20)

    assert all(c.choices and c.usage is None for c in chunks)
    assert balance(club, alice.email) == ledger.Balance(2 * CREDIT, 0)
    assert balance(club, club.provider.email).balance == CREDIT


def test_an_upstream_error_costs_nothing(club: Club) -> None:
    alice = member(club.hub, "alice@lab.example.org")

    async def prepare(db: AsyncSession) -> None:
        await pricing.set_price(db, None, "*", input_micro=CREDIT, output_micro=CREDIT)
        await grant(db, None, await accounts.get_member(db, alice.email), 1 * CREDIT)

    provision(club.hub, prepare)
    failed = chat(club, alice, fake={"status": 500})
    club.hub.process.process.terminate()
    club.hub.process.process.wait(timeout=20)

    assert failed.status_code == 502
    assert balance(club, alice.email) == ledger.Balance(CREDIT, 0)
