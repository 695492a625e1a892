"""What owners and admins see of disputes: counts and reasons on My GPUs and Admin → Usage, the clear action,
the rule on Admin → Money, and a pause reaching a connected agent of a running app.
"""

from __future__ import annotations

import html as entities
import uuid
from datetime import datetime, timedelta

from litestar import Litestar
from sqlalchemy import update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import Role, User
from hub.agents import service as agents
from hub.agents.disputes import Disputes
from hub.agents.models import Agent
from hub.background import Background
from hub.db import utcnow
from hub.runtime import runtime_of
from hub.usage.models import UsageRecord
from tests.agents.links import REASON, connected
from tests.support.people import Client, person, post_form, sign_in, text_of


async def disputed(
    db: AsyncSession,
    consumer: User,
    agent: Agent,
    *,
    reported: tuple[int, int] = (900, 90_000),
    billed: tuple[int, int] = (900, 512),
    at: datetime | None = None,
) -> None:
    """A request whose provider claimed more than the hub believed, as the recorder writes it."""
    db.add(
        UsageRecord(
            request_id=uuid.uuid4().hex,
            user_id=consumer.pk,
            agent_id=agent.pk,
            model="llama-3-8b",
            endpoint="chat/completions",
            status=200,
            prompt_tokens=billed[0],
            completion_tokens=billed[1],
            reported_prompt_tokens=reported[0],
            reported_completion_tokens=reported[1],
            disputed=True,
            duration_ms=300,
            created_at=at or utcnow(),
        )
    )
    await db.commit()


async def paused_by_hub(db: AsyncSession, agent: Agent) -> None:
    await db.exec(update(Agent).where(col(Agent.id) == agent.pk).values(paused=True, paused_reason=REASON))
    await db.commit()


def seen(html: str) -> str:
    """The text a person reads, with entities such as &#39; read as the characters they are."""
    return entities.unescape(text_of(html))


def agent_row(html: str, name: str) -> str:
    return seen(html.split(f'data-name="{name}"')[1].split("</tr>")[0].split(">", 1)[1])


async def test_owners_see_disputed_requests_and_the_hubs_reason_on_my_gpus(client: Client, db: AsyncSession) -> None:
    pat = await person(db, "pat@lab.example.org")
    mia = await person(db, "mia@lab.example.org")
    rig, _ = await agents.create_agent(db, pat, name="desk-4090")
    calm, _ = await agents.create_agent(db, pat, name="old-3090")
    for _ in range(3):
        await disputed(db, mia, rig)
    await disputed(db, mia, rig, at=utcnow() - timedelta(days=40))  # too old to show
    await paused_by_hub(db, rig)
    await sign_in(client, db, pat)

    page = (await client.get("/gpus")).text
    live = (await client.get("/gpus/live", headers={"hx-request": "true"})).text

    for html in (page, live):
        row = agent_row(html, "desk-4090")
        assert f"{REASON} Only an admin can resume it." in row
        assert "Resume" not in row
        assert html.split('data-name="desk-4090"')[1].split('class="disputed">')[1].startswith("3<")
        assert html.split('data-name="old-3090"')[1].split('class="disputed">')[1].startswith("0<")
        assert "5 within 60 minutes pause the GPU until an admin clears it" in seen(html)
    assert calm.id is not None


async def test_the_owners_resume_is_refused_with_the_reason(client: Client, db: AsyncSession) -> None:
    pat = await person(db, "pat@lab.example.org")
    rig, _ = await agents.create_agent(db, pat, name="desk-4090")
    await paused_by_hub(db, rig)
    await sign_in(client, db, pat)

    response = await post_form(client, "/gpus", f"/gpus/{rig.pk}/resume")

    assert response.status_code == 403
    assert f"Only an admin can resume desk-4090. {REASON}" in seen(response.text)
    assert "Only an admin can resume it." in agent_row((await client.get("/gpus")).text, "desk-4090")


