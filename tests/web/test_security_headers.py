"""Every answer tells the browser to run only the hub's own scripts and styles and never to sniff a content type."""

from __future__ import annotations

from dataclasses import replace

import httpx
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.app import create_app
from hub.db import Database
from hub.settings import Settings, StripeSettings
from tests.conftest import browser_for
from tests.support.people import Client, api_key, person, sign_in


def directives(response: httpx.Response) -> dict[str, str]:
    policy = response.headers["content-security-policy"]
    return {name: value for name, _, value in (part.strip().partition(" ") for part in policy.split(";"))}


def assert_page_headers(response: httpx.Response) -> None:
    policy = directives(response)
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["object-src"] == "'none'" and policy["base-uri"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["x-frame-options"] == "DENY"
    assert len(response.headers.get_list("content-security-policy")) == 1


def assert_api_headers(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert directives(response) == {"default-src": "'none'", "frame-ancestors": "'none'"}


async def test_a_page_forbids_inline_script_and_framing(client: Client) -> None:
    response = await client.get("/")

    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert_page_headers(response)


async def test_an_htmx_fragment_carries_the_same_headers(client: Client, db: AsyncSession) -> None:
    await sign_in(client, db, await person(db, "alice@lab.example.org"))

    response = await client.get("/keys", headers={"HX-Request": "true"})

    assert response.status_code == 200
    assert 'id="keys"' in response.text and "<html" not in response.text
    assert_page_headers(response)


async def test_an_error_page_carries_the_headers(client: Client) -> None:
    missing = await client.get("/no/such/page")
    wrong_method = await client.delete("/dashboard")

    assert missing.status_code == 404
    assert_page_headers(missing)
    assert wrong_method.status_code == 405
    assert_page_headers(wrong_method)


async def test_a_redirect_carries_the_headers(client: Client) -> None:
    response = await client.get("/keys", follow_redirects=False)

    assert response.status_code == 303
    assert_page_headers(response)


async def test_static_files_are_not_sniffed(client: Client) -> None:
    response = await client.get("/static/app.js")

    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_a_v1_error_is_not_sniffed_and_runs_nothing(client: Client) -> None:
    response = await client.post("/v1/chat/completions", json={"model": "m", "messages": []})

    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert_api_headers(response)


async def test_a_v1_answer_is_not_sniffed_and_runs_nothing(client: Client, db: AsyncSession) -> None:
    secret = await api_key(db, await person(db, "alice@lab.example.org"))

    response = await client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})

    assert response.status_code == 200 and response.json()["object"] == "list"
    assert_api_headers(response)


async def test_forms_may_go_to_stripe_checkout_only_when_purchases_are_on(
    client: Client, settings: Settings, database: Database
) -> None:
    stripe = StripeSettings("sk_test_x", "whsec_x")
    async with browser_for(create_app(replace(settings, stripe=stripe), database)) as selling:
        on = await selling.get("/")
    off = await client.get("/")

    assert directives(on)["form-action"] == "'self' https://checkout.stripe.com"
    assert directives(off)["form-action"] == "'self'"
