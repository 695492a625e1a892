"""Credits: a member's balance, what is on hold, and their own ledger history (filtered, paged, as CSV)."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import replace

import pytest
from litestar import Litestar
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.app import create_app
from hub.db import Database
from hub.ledger.grants import deduct, grant, grant_monthly_allowances
from hub.quotas import service as quotas
from hub.runtime import runtime_of
from hub.settings import Settings, StripeSettings
from tests.conftest import browser_for
from tests.credits.club import CREDIT, charged
from tests.support.people import Client, person, sign_in, text_of


def rows(html: str) -> list[str]:
    """The history's rows as the member reads them."""
    return [text_of(row) for row in re.findall(r'<tr class="entry".*?</tr>', html, re.S)]


async def test_a_member_sees_their_balance_what_is_on_hold_and_what_is_available(
    app: Litestar, client: Client, db: AsyncSession
) -> None:
    mia = await person(db, "mia@lab.example.org")
    await grant(db, None, mia, 10 * CREDIT, reason="welcome")
    await runtime_of(app).purses.reserve(mia.pk, 2_500_000, "req-1")  # a request in flight
    await sign_in(client, db, mia)

    page = text_of((await client.get("/credits")).text)

    assert "10 credits" in page
    assert "On hold for requests in flight: 2.5" in page
    assert "Available to spend: 7.5" in page


async def test_the_history_shows_every_movement_with_its_sign_memo_and_running_balance(
    client: Client, db: AsyncSession
) -> None:
    owner = await person(db, "olive@lab.example.org")
    mia = await person(db, "mia@lab.example.org")
    await grant(db, None, mia, 10 * CREDIT, reason="welcome to the club")
    await charged(db, mia, owner, 1_250_000, model="llama-3-8b")
    await deduct(db, None, mia, 3 * CREDIT, reason="test credits returned")
    await sign_in(client, db, mia)

    lines = rows((await client.get("/credits")).text)

    assert [line.split(" ", 2)[2] for line in lines] == [
        "deduct test credits returned -3 5.75",
        "usage llama-3-8b -1.25 8.75",
        "grant welcome to the club +10 10",
    ]


async def test_a_member_filters_the_history_by_kind_and_sees_allowances_as_their_own_kind(
    client: Client, db: AsyncSession
) -> None:
    owner = await person(db, "olive@lab.example.org")
    mia = await person(db, "mia@lab.example.org")
    await quotas.set_default_allowance(db, None, 5 * CREDIT)
    await grant_monthly_allowances(db)
    await grant(db, None, mia, 2 * CREDIT, reason="hackathon")
    await charged(db, mia, owner, CREDIT)
    await sign_in(client, db, mia)

    allowances = rows((await client.get("/credits?kind=allowance")).text)
    grants = rows((await client.get("/credits", params={"kind": "grant"})).text)
    usage = rows((await client.get("/credits?kind=usage")).text)

    assert len(allowances) == 1 and "allowance monthly allowance" in allowances[0]
    assert len(grants) == 1 and "grant hackathon +2" in grants[0]
    assert len(usage) == 1 and "-1" in usage[0]
    assert "No refund entries yet." in text_of((await client.get("/credits?kind=refund")).text)


async def test_an_unknown_kind_is_refused_with_a_readable_message(client: Client, db: AsyncSession) -> None:
    mia = await person(db, "mia@lab.example.org")
    await sign_in(client, db, mia)

    for url in ("/credits?kind=bribes", "/credits/history.csv?kind=<script>"):
        response = await client.get(url)
        assert response.status_code == 400
        assert "There is no kind" in text_of(response.text)


async def test_the_history_is_paged_twenty_five_entries_at_a_time(client: Client, db: AsyncSession) -> None:
    mia = await person(db, "mia@lab.example.org")
    for n in range(1, 31):
        await grant(db, None, mia, n * CREDIT, reason=f"grant {n}")
    await sign_in(client, db, mia)

    first = await client.get("/credits")
    older = re.search(r'href="(/credits\?before=\d+)"', first.text)
    assert older, "page one links to the older entries"
    second = await client.get(older.group(1))
    newer = re.search(r'href="(/credits\?after=\d+)"', second.text)
    assert newer, "page two links back to the newer entries"
    back = await client.get(newer.group(1))

    assert len(rows(first.text)) == 25
    assert rows(first.text)[0].endswith("grant 30 +30 465")  # newest first; 1 + 2 + … + 30 = 465
    assert "Newer" not in text_of(first.text)
    assert [line.split(" ")[-3] for line in rows(second.text)] == ["5", "4", "3", "2", "1"]
    assert [line.split(" ")[-1] for line in rows(second.text)] == ["15", "10", "6", "3", "1"]  # running balances
    assert "Older" not in text_of(second.text)
    assert rows(back.text) == rows(first.text) and "Newer" not in text_of(back.text)
    assert "No entries here." in text_of((await client.get("/credits?before=1")).text)
    bad = await client.get("/credits?before=abc")
    assert bad.status_code == 400 and "The entry id must be a whole number" in text_of(bad.text)


