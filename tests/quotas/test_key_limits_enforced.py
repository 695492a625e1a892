"""Each setting of a key holds exactly under concurrency, on SQLite and PostgreSQL: its budget per day and per
month, the models it may use, its requests per minute, tokens per day, concurrency and expiry.

One hub, agent and fake upstream per database (real processes); each test has a member of its own, who sends 20
requests at once with the openai SDK's transport (httpx) and reads the outcome as a client would.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import httpx
import pytest
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.db import utcnow
from hub.keys.models import ApiKey
from hub.ledger import service as ledger
from hub.ledger.grants import grant
from hub.pricing import service as pricing
from hub.quotas import key_settings
from hub.usage.models import UsageRecord
from tests.proxy.conftest import live_database, proxy_hub  # noqa: F401 - live_database is a fixture
from tests.support.cluster import Member, agent_process, agent_token, member, provision, signed_in, submit
from tests.support.fake_upstream import RunningFake, fake_upstream
from tests.support.hub import LiveHub

CREDIT = 1_000_000
ONE_CREDIT_PER_5_TOKENS = 200_000 * CREDIT  # output price per million tokens: max_tokens=5 holds and costs 1 credit
AT_ONCE = 20
T = TypeVar("T")


@dataclass
class Club:
    hub: LiveHub
    upstream: RunningFake


@pytest.fixture(scope="module")
def club(tmp_path_factory: pytest.TempPathFactory, live_database: str) -> Iterator[Club]:  # noqa: F811
    data = tmp_path_factory.mktemp("hub")
    with (
        proxy_hub(data, GPUCLUB_DATABASE_URL=live_database) as hub,
        fake_upstream(["m", "other"], "apis=messages") as upstream,
    ):
        provider = member(hub, "provider@lab.example.org")

        async def prices(db: AsyncSession) -> None:
            await pricing.set_price(db, None, "*", input_micro=0, output_micro=ONE_CREDIT_PER_5_TOKENS)
            await pricing.set_fee(db, None, 1000)

        provision(hub, prices)
        with agent_process(hub, agent_token(hub, provider.email, "gpu"), f"{upstream.url}/v1", capacity=64):
            yield Club(hub, upstream)


def spender(club: Club, name: str, credits: int = 100, **settings: str) -> tuple[Member, int]:
    """A member with `credits` and a key with these settings (form fields); the key's id."""
    who = member(club.hub, f"{name}@lab.example.org")

    async def prepare(db: AsyncSession) -> int:
        user = await accounts.get_member(db, who.email)
        if credits:
            await grant(db, None, user, credits * CREDIT, reason="test")
        key = (await db.exec(select(ApiKey).where(ApiKey.prefix == who.key[:12]))).one()
        await key_settings.save(db, user, key.id or 0, {"name": "test", **settings})
        return key.id or 0

    return who, provision(club.hub, prepare)


def chat(model: str = "m", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, **extra}


