"""The request log: every request a member made, refused ones included, on /requests and Admin → Requests;
filters, keyset paging and the CSV export; nobody sees anyone else's rows.

The app runs in this process with an agent connected in memory that answers like an agent would (the same
exchange the tunnel feeds), so real requests go through admission, routing and the recorder.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from litestar import Litestar
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from agent import protocol
from hub.accounts.models import Role, User
from hub.agents import service as agents
from hub.agents.live import Link
from hub.db import utcnow
from hub.keys import service as keys
from hub.ledger.grants import grant
from hub.pricing import service as pricing
from hub.quotas import service as quotas
from hub.runtime import runtime_of
from hub.usage.log import CLUB_COLUMNS, MEMBER_COLUMNS, PER_PAGE
from hub.usage.models import UsageRecord
from tests.support.people import Client, person, sign_in, text_of

# Every test here runs on SQLite only: the queries are the same on PostgreSQL, where tests/usage/test_recorder_costs.py
# and test_retention.py run too.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

CREDIT = 1_000_000
ANSWER = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "four words of text"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 4},
}


def connect(app: Litestar, agent_id: int, owner_id: int) -> Link:
    """An agent in memory: each request it is sent is answered at once, through the exchange like the tunnel does."""
    link: Link

    async def send(frame: str | bytes) -> None:
        message = protocol.parse(str(frame))
        if message["type"] != "request":
            return
        exchange = link.exchanges[message["id"]]
        exchange.on_start(200, {"content-type": "application/json"})
        exchange.on_chunk(json.dumps(ANSWER).encode())
        link.finish(message["id"])
        exchange.on_end(None)

    async def close(*_: Any) -> None:
        return None

    link = Link(agent_id, owner_id, "gpu", True, False, 4, frozenset({"m"}), send, close)
    link.ready = True
    runtime_of(app).registry.add(link)
    return link


@dataclass
class Club:
    owner: User  # runs the GPU
    alice: User
    bob: User  # no credits
    admin: User
    agent_id: int
    alice_key: str
    bob_key: str


@pytest.fixture
async def club(app: Litestar, db: AsyncSession) -> Club:
    owner = await person(db, "owen@lab.example.org", name="Owen")
    alice = await person(db, "alice@lab.example.org", name="Alice")
    bob = await person(db, "bob@lab.example.org", name="Bob")
    boss = await person(db, "ada@lab.example.org", Role.ADMIN, name="Ada")
    agent, _ = await agents.create_agent(db, owner, name="owen-4090")
    _, alice_key = await keys.create_key(db, alice, name="laptop")
    _, bob_key = await keys.create_key(db, bob, name="bobs")
    await pricing.set_price(db, None, "m", input_micro=1000 * CREDIT, output_micro=1000 * CREDIT)
    await pricing.set_fee(db, None, 1000)
    await grant(db, None, alice, 10 * CREDIT, reason="test")
    await quotas.set_member_limits(db, None, alice, rpm=2)
    connect(app, agent.pk, owner.pk)
    return Club(owner, alice, bob, boss, agent.pk, alice_key, bob_key)


async def ask(client: Client, key: str, model: str = "m") -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    response = await client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body)
    return response.status_code


def rows(html: str) -> list[str]:
    """The log's rows as text, newest first."""
    return [text_of(row) for row in re.findall(r'<tr class="request".*?</tr>', html, re.S)]


def outcomes(html: str) -> list[str]:
    return re.findall(r'<tr class="request" data-id="\d+" data-outcome="(\w+)"', html)


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
async def requested(app: Litestar, client: Client, club: Club) -> Club:
    """Alice: two answered, one for a model nobody serves (404), one over her limit (429); Bob: one without
    credits (402)."""
    assert [await ask(client, club.alice_key) for _ in range(2)] == [200, 200]
    assert await ask(client, club.alice_key, "no\x00such-model") == 404
    assert await ask(client, club.alice_key) == 429
    assert await ask(client, club.bob_key) == 402
    await runtime_of(app).recorder.flush()
    return club


async def test_refused_requests_show_in_the_members_log_with_their_status_and_no_cost(
    client: Client, db: AsyncSession, requested: Club
) -> None:
    await sign_in(client, db, requested.alice)

    page = (await client.get("/requests")).text

    assert outcomes(page) == ["refused", "refused", "ok", "ok"]
    limited, unknown, answered, _ = rows(page)
    assert "429 rate_limit_exceeded" in limited and "laptop" in limited and limited.count(" 0 ") >= 1
    assert "nosuch-model" in unknown and "404 model_not_found" in unknown  # as asked, cleaned
    # 7 tokens at 1,000 credits per million: 0.007 credits, of which the GPU's owner earns 90%.
    assert "chat/completions" in answered and "Owen" in answered and "3 / 4" in answered and "0.007" in answered
    assert "Bob" not in page and "402" not in page
    assert "402 insufficient_quota" in rows((await _as(client, db, requested.bob)).text)[0]


async def _as(client: Client, db: AsyncSession, user: User, path: str = "/requests") -> Any:
    client.cookies.clear()
    await sign_in(client, db, user)
    return await client.get(path)