async def test_admins_see_disputes_per_agent_and_the_latest_with_reported_and_billed_tokens(
    client: Client, db: AsyncSession
) -> None:
    adam = await person(db, "adam@lab.example.org", Role.ADMIN)
    pat = await person(db, "pat@lab.example.org")
    mia = await person(db, "mia@lab.example.org")
    rig, _ = await agents.create_agent(db, pat, name="desk-4090")
    honest, _ = await agents.create_agent(db, mia, name="lab-a100")
    await disputed(db, mia, rig, at=utcnow() - timedelta(minutes=5))
    await disputed(db, mia, rig, reported=(5_000_000, 7), billed=(1_200, 7))
    await paused_by_hub(db, rig)
    await sign_in(client, db, adam)

    page = (await client.get("/admin/usage")).text
    section = page.split('id="disputes"')[1].split("</section>")[0]

    assert agent_row(section, "desk-4090 (pat@lab.example.org)") == (
        f"desk-4090 (pat@lab.example.org) #{rig.pk} 2 {REASON} Clear and resume"
    )
    assert "lab-a100" not in section
    latest = [seen(part.split("</tr>")[0]) for part in section.split('class="disputed-request">')[1:]]
    assert [line.split(" ", 2)[2] for line in latest] == [
        "desk-4090 (pat@lab.example.org) llama-3-8b 5,000,000 / 7 1,200 / 7",
        "desk-4090 (pat@lab.example.org) llama-3-8b 900 / 90,000 900 / 512",
    ]
    assert honest.id is not None


async def test_an_admin_clears_the_pause_from_the_usage_page(app: Litestar, client: Client, db: AsyncSession) -> None:
    adam = await person(db, "adam@lab.example.org", Role.ADMIN)
    pat = await person(db, "pat@lab.example.org")
    rig, _ = await agents.create_agent(db, pat, name="desk-4090")
    await paused_by_hub(db, rig)
    rig.paused = True
    link = connected(runtime_of(app).registry, rig)
    await sign_in(client, db, adam)

    response = await post_form(client, "/admin/usage", f"/admin/usage/agents/{rig.pk}/clear")

    assert (response.status_code, response.headers["location"]) == (303, "/admin/usage")
    section = (await client.get("/admin/usage")).text.split('id="disputes"')[1].split("</section>")[0]
    assert "No disputed requests in the last 30 days." in text_of(section)
    assert link.admits(adam.pk)


async def test_admins_set_the_dispute_rule_on_the_money_page(client: Client, db: AsyncSession) -> None:
    adam = await person(db, "adam@lab.example.org", Role.ADMIN)
    await sign_in(client, db, adam)

    saved = await post_form(client, "/admin/money", "/admin/money/disputes", {"limit": "3", "window": "15"})
    refused = await post_form(client, "/admin/money", "/admin/money/disputes", {"limit": "0", "window": "15"})

    assert (saved.status_code, saved.headers["location"]) == (303, "/admin/money")
    assert refused.status_code == 400
    assert "The number of disputes must be between 1 and 1000." in text_of(refused.text)
    form = (await client.get("/admin/money")).text.split('id="disputes"')[1].split("</section>")[0]
    assert 'name="limit" type="number" min="1" max="1000" required value="3"' in form
    assert 'name="window" type="number" min="1" max="10080" required value="15"' in form


async def test_disputes_recorded_by_the_running_app_pause_its_connected_agent(
    app: Litestar, client: Client, db: AsyncSession
) -> None:
    pat = await person(db, "pat@lab.example.org")
    rig, _ = await agents.create_agent(db, pat, name="desk-4090")
    link = connected(runtime_of(app).registry, rig)
    disputes: Disputes = runtime_of(app).disputes
    background: Background = runtime_of(app).background

    for _ in range(5):
        disputes.record(rig.pk)
    await background.drain()

    assert not link.admits(pat.pk)
    await sign_in(client, db, pat)
    row = agent_row((await client.get("/gpus")).text, "desk-4090")
    assert row.startswith(f"desk-4090 {rig.prefix}… paused {REASON} Only an admin can resume it.")