async def burst(club: Club, who: Member, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """Send every body at once; the answers in the same order."""
    headers = {"Authorization": f"Bearer {who.key}"}
    async with httpx.AsyncClient(base_url=club.hub.url, timeout=30, headers=headers) as http:
        return list(await asyncio.gather(*(http.post("/v1/chat/completions", json=body) for body in bodies)))


def codes(answers: list[httpx.Response]) -> list[tuple[int, str | None]]:
    return sorted(
        (a.status_code, a.json().get("error", {}).get("code") if a.status_code != 200 else None) for a in answers
    )


def read(club: Club, work: Callable[[AsyncSession], Coroutine[Any, Any, T]]) -> T:
    return provision(club.hub, work)


def settled(club: Club, who: Member, balance: int) -> tuple[int, list[str]]:
    """The member's balance once the recorder has written it (bounded wait), and what the ledger check finds."""

    async def now(db: AsyncSession) -> tuple[int, list[str]]:
        user = await accounts.get_member(db, who.email)
        return (await ledger.balance_of(db, user.pk)).balance, await ledger.check(db)

    deadline = time.monotonic() + 10
    found = read(club, now)
    while found[0] != balance and time.monotonic() < deadline:
        time.sleep(0.1)  # the recorder writes every 0.2 s: polled with a bound, like tests.support.cluster.recorded
        found = read(club, now)
    return found


def spent_before(club: Club, who: Member, key_id: int, cost: int, when: Any) -> None:
    """A request the key made before this hub process ever saw it, straight into the usage table."""

    async def insert(db: AsyncSession) -> None:
        user = await accounts.get_member(db, who.email)
        db.add(
            UsageRecord(
                request_id=uuid.uuid4().hex, user_id=user.pk, key_id=key_id, model="m", endpoint="chat/completions",
                status=200, cost=cost, created_at=when,
            )
        )  # fmt: skip
        await db.commit()

    read(club, insert)


def spent_in_database(club: Club, key_id: int) -> int:
    """What the key's usage rows say it spent (the recorder writes each request's cost on its row)."""

    async def total(db: AsyncSession) -> int:
        rows = (await db.exec(select(UsageRecord.cost).where(UsageRecord.key_id == key_id))).all()
        return sum(rows)

    return read(club, total)


def row_of(club: Club, who: Member) -> str:
    """What the API keys page says of the key's settings, as its owner sees it."""
    with signed_in(club.hub, who.email) as browser:
        page = browser.get("/keys").text
    return page.split('class="key-settings')[1].split('<span class="budget">')[1].split("</span>")[0]


async def test_a_daily_budget_serves_exactly_what_it_covers_of_twenty_requests_at_once(club: Club) -> None:
    dana, key_id = spender(club, "dana", budget_day="6")
    spent_before(club, dana, key_id, CREDIT, utcnow())  # 1 of the 6 credits spent before today's first request

    answers = await burst(club, dana, [chat()] * AT_ONCE)
    again = (await burst(club, dana, [chat()]))[0]

    assert codes(answers) == [(200, None)] * 5 + [(402, "key_budget_exceeded")] * 15
    refused = next(a for a in answers if a.status_code == 402)
    message = refused.json()["error"]["message"]
    assert "This API key's budget of 6 credits per day is used up" in message and "00:00 UTC" in message
    assert int(refused.headers["retry-after"]) <= 86_400
    assert refused.json()["error"]["type"] == "insufficient_quota"
    assert again.status_code == 402
    assert settled(club, dana, 95 * CREDIT) == (95 * CREDIT, [])
    assert spent_in_database(club, key_id) == 6 * CREDIT  # the budget, exactly
    assert row_of(club, dana) == "Budget: 6 a day (0 left today)"


async def test_a_monthly_budget_counts_what_the_key_spent_earlier_in_the_month(club: Club) -> None:
    emil, key_id = spender(club, "emil", budget_month="4", budget_day="50")
    first_of_month = utcnow().replace(day=1, hour=0, minute=0, second=1, microsecond=0)
    spent_before(club, emil, key_id, CREDIT, first_of_month)

    answers = await burst(club, emil, [chat()] * AT_ONCE)

    assert codes(answers) == [(200, None)] * 3 + [(402, "key_budget_exceeded")] * 17
    assert "budget of 4 credits per month" in next(a for a in answers if a.status_code == 402).text
    assert settled(club, emil, 97 * CREDIT) == (97 * CREDIT, [])
    assert spent_in_database(club, key_id) == 4 * CREDIT
    today = 50 - 3 - (1 if utcnow().day == 1 else 0)
    assert row_of(club, emil) == f"Budget: 50 a day ({today} left today), 4 a month (0 left this month)"


async def test_a_member_short_of_credits_is_refused_by_the_balance_within_the_budget(club: Club) -> None:
    fay, _ = spender(club, "fay", credits=2, budget_day="10")

    answers = await burst(club, fay, [chat()] * AT_ONCE)

    assert codes(answers) == [(200, None)] * 2 + [(402, "insufficient_quota")] * 18
    assert settled(club, fay, 0) == (0, [])
    assert row_of(club, fay) == "Budget: 10 a day (8 left today)"


async def test_a_key_that_names_its_models_may_use_only_those_from_its_next_request(club: Club) -> None:
    gus, key_id = spender(club, "gus")
    before = await burst(club, gus, [chat("other")])  # the key is cached now, as a busy client's would be
    with signed_in(club.hub, gus.email) as browser:
        saved = submit(browser, "/keys", f"/keys/{key_id}/settings", {"name": "test", "models": "m"})
    assert saved.status_code == 200 and "Models: m" in saved.text

    answers = await burst(club, gus, [chat("m"), chat("other")] * (AT_ONCE // 2))
    async with httpx.AsyncClient(base_url=club.hub.url, headers={"Authorization": f"Bearer {gus.key}"}) as http:
        listed = (await http.get("/v1/models")).json()
        one = await http.get("/v1/models/other")

    assert before[0].status_code == 200
    assert codes(answers) == [(200, None)] * 10 + [(403, "model_not_allowed")] * 10
    refused = next(a for a in answers if a.status_code == 403).json()["error"]
    assert refused["type"] == "permission_error"
    assert refused["message"].startswith("This API key may not use the model 'other'; it may use: m.")
    assert [model["id"] for model in listed["data"]] == ["m"]
    assert one.status_code == 404
    assert settled(club, gus, 89 * CREDIT) == (89 * CREDIT, [])


async def test_a_keys_requests_per_minute_hold_under_a_burst(club: Club) -> None:
    hal, _ = spender(club, "hal", rpm="3")

    answers = await burst(club, hal, [chat()] * AT_ONCE)

    assert codes(answers) == [(200, None)] * 3 + [(429, "rate_limit_exceeded")] * 17
    assert "this API key may send 3 requests per minute" in next(a for a in answers if a.status_code == 429).text
    assert settled(club, hal, 97 * CREDIT) == (97 * CREDIT, [])


async def test_a_keys_tokens_per_day_hold_under_a_burst(club: Club) -> None:
    ida, _ = spender(club, "ida", tokens_per_day="30")  # each request may use 1 + 5 tokens, and does

    answers = await burst(club, ida, [chat()] * AT_ONCE)
    again = (await burst(club, ida, [chat()]))[0]

    assert codes(answers) == [(200, None)] * 5 + [(429, "rate_limit_exceeded")] * 15
    assert "this API key may use 30 tokens a day" in again.json()["error"]["message"]
    assert settled(club, ida, 95 * CREDIT) == (95 * CREDIT, [])


async def test_a_keys_concurrency_holds_under_a_burst(club: Club) -> None:
    jo, _ = spender(club, "jo", concurrency="2")
    headers = {"Authorization": f"Bearer {jo.key}"}
    async with httpx.AsyncClient(base_url=club.hub.url, timeout=30, headers=headers) as http:
        calls = [
            asyncio.create_task(http.post("/v1/chat/completions", json=chat(fake={"hang": True}))) for _ in range(10)
        ]
        stats = await club.upstream.stats(in_flight=2)
        while len([call for call in calls if not call.done()]) > 2:
            await asyncio.wait([c for c in calls if not c.done()], timeout=10, return_when=asyncio.FIRST_COMPLETED)
        refused = [call.result().status_code for call in calls if call.done()]
        for call in calls:
            call.cancel()
    released = await club.upstream.stats(in_flight=0)  # the hub cancels what its client gave up

    assert stats["in_flight"] == 2 and refused == [429] * 8
    assert released["in_flight"] == 0
    assert settled(club, jo, 100 * CREDIT) == (100 * CREDIT, [])


async def test_an_expired_key_is_refused_every_time(club: Club) -> None:
    kim, key_id = spender(club, "kim")

    async def expire(db: AsyncSession) -> None:
        key = await db.get(ApiKey, key_id)
        assert key is not None
        key.expires_at = utcnow() - timedelta(seconds=1)
        db.add(key)
        await db.commit()

    read(club, expire)
    answers = await burst(club, kim, [chat()] * AT_ONCE)

    assert codes(answers) == [(401, "invalid_api_key")] * AT_ONCE
    assert settled(club, kim, 100 * CREDIT) == (100 * CREDIT, [])


async def test_refusals_on_anthropics_messages_api_come_in_its_own_envelope(club: Club) -> None:
    lou, _ = spender(club, "lou", budget_day="0", models="m")
    headers = {"x-api-key": lou.key, "anthropic-version": "2023-06-01"}
    body = {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=club.hub.url, headers=headers, timeout=30) as http:
        spent = await http.post("/v1/messages", json={"model": "m", **body})
        other = await http.post("/v1/messages", json={"model": "other", **body})

    assert spent.status_code == 402 and spent.json()["type"] == "error"
    assert spent.json()["error"]["type"] == "billing_error"
    assert "budget of 0 credits per day" in spent.json()["error"]["message"]
    assert other.status_code == 403 and other.json()["error"]["type"] == "permission_error"