async def test_the_recorder_wrote_cost_and_earned_on_the_answered_rows(db: AsyncSession, requested: Club) -> None:
    found = (await db.exec(select(UsageRecord))).all()
    by_status = sorted((row.status, row.cost, row.earned, row.agent_id is None, row.code) for row in found)
    assert by_status == [
        (200, 7000, 6300, False, ""),  # the club keeps its 10%
        (200, 7000, 6300, False, ""),
        (402, 0, 0, True, "insufficient_quota"),
        (404, 0, 0, True, "model_not_found"),
        (429, 0, 0, True, "rate_limit_exceeded"),
    ]


async def test_filters_narrow_the_log_and_the_csv_has_exactly_those_rows(
    client: Client, db: AsyncSession, requested: Club
) -> None:
    await sign_in(client, db, requested.alice)
    today = utcnow().date()

    assert outcomes((await client.get("/requests?status=ok")).text) == ["ok", "ok"]
    assert outcomes((await client.get("/requests?status=refused&model=m")).text) == ["refused"]
    assert outcomes((await client.get(f"/requests?since={today}&until={today}")).text) == ["refused"] * 2 + ["ok"] * 2
    yesterday = today - timedelta(days=1)
    assert "No requests match these filters" in text_of((await client.get(f"/requests?until={yesterday}")).text)
    bad = await client.get("/requests?since=last-week")
    assert bad.status_code == 400 and "not a date like 2026-12-03" in text_of(bad.text)

    download = await client.get("/requests.csv?status=ok")
    assert download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    header = download.text.splitlines()[0].split(",")
    assert header == MEMBER_COLUMNS
    lines = parse_csv(download.text)
    assert [(r["status"], r["model"], r["cost_credits"], r["gpu_owner"], r["key"]) for r in lines] == [
        ("200", "m", "0.007", "Owen", lines[0]["key"])
    ] * 2
    assert lines[0]["key"].startswith("laptop (")
    assert [r["error_code"] for r in parse_csv((await client.get("/requests.csv?status=refused")).text)] == [
        "rate_limit_exceeded",
        "model_not_found",
    ]


async def test_admins_see_the_club_filtered_by_member_and_by_gpu(
    client: Client, db: AsyncSession, requested: Club
) -> None:
    await sign_in(client, db, requested.admin)

    everyone = (await client.get("/admin/requests")).text
    assert len(rows(everyone)) == 5
    bobs = rows((await client.get(f"/admin/requests?member={requested.bob.pk}")).text)
    assert len(bobs) == 1 and "Bob" in bobs[0] and "402" in bobs[0]
    served = (await client.get(f"/admin/requests?agent={requested.agent_id}")).text
    assert outcomes(served) == ["ok", "ok"] and "owen-4090 (Owen)" in served

    lines = parse_csv((await client.get(f"/admin/requests.csv?member={requested.alice.pk}&status=ok")).text)
    assert list(lines[0]) == CLUB_COLUMNS
    assert [(r["member"], r["cost_credits"], r["earned_credits"]) for r in lines] == [("Alice", "0.007", "0.0063")] * 2


async def test_a_member_sees_only_their_own_rows_and_never_the_admin_log(
    client: Client, db: AsyncSession, requested: Club
) -> None:
    await sign_in(client, db, requested.bob)

    mine = await client.get(f"/requests?member={requested.alice.pk}&agent={requested.agent_id}")
    assert outcomes(mine.text) == ["refused"] and "Alice" not in mine.text
    assert len(parse_csv((await client.get(f"/requests.csv?member={requested.alice.pk}")).text)) == 1
    alice_row = (await db.exec(select(UsageRecord).where(UsageRecord.user_id == requested.alice.pk))).first()
    assert alice_row is not None
    assert outcomes((await client.get(f"/requests?before={alice_row.id}")).text) == []  # paging from her row: nothing
    for path in ("/admin/requests", "/admin/requests.csv"):
        refused = await client.get(path)
        assert refused.status_code == 403 and "Alice" not in refused.text


async def test_pages_go_back_in_time_without_gaps_or_repeats(client: Client, db: AsyncSession) -> None:
    mia = await person(db, "mia@lab.example.org")
    now = utcnow()
    # Rows written out of time order (a bill sent back late), several at the same instant.
    count = 2 * PER_PAGE + 10
    order = [i for start in (1, 0) for i in range(start, count, 2)]  # odd ones first: their ids come first
    for i in order:
        at = now - timedelta(minutes=(count - i) // 3)
        db.add(
            UsageRecord(
                request_id=f"r{i:031d}", user_id=mia.pk, model=f"m{i}", endpoint="chat", status=200, created_at=at
            )
        )
        await db.flush()
    await db.commit()
    written = {f"m{i}": (now - timedelta(minutes=(count - i) // 3), n) for n, i in enumerate(order)}
    expected = sorted(written, key=lambda name: written[name], reverse=True)  # newest first, then the later id
    await sign_in(client, db, mia)

    seen: list[str] = []
    path = "/requests"
    while path:
        page = (await client.get(path)).text
        seen += re.findall(r"<code>(m\d+)</code>", page)
        older = re.search(r'<a href="(/requests\?before=\d+)"[^>]*rel="next"', page)
        path = older.group(1) if older else ""
    assert seen == expected
    assert [row["model"] for row in parse_csv((await client.get("/requests.csv")).text)] == expected
