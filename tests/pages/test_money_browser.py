"""Money in a real Chromium: a member goes to pay for a pack an admin put on sale; an admin grants credits."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, Route, expect
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.accounts.models import Role
from tests.billing.steps import SECRET_KEY, WEBHOOK_SECRET
from tests.pages.conftest import PageFactory
from tests.support.cluster import provision
from tests.support.fake_stripe import FakeStripe, fake_stripe
from tests.support.hub import LiveHub, hub_env, live_hub
from tests.support.processes import free_port

ADMIN = "ada@lab.example.org"
MEMBER = "milo@lab.example.org"
CHECKOUT = "https://checkout.stripe.com/"


@dataclass
class Club:
    hub: LiveHub
    stripe: FakeStripe


@pytest.fixture
def club(tmp_path: Path) -> Iterator[Club]:
    """A hub process selling credits through the recording fake of Stripe's API."""
    with fake_stripe(SECRET_KEY) as stripe:
        env = hub_env(
            tmp_path / "hub",
            port=free_port(),
            GPUCLUB_STRIPE_SECRET_KEY=SECRET_KEY,
            GPUCLUB_STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
            GPUCLUB_STRIPE_API_BASE=stripe.url,
        )
        with live_hub(env) as hub:
            yield Club(hub, stripe)


def sign_in(page: Page, hub: LiveHub, email: str, role: Role = Role.MEMBER) -> int:
    """Add the member and open a one-time sign-in link in `page`; returns the member's id."""

    async def link(db: AsyncSession) -> tuple[int, str]:
        user = await accounts.find_by_email(db, email) or await accounts.add_member(db, email, role=role)
        return user.pk, await accounts.create_login_link(db, user, minutes=5)

    user_id, token = provision(hub, link)
    page.goto(f"{hub.url}/login/{token}")
    page.wait_for_url(f"{hub.url}/dashboard")
    return user_id


def stripe_payment_page(route: Route) -> None:
    """Stripe's own page is not ours to load; the browser only has to arrive there."""
    route.fulfill(status=200, content_type="text/html", body="<title>Stripe Checkout</title><h1>Pay gpuclub</h1>")


@pytest.mark.browser
def test_a_member_buys_a_pack_the_admin_put_on_sale_and_lands_on_stripe_checkout(
    club: Club, page: Page, new_page: PageFactory, tmp_path: Path
) -> None:
    hub = club.hub
    sign_in(page, hub, ADMIN, Role.ADMIN)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    page.get_by_role("navigation", name="Admin").get_by_role("link", name="Credit packs").click()
    page.wait_for_url(f"{hub.url}/admin/packs")
    page.get_by_label("Name").fill("Lab pack")
    page.get_by_label("Credits", exact=True).fill("250")
    page.get_by_label("Price").fill("12.50")
    page.get_by_label("Currency").fill("EUR")
    page.get_by_role("button", name="Add pack").click()
    expect(page.get_by_role("status").filter(has_text="Added Lab pack.")).to_be_visible()
    pack = page.locator("tr.pack", has_text="Lab pack")
    expect(pack).to_contain_text("250")
    expect(pack).to_contain_text("12.50 EUR")
    expect(pack.locator(".badge")).to_have_text("on sale")
    pack_id = pack.get_attribute("data-pack")

    buyer = new_page()
    buyer.context.route(f"{CHECKOUT}**", stripe_payment_page)
    member_id = sign_in(buyer, hub, MEMBER)
    buyer.get_by_role("navigation", name="Main").get_by_role("link", name="Credits").click()
    buyer.wait_for_url(f"{hub.url}/credits")
    buyer.get_by_role("link", name="Buy credits").click()
    buyer.wait_for_url(f"{hub.url}/credits/buy")
    row = buyer.locator("tr.pack", has_text="Lab pack")
    expect(row).to_contain_text("250")
    expect(row).to_contain_text("12.50 EUR")
    shot = tmp_path / "buy-credits.png"
    buyer.screenshot(path=str(shot), full_page=True)
    print(f"screenshot of the Buy credits page: {shot}")

    row.get_by_role("button", name="Buy").click()
    buyer.wait_for_url(f"{CHECKOUT}**")
    expect(buyer.get_by_role("heading", name="Pay gpuclub")).to_be_visible()
    (sent,) = club.stripe.calls("POST", "/v1/checkout/sessions")
    (session,) = club.stripe.sessions.values()
    assert buyer.url.startswith(session["url"]), buyer.url
    (item,) = sent.params["line_items"]
    assert item["price_data"]["unit_amount"] == "1250" and item["price_data"]["currency"] == "eur"
    assert item["price_data"]["product_data"]["name"] == "Lab pack (250 credits)"
    assert sent.params["metadata"] == {"pack_id": pack_id, "user_id": str(member_id), "credits": "250"}
    assert sent.params["customer_email"] == MEMBER

    # Back on the hub (Stripe's cancel link), the purchase waits for Stripe's word.
    buyer.goto(sent.params["cancel_url"])
    expect(buyer.get_by_role("status")).to_have_text("Checkout was cancelled; nothing was charged.")
    expect(buyer.locator("tr.purchase", has_text="Lab pack").locator(".badge")).to_have_text("pending")
    shot = tmp_path / "buy-credits-back.png"
    buyer.screenshot(path=str(shot), full_page=True)
    print(f"screenshot of the Buy credits page after Checkout: {shot}")


@pytest.mark.browser
def test_credits_an_admin_grants_show_in_the_members_balance_and_history(
    club: Club, page: Page, new_page: PageFactory
) -> None:
    hub = club.hub
    member = new_page()
    sign_in(member, hub, MEMBER)
    member.goto(f"{hub.url}/credits")
    expect(member.locator("[data-balance]")).to_have_text("0")
    expect(member.get_by_text("No entries yet.")).to_be_visible()

    sign_in(page, hub, ADMIN, Role.ADMIN)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    page.get_by_role("navigation", name="Admin").get_by_role("link", name="Money").click()
    page.wait_for_url(f"{hub.url}/admin/money")
    grants = page.locator("#grants")
    grants.get_by_label("Member email").fill(MEMBER)
    grants.get_by_label("Credits").fill("7.5")
    grants.get_by_label("Reason").fill("welcome gift")
    grants.get_by_role("button", name="Grant").click()
    expect(page.get_by_role("status")).to_have_text(f"Granted 7.5 credits to {MEMBER}.")

    member.reload()
    expect(member.locator("[data-balance]")).to_have_text("7.5")
    expect(member.locator("[data-available]")).to_have_text("7.5")
    entry = member.locator("tr.entry", has_text="welcome gift")
    expect(entry).to_have_count(1)
    expect(entry.locator("td.amount")).to_have_text("+7.5")
    expect(entry).to_contain_text(re.compile(r"\bgrant\b"))
