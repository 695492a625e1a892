"""My usage (a chart per day, by model, by key) and What my GPUs earned (who used my agents, for which model)."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from hub.agents import service as agents
from hub.db import utcnow
from hub.keys import service as keys
from hub.ledger.grants import grant
from tests.credits.club import CREDIT, charged, used
from tests.support.people import Client, person, sign_in, text_of


def bars(html: str, chart: str = "tokens-per-day") -> dict[str, str]:
    """Each part of a chart's bars: its day and the tooltip a reader gets on hover."""
    if f'id="{chart}"' not in html:
        return {}
    part = html.split(f'id="{chart}"')[1].split("</figure>")[0]
    found = re.findall(r'<rect class="bar s\d" data-day="([\d-]+)".*?<title>(.*?)</title>', part, re.S)
    return {day: title for day, title in found}


def row(html: str, section: str, name: str) -> str:
    """One row of a table in a section, as text."""
    part = html.split(f'id="{section}"')[1].split("</section>")[0]
    return text_of(part.split(f'data-name="{name}"')[1].split("</tr>")[0].split(">", 1)[1])


async def test_my_usage_chart_has_a_bar_for_each_day_with_requests_in_the_last_30_days(
    client: Client, db: AsyncSession
) -> None:
    mia = await person(db, "mia@lab.example.org")
    now = utcnow()
    await used(db, mia, prompt=100, completion=50, at=now)
    await used(db, mia, prompt=10, completion=5, at=now - timedelta(days=3))
    await used(db, mia, prompt=20, completion=10, at=now - timedelta(days=3))
    await used(db, mia, prompt=999, completion=999, at=now - timedelta(days=45))  # too old to show
    await sign_in(client, db, mia)

    page = (await client.get("/usage")).text

    assert "<svg" in page and 'role="img"' in page
    day = (now - timedelta(days=3)).strftime("%Y-%m-%d")
    assert bars(page) == {
        now.strftime("%Y-%m-%d"): f"{now:%Y-%m-%d} · llama-3-8b: 150 tokens",
        day: f"{day} · llama-3-8b: 45 tokens",
    }
    assert "3 requests, 195 tokens" in text_of(page)


async def test_my_usage_is_broken_down_by_model_with_credits_spent_and_by_api_key(
    client: Client, db: AsyncSession
) -> None:
    olive = await person(db, "olive@lab.example.org")
    mia = await person(db, "mia@lab.example.org")
    laptop, _ = await keys.create_key(db, mia, name="laptop")
    notebook, _ = await keys.create_key(db, mia, name="notebook")
    await grant(db, None, mia, 10 * CREDIT)
    await used(db, mia, model="llama-3-8b", prompt=1000, completion=200, key_id=laptop.id)
    await used(db, mia, model="qwen-72b", prompt=300, completion=30, key_id=notebook.id, cost=1_000_000)
    await used(db, mia, model="qwen-72b", prompt=200, completion=20, key_id=notebook.id, cost=500_000)
    await charged(db, mia, olive, 1_500_000, model="qwen-72b")
    await sign_in(client, db, mia)

    page = (await client.get("/usage")).text

    assert row(page, "by-model", "qwen-72b") == "qwen-72b 2 500 50 1.5"
    assert row(page, "by-model", "llama-3-8b") == "llama-3-8b 1 1,000 200 0"
    assert row(page, "by-key", f"laptop ({laptop.prefix}…)") == f"laptop ({laptop.prefix}…) 1 1,000 200 0"
    assert row(page, "by-key", f"notebook ({notebook.prefix}…)") == f"notebook ({notebook.prefix}…) 2 500 50 1.5"


async def test_my_usage_shows_nothing_of_anyone_else(client: Client, db: AsyncSession) -> None:
    mia = await person(db, "mia@lab.example.org")
    max_ = await person(db, "max@lab.example.org")
    await used(db, mia, model="secret-model")
    await sign_in(client, db, max_)

    page = (await client.get("/usage")).text

    assert "secret-model" not in page and bars(page) == {}
    assert "No requests in the last 30 days." in text_of(page)


async def test_what_my_gpus_earned_shows_who_used_my_agent_for_which_model(client: Client, db: AsyncSession) -> None:
    pat = await person(db, "pat@lab.example.org", name="Pat")
    mia = await person(db, "mia@lab.example.org", name="Mia")
    max_ = await person(db, "max@lab.example.org", name="Max")
    rig, _ = await agents.create_agent(db, pat, name="desk-4090")
    elsewhere, _ = await agents.create_agent(db, max_, name="max-rig")
    await grant(db, None, mia, 10 * CREDIT)
    # Each costs Mia 1 credit; Pat earns 0.9 of it, the club keeps 0.1.
    await used(db, mia, model="llama-3-8b", prompt=400, completion=100, agent_id=rig.id, cost=CREDIT, earned=900_000)
    await used(db, mia, model="llama-3-8b", prompt=600, completion=100, agent_id=rig.id, cost=CREDIT, earned=900_000)
    await charged(db, mia, pat, 2 * CREDIT, model="llama-3-8b", fee_bps=1000)
    await used(db, pat, model="llama-3-8b", prompt=5000, completion=5000, agent_id=rig.id)  # own use: free
    await used(db, mia, model="qwen-72b", prompt=70, completion=7, agent_id=elsewhere.id)  # Max's GPU, not Pat's
    await sign_in(client, db, pat)

    page = (await client.get("/earnings")).text

    assert row(page, "by-member", "Mia (mia@lab.example.org)") == "Mia (mia@lab.example.org) 2 1,000 200 1.8"
    assert row(page, "by-model", "llama-3-8b") == "llama-3-8b 2 1,000 200 1.8"
    assert "1.8 credits earned from 2 requests (1,200 tokens)" in text_of(page)
    assert "qwen-72b" not in page and "pat@lab.example.org" not in page.split("<main")[1]


async def test_earnings_are_empty_for_a_member_whose_gpus_nobody_used(client: Client, db: AsyncSession) -> None:
    mia = await person(db, "mia@lab.example.org")
    await sign_in(client, db, mia)

    page = await client.get("/earnings")

    assert "Nobody else has used your GPUs in the last 30 days." in text_of(page.text)


async def test_my_recent_requests_show_the_audio_seconds_of_a_transcription(client: Client, db: AsyncSession) -> None:
    mia = await person(db, "mia@lab.example.org")
    await used(db, mia, model="llama-3-8b", prompt=100, completion=50, at=utcnow() - timedelta(minutes=1))
    await used(db, mia, model="whisper", prompt=0, completion=0, endpoint="audio/transcriptions", audio_ms=12_345)
    await sign_in(client, db, mia)

    page = (await client.get("/dashboard")).text

    requests = [text_of(row.split("</tr>")[0]) for row in page.split('<tr class="request">')[1:]]
    assert "whisper audio/transcriptions 200 12.3 s audio" in requests[0]
    assert "llama-3-8b chat/completions 200 100 / 50" in requests[1]
