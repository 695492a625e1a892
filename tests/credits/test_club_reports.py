"""Admin → Usage (the whole club by member, agent and model) and Admin → Ledger (the check and the totals)."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import Role
from hub.agents import service as agents
from hub.credits import club
from hub.ledger.grants import grant
from hub.ledger.models import Account
from tests.credits.club import CREDIT, charged, used
from tests.support.people import Client, person, sign_in, text_of


def row(html: str, section: str, name: str) -> str:
    part = html.split(f'id="{section}"')[1].split("</section>")[0]
    return text_of(part.split(f'data-name="{name}"')[1].split("</tr>")[0].split(">", 1)[1])


async def test_admins_see_the_clubs_usage_spending_and_earnings_by_member_agent_and_model(
    client: Client, db: AsyncSession
) -> None:
    adam = await person(db, "adam@lab.example.org", Role.ADMIN, name="Adam")
    pat = await person(db, "pat@lab.example.org", name="Pat")
    mia = await person(db, "mia@lab.example.org", name="Mia")
    rig, _ = await agents.create_agent(db, pat, name="desk-4090")
    await grant(db, None, mia, 10 * CREDIT)
    await used(db, mia, model="llama-3-8b", prompt=400, completion=100, agent_id=rig.id, cost=CREDIT, earned=900_000)
    await used(db, mia, model="llama-3-8b", prompt=600, completion=100, agent_id=rig.id, cost=CREDIT, earned=900_000)
    await charged(db, mia, pat, 2 * CREDIT, model="llama-3-8b", fee_bps=1000)
    await used(db, pat, model="qwen-72b", prompt=50, completion=5, agent_id=rig.id)  # on his own GPU: free
    await sign_in(client, db, adam)

    page = (await client.get("/admin/usage")).text

    assert row(page, "by-member", "Mia (mia@lab.example.org)") == "Mia (mia@lab.example.org) 2 1,000 200 2 0"
    assert row(page, "by-member", "Pat (pat@lab.example.org)") == "Pat (pat@lab.example.org) 1 50 5 0 1.8"
    assert row(page, "by-agent", "desk-4090 (pat@lab.example.org)") == "desk-4090 (pat@lab.example.org) 3 1,050 205"
    assert row(page, "by-model", "llama-3-8b") == "llama-3-8b 2 1,000 200 2 0.2"
    assert row(page, "by-model", "qwen-72b") == "qwen-72b 1 50 5 0 0"
    assert "3 requests, 1,255 tokens, 2 credits paid" in text_of(page)


async def test_the_ledger_page_says_all_good_and_shows_the_club_account_and_totals(
    client: Client, db: AsyncSession
) -> None:
    adam = await person(db, "adam@lab.example.org", Role.ADMIN)
    pat = await person(db, "pat@lab.example.org")
    mia = await person(db, "mia@lab.example.org")
    await grant(db, None, mia, 10 * CREDIT)
    await charged(db, mia, pat, 2 * CREDIT, fee_bps=1000)
    await sign_in(client, db, adam)

    page = (await client.get("/admin/ledger")).text

    assert "All good" in text_of(page)
    assert "The club's fee income: 0.2 credits." in text_of(page)
    kinds = {kind: text_of(line.split(">", 1)[1].split("</tr>")[0]) for kind, line in _kinds(page)}
    assert kinds == {"club": "club 1 0.2 0", "issuance": "issuance 1 -10 0", "member": "member 2 9.8 0"}
    assert "All 0" in text_of(page.split("<tfoot>")[1])


async def test_the_ledger_page_lists_what_is_wrong_when_a_cached_balance_drifts(
    client: Client, db: AsyncSession
) -> None:
    adam = await person(db, "adam@lab.example.org", Role.ADMIN)
    mia = await person(db, "mia@lab.example.org")
    await grant(db, None, mia, 10 * CREDIT)
    await db.exec(update(Account).where(col(Account.user_id) == mia.pk).values(balance=11 * CREDIT))
    await db.commit()
    await sign_in(client, db, adam)

    page = text_of((await client.get("/admin/ledger")).text)

    assert "All good" not in page
    assert "The ledger has 1 problem:" in page
    assert "caches a balance of 11000000 but its entries sum to 10000000" in page


async def test_the_ledger_check_says_how_far_it_got_and_checks_everything_when_asked(
    client: Client, db: AsyncSession
) -> None:
    adam = await person(db, "adam@lab.example.org", Role.ADMIN)
    mia = await person(db, "mia@lab.example.org")
    for _ in range(5):
        await grant(db, None, mia, CREDIT)
    await db.exec(update(Account).where(col(Account.user_id) == mia.pk).values(balance=6 * CREDIT))
    await db.commit()

    partly = await club.ledger_health(db, adam, seconds=0, batch=2)
    wholly = await club.ledger_health(db, adam, whole=True)
    to_the_end = await club.ledger_health(db, adam, batch=2)  # every batch within the time allowed
    await sign_in(client, db, adam)
    page = text_of((await client.get("/admin/ledger")).text)
    asked = text_of((await client.get("/admin/ledger?whole=1")).text)

    assert (partly.checked, partly.transactions, partly.whole, partly.problems) == (2, 5, False, [])
    assert (wholly.checked, wholly.whole) == (5, True)
    assert (to_the_end.checked, to_the_end.whole, to_the_end.problems) == (5, True, wholly.problems)
    assert [p for p in wholly.problems if "caches a balance of 6000000 but its entries sum to 5000000" in p]
    assert "Checked 5 of 5 transactions." in page and "The ledger has 1 problem:" in page
    assert "Checked 5 of 5 transactions." in asked


def _kinds(html: str) -> list[tuple[str, str]]:
    return [(part.split('"', 1)[0], part) for part in html.split('<tr class="kind" data-kind="')[1:]]