async def test_a_page_of_one_kind_keeps_the_running_balance_of_every_entry(client: Client, db: AsyncSession) -> None:
    owner = await person(db, "olive@lab.example.org")
    mia = await person(db, "mia@lab.example.org")
    for n in range(1, 31):
        await grant(db, None, mia, 2 * CREDIT, reason=f"grant {n}")
        await charged(db, mia, owner, CREDIT)
    await sign_in(client, db, mia)

    grants = rows((await client.get("/credits?kind=grant")).text)

    assert len(grants) == 25 and grants[0].endswith("grant 30 +2 31")  # 30 grants of 2, 29 charges of 1
    assert grants[-1].endswith("grant 6 +2 7")


async def test_paging_with_htmx_swaps_only_the_history(client: Client, db: AsyncSession) -> None:
    mia = await person(db, "mia@lab.example.org")
    for n in range(30):
        await grant(db, None, mia, CREDIT, reason=f"grant {n}")
    await sign_in(client, db, mia)
    older = re.search(r'href="(/credits\?before=\d+)"', (await client.get("/credits")).text)
    assert older

    response = await client.get(older.group(1), headers={"HX-Request": "true"})

    assert 'id="history"' in response.text and "<html" not in response.text
    assert len(rows(response.text)) == 5


async def test_the_history_downloads_as_csv_with_the_same_filter(client: Client, db: AsyncSession) -> None:
    owner = await person(db, "olive@lab.example.org")
    mia = await person(db, "mia@lab.example.org")
    await grant(db, None, mia, 1_234 * CREDIT, reason="big, generous grant")
    await charged(db, mia, owner, 500_000, model="=HYPERLINK(evil)")
    await sign_in(client, db, mia)

    everything = await client.get("/credits/history.csv")
    grants = await client.get("/credits/history.csv?kind=grant")

    assert everything.status_code == 200
    assert everything.headers["content-type"].startswith("text/csv")
    assert everything.headers["content-disposition"] == 'attachment; filename="gpuclub-credits.csv"'
    table = list(csv.reader(io.StringIO(everything.text)))
    assert table[0] == ["date (UTC)", "kind", "memo", "amount (credits)", "balance after (credits)"]
    assert [row[1:] for row in table[1:]] == [
        ["usage", "'=HYPERLINK(evil)", "-0.5", "1233.5"],  # a formula is kept from running in a spreadsheet
        ["grant", "big, generous grant", "1234", "1234"],
    ]
    assert grants.headers["content-disposition"] == 'attachment; filename="gpuclub-credits-grant.csv"'
    assert [row[1] for row in csv.reader(io.StringIO(grants.text))][1:] == ["grant"]


async def test_a_member_sees_only_their_own_history(client: Client, their_browser: Client, db: AsyncSession) -> None:
    mia = await person(db, "mia@lab.example.org")
    max_ = await person(db, "max@lab.example.org")
    await grant(db, None, mia, 7 * CREDIT, reason="for mia only")
    await sign_in(client, db, max_)

    page = await client.get("/credits")
    exported = await client.get("/credits/history.csv")

    assert "for mia only" not in page.text and "No entries yet." in text_of(page.text)
    assert "for mia only" not in exported.text
    assert "0 credits" in text_of(page.text)


@pytest.mark.parametrize("stripe", [False, True], ids=["without-stripe", "with-stripe"])
async def test_buy_credits_is_offered_only_when_stripe_is_configured(
    settings: Settings, database: Database, db: AsyncSession, stripe: bool
) -> None:
    configured = replace(settings, stripe=StripeSettings("sk_test_x", "whsec_x")) if stripe else settings
    app: Litestar = create_app(configured, database)
    mia = await person(db, "mia@lab.example.org")
    async with browser_for(app) as browser:
        await sign_in(browser, db, mia)
        page = await browser.get("/credits")

    assert ('href="/credits/buy"' in page.text) is stripe
