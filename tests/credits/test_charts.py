"""The charts on Usage, Earnings and Admin → Usage: the numbers in their accessible tables, and the date range."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import Role
from hub.agents import service as agents
from hub.db import utcnow
from hub.keys import service as keys
from tests.credits.club import CREDIT, used
from tests.support.people import Client, person, sign_in, text_of


def chart_table(html: str, chart: str) -> dict[str, dict[str, str]]:
    """The table beside a chart, as a reader gets it: {day: {column header: cell}}."""
    table = html.split(f'data-chart-table="{chart}"')[1].split("</table>")[0]
    assert "<caption>" in table and 'scope="col"' in table
    heads = [text_of(h) for h in re.findall(r'<th scope="col">(.*?)</th>', table, re.S)][1:]
    found = {}
    for day, cells in re.findall(r'<tr><th scope="row">(.*?)</th>(.*?)</tr>', table, re.S):
        found[day] = dict(zip(heads, [text_of(c) for c in re.findall(r"<td>(.*?)</td>", cells, re.S)], strict=True))
    return found


async def test_my_usage_charts_tokens_and_credits_per_day_by_model_or_by_key_within_the_range(
    client: Client, db: AsyncSession
) -> None:
    mia = await person(db, "mia@lab.example.org")
    laptop, _ = await keys.create_key(db, mia, name="laptop")
    now = utcnow()
    today, ten_days_ago = now.strftime("%Y-%m-%d"), (now - timedelta(days=10)).strftime("%Y-%m-%d")
    await used(db, mia, model="qwen-72b", prompt=100, completion=20, key_id=laptop.id, cost=CREDIT // 2, at=now)
    await used(db, mia, model="llama-3-8b", prompt=10, completion=5, cost=250_000, at=now)
    await used(db, mia, model="qwen-72b", prompt=1000, completion=0, key_id=laptop.id, at=now - timedelta(days=10))
    await sign_in(client, db, mia)

    month = (await client.get("/usage")).text
    week = (await client.get("/usage?days=7")).text
    by_key = (await client.get("/usage?days=7&by=key")).text
    chosen = (await client.get(f"/usage?from={ten_days_ago}&to={ten_days_ago}")).text

    assert chart_table(month, "tokens-per-day") == {
        ten_days_ago: {"qwen-72b": "1,000", "llama-3-8b": "0", "Total": "1,000"},
        today: {"qwen-72b": "120", "llama-3-8b": "15", "Total": "135"},
    }
    assert chart_table(month, "credits-per-day") == {today: {"qwen-72b": "0.5", "llama-3-8b": "0.25", "Total": "0.75"}}
    assert list(chart_table(week, "tokens-per-day")) == [today]
    assert "The last 7 days (UTC): 2 requests, 135 tokens, 0.75 credits spent." in text_of(week)
    assert chart_table(by_key, "tokens-per-day") == {
        today: {f"laptop ({laptop.prefix}…)": "120", "a deleted key": "15", "Total": "135"}
    }
    assert chart_table(chosen, "tokens-per-day") == {ten_days_ago: {"qwen-72b": "1,000", "Total": "1,000"}}
    assert "<svg" in chosen and f'value="{ten_days_ago}"' in chosen


async def test_a_bad_date_range_is_refused_with_a_readable_message(client: Client, db: AsyncSession) -> None:
    mia = await person(db, "mia@lab.example.org")
    await sign_in(client, db, mia)
    tomorrow = (utcnow() + timedelta(days=1)).strftime("%Y-%m-%d")

    for url, message in [
        ("/usage?days=12", "Choose 7, 30, 90 days, or a from and a to date."),
        ("/usage?from=yesterday", "The from date must be a date like 2026-11-30, not “yesterday”."),
        ("/earnings?from=2026-11-10&to=2026-11-01", "The from date must not be after the to date."),
        (f"/usage?to={tomorrow}", "The to date must not be after today"),
        ("/usage?by=colour", "Group the charts by model or by key."),
    ]:
        response = await client.get(url)
        assert response.status_code == 400, url
        assert message in text_of(response.text), url


async def test_earnings_and_admin_usage_chart_each_day_by_model_member_and_agent(
    client: Client, db: AsyncSession
) -> None:
    adam = await person(db, "adam@lab.example.org", Role.ADMIN, name="Adam")
    pat = await person(db, "pat@lab.example.org", name="Pat")
    mia = await person(db, "mia@lab.example.org", name="Mia")
    rig, _ = await agents.create_agent(db, pat, name="desk-4090")
    now = utcnow()
    today, yesterday = now.strftime("%Y-%m-%d"), (now - timedelta(days=1)).strftime("%Y-%m-%d")
    await used(db, mia, model="qwen-72b", prompt=90, completion=10, agent_id=rig.id, cost=CREDIT, earned=900_000)
    await used(
        db,
        mia,
        model="qwen-72b",
        prompt=40,
        completion=10,
        agent_id=rig.id,
        cost=CREDIT,
        earned=900_000,
        at=now - timedelta(days=1),
    )
    await used(db, pat, model="llama-3-8b", prompt=7, completion=3, agent_id=rig.id, at=now)  # his own GPU
    await sign_in(client, db, pat)
    earnings = (await client.get("/earnings")).text
    await sign_in(client, db, adam)
    tokens = (await client.get("/admin/usage")).text
    credits = (await client.get("/admin/usage?show=credits&days=7")).text

    assert chart_table(earnings, "earned-per-day") == {
        yesterday: {"qwen-72b": "0.9", "Total": "0.9"},
        today: {"qwen-72b": "0.9", "Total": "0.9"},
    }
    assert chart_table(tokens, "per-member")[today] == {
        "Mia (mia@lab.example.org)": "100",
        "Pat (pat@lab.example.org)": "10",
        "Total": "110",
    }
    assert chart_table(tokens, "per-model")[yesterday] == {"qwen-72b": "50", "llama-3-8b": "0", "Total": "50"}
    assert chart_table(tokens, "per-agent")[today] == {"desk-4090 (pat@lab.example.org)": "110", "Total": "110"}
    assert chart_table(credits, "per-member")[today] == {"Mia (mia@lab.example.org)": "1", "Total": "1"}
