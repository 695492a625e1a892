"""Who may open which page and take which action: every route of the app, for every persona.

The personas are the owner, an admin, a member who owns an API key, another member, and someone signed out.
A refused request must change nothing, so each refusal also compares the club before and after.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.routes import HTTPRoute
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import Role, User, WebSession
from hub.agents import service as agents
from hub.agents.models import Agent
from hub.app import create_app
from hub.club.models import ClubSetting
from hub.invitations import service as invitations
from hub.invitations.models import DomainRule, Invitation
from hub.keys import service as keys
from hub.keys.models import ApiKey
from hub.ledger.models import LedgerTransaction
from hub.pricing import service as pricing
from hub.pricing.models import Price
from hub.quotas.models import MemberPolicy
from hub.settings import Settings
from hub.tokenizers import service as tokenizers
from hub.tokenizers.models import ModelTokenizer
from tests.support.people import Client, person, sign_in, text_of
from tests.tokenizers.making import tokenizer_json

SIGNED_IN = frozenset({"owner", "admin", "member", "another member"})
ADMINS = frozenset({"owner", "admin"})
PERSONAS = ["owner", "admin", "member", "another member", "signed out"]

TITLES = {403: "Not allowed", 404: "Not found"}
_HX_CSRF = re.compile(r'"x-csrftoken": "([^"]+)"')


@dataclass(frozen=True)
class Route:
    """One page or action; `path` names the club's rows as {member}, {key}, {invitation}, {rule} and {agent}."""

    method: str
    path: str
    allowed: frozenset[str]
    status: int  # what someone allowed gets
    location: str | None = None  # where a 303 sends them
    refused: int = 403  # what a signed-in person who is not allowed gets
    data: dict[str, str] = field(default_factory=dict)
    upload: str | None = None  # a file field: the form goes as multipart/form-data with a tokenizer.json in it

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ROUTES = [
    Route("GET", "/dashboard", SIGNED_IN, 200),
    Route("GET", "/keys", SIGNED_IN, 200),
    Route("GET", "/gpus", SIGNED_IN, 200),
    Route("GET", "/gpus/live", SIGNED_IN, 200),
    Route("GET", "/models", SIGNED_IN, 200),
    Route("POST", "/models/try", SIGNED_IN, 404, data={"model": "m", "prompt": "hi"}),  # no GPU: "no such model"
    Route("POST", "/gpus", SIGNED_IN, 200, data={"name": "spare box"}),
    # GPUs are personal too: only their owner may change them, and to anyone else they do not exist.
    Route("POST", "/gpus/{agent}/share", frozenset({"member"}), 303, "/gpus", refused=404),
    Route("POST", "/gpus/{agent}/private", frozenset({"member"}), 303, "/gpus", refused=404),
    Route("POST", "/gpus/{agent}/rename", frozenset({"member"}), 303, "/gpus", refused=404, data={"name": "desk"}),
    Route("POST", "/gpus/{agent}/revoke", frozenset({"member"}), 303, "/gpus", refused=404),
    Route("GET", "/admin", ADMINS, 303, "/admin/members"),
    Route("GET", "/admin/members", ADMINS, 200),
    Route("GET", "/admin/invitations", ADMINS, 200),
    Route("GET", "/admin/settings", ADMINS, 200),
    Route("POST", "/keys", SIGNED_IN, 200, data={"name": "laptop"}),
    # Keys are personal: even the owner of the club gets "not found" for someone else's key.
    Route("POST", "/keys/{key}/revoke", frozenset({"member"}), 303, "/keys", refused=404),
    Route("POST", "/keys/{key}/scope", frozenset({"member"}), 303, "/keys", refused=404, data={"trust": "own"}),
    Route("POST", "/keys/{key}/settings", frozenset({"member"}), 303, "/keys", refused=404, data={"name": "ci"}),
    Route("GET", "/admin/gpus", ADMINS, 200),
    Route("POST", "/admin/gpus/{agent}/verify", ADMINS, 303, "/admin/gpus"),
    Route("POST", "/admin/gpus/{agent}/unverify", ADMINS, 303, "/admin/gpus"),
    Route("POST", "/admin/members/{member}/role", ADMINS, 303, "/admin/members", data={"role": "admin"}),
    Route("POST", "/admin/members/{member}/suspend", ADMINS, 303, "/admin/members"),
    Route("POST", "/admin/members/{member}/reactivate", ADMINS, 303, "/admin/members"),
    Route("POST", "/admin/members/{member}/remove", ADMINS, 303, "/admin/members"),
    Route("GET", "/admin/members/{member}", ADMINS, 200),
    Route("POST", "/admin/members/{member}/credits", ADMINS, 303, "/admin/members/{member}", data={"amount": "5"}),
    Route("POST", "/admin/members/{member}/limits", ADMINS, 303, "/admin/members/{member}", data={"rpm": "5"}),
    Route("POST", "/admin/members/low-balance", ADMINS, 303, "/admin/members", data={"below": "2"}),
    Route("POST", "/admin/invitations", ADMINS, 200, data={"role": "member", "max_uses": "1", "expires": "7d"}),
    Route("POST", "/admin/invitations/{invitation}/revoke", ADMINS, 303, "/admin/invitations"),
    Route("POST", "/admin/invitations/{invitation}/link", ADMINS, 200, data={"email": "nia@lab.example.org"}),
    Route("POST", "/admin/settings/club", ADMINS, 303, "/admin/settings", data={"club_name": "Night Owls"}),
    Route("POST", "/admin/settings/domains", ADMINS, 303, "/admin/settings", data={"domain": "new.example.org"}),
    Route("POST", "/admin/settings/domains/{rule}/delete", ADMINS, 303, "/admin/settings"),
    Route("POST", "/logout", SIGNED_IN, 303, "/"),
    Route("GET", "/credits", SIGNED_IN, 200),
    Route("GET", "/credits/history.csv", SIGNED_IN, 200),
    Route("GET", "/usage", SIGNED_IN, 200),
    Route("GET", "/earnings", SIGNED_IN, 200),
    Route("GET", "/requests", SIGNED_IN, 200),
    Route("GET", "/requests.csv", SIGNED_IN, 200),
    Route("GET", "/admin/requests", ADMINS, 200),
    Route("GET", "/admin/requests.csv", ADMINS, 200),
    Route("GET", "/admin/money", ADMINS, 200),
    Route("GET", "/admin/usage", ADMINS, 200),
    Route("GET", "/admin/ledger", ADMINS, 200),
    Route("POST", "/admin/money/prices", ADMINS, 303, "/admin/money", data={"model": "m", "input": "1", "output": "2"}),
    Route("POST", "/admin/money/prices/remove", ADMINS, 303, "/admin/money", data={"model": "*"}),
    Route("POST", "/admin/money/fee", ADMINS, 303, "/admin/money", data={"percent": "10"}),
    Route("POST", "/admin/money/quotas", ADMINS, 303, "/admin/money", data={"rpm": "60"}),
    Route("POST", "/admin/money/allowance", ADMINS, 303, "/admin/money", data={"allowance": "5"}),
    Route(
        "POST", "/admin/money/members", ADMINS, 303, "/admin/money", data={"email": "tess@lab.example.org", "rpm": "5"}
    ),
    Route(
        "POST",
        "/admin/money/credits",
        ADMINS,
        303,
        "/admin/money",
        data={"email": "tess@lab.example.org", "amount": "5"},
    ),
    Route("POST", "/admin/money/disputes", ADMINS, 303, "/admin/money", data={"limit": "3", "window": "30"}),
    # Only an admin lifts the hub's pause, even for the agent's own owner.
    Route("POST", "/admin/usage/agents/{agent}/clear", ADMINS, 303, "/admin/usage"),
    Route("GET", "/admin/tokenizers", ADMINS, 200),
    Route("POST", "/admin/tokenizers", ADMINS, 303, "/admin/tokenizers", data={"model": "qwen"}, upload="file"),
    Route("POST", "/admin/tokenizers/remove", ADMINS, 303, "/admin/tokenizers", data={"model": "llama"}),
    Route("GET", "/admin/probes", ADMINS, 200),
    Route("POST", "/admin/probes/run", ADMINS, 303, "/admin/probes", data={"model": "m"}),
    Route("POST", "/admin/probes/reference", ADMINS, 303, "/admin/probes", data={"model": "m", "agent": ""}),
]
ACTIONS = [route for route in ROUTES if route.method == "POST"]


@dataclass
class Club:
    people: dict[str, User]
    ids: dict[str, int]


async def club(db: AsyncSession) -> Club:
    """The personas, plus a member for admins to manage, the member's key, an invitation, a domain rule, and the
    member's GPU, paused by the hub for repeated disputes."""
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    people = {
        "owner": owner,
        "admin": await person(db, "adam@lab.example.org", Role.ADMIN),
        "member": await person(db, "mia@lab.example.org"),
        "another member": await person(db, "max@lab.example.org"),
    }
    target = await person(db, "tess@lab.example.org")
    key, _ = await keys.create_key(db, people["member"], name="mia's laptop")
    invitation, _ = await invitations.create_invitation(db, owner, note="reading group")
    rule = await invitations.add_domain_rule(db, owner, "lab.example.org")
    await pricing.set_price(db, owner, "*", input_micro=1, output_micro=1)
    await tokenizers.attach(db, owner, "llama", tokenizer_json())
    agent, _ = await agents.create_agent(db, people["member"], name="mia's desk")
    agent.paused, agent.paused_reason = True, "Paused by the hub: 5 usage reports above the hub's bounds in 60 minutes."
    db.add(agent)
    await db.commit()
    assert key.id and invitation.id and rule.id
    ids = {"member": target.pk, "key": key.id, "invitation": invitation.id, "rule": rule.id, "agent": agent.pk}
    return Club(people, ids)


async def snapshot(db: AsyncSession) -> dict[str, Any]:
    """Everything an action could change, as plain values (so nothing is read from the session's cache)."""
    users = select(User.email, User.role, User.status).order_by(col(User.id))
    api_keys = select(ApiKey.id, ApiKey.revoked_at, ApiKey.trust).order_by(col(ApiKey.id))
    invites = select(Invitation.id, Invitation.revoked_at, Invitation.uses).order_by(col(Invitation.id))
    return {
        "users": (await db.exec(users)).all(),
        "keys": (await db.exec(api_keys)).all(),
        "invitations": (await db.exec(invites)).all(),
        "rules": (await db.exec(select(DomainRule.domain).order_by(col(DomainRule.domain)))).all(),
        "club": (await db.exec(select(ClubSetting.key, ClubSetting.value))).all(),
        "sessions": (await db.exec(select(func.count()).select_from(WebSession))).one(),
        "prices": (await db.exec(select(Price.model, Price.input_per_million).order_by(col(Price.model)))).all(),
        "policies": (await db.exec(select(MemberPolicy.user_id, MemberPolicy.rpm))).all(),
        "ledger": (await db.exec(select(func.count()).select_from(LedgerTransaction))).one(),
        "tokenizers": (await db.exec(select(ModelTokenizer.model, ModelTokenizer.sha256))).all(),
        "agents": (
            await db.exec(select(Agent.id, Agent.name, Agent.shared, Agent.paused).order_by(col(Agent.id)))
        ).all(),
        "agent states": (
            await db.exec(
                select(Agent.paused_reason, Agent.verified, Agent.revoked_at, Agent.user_id).order_by(col(Agent.id))
            )
        ).all(),
    }


async def csrf_token(client: Client) -> str:
    """The token every page hands to htmx; the landing page has one too, for people who are signed out."""
    page = await client.get("/", follow_redirects=True)
    match = _HX_CSRF.search(page.text)
    assert match, "the page carries no CSRF token"
    return match.group(1)


async def request(client: Client, route: Route, ids: dict[str, int], *, with_csrf: bool = True) -> httpx.Response:
    path = route.path.format(**ids)
    if route.method == "GET":
        return await client.get(path)
    form = dict(route.data)
    if with_csrf:
        form["_csrf_token"] = await csrf_token(client)
    files = {route.upload: ("tokenizer.json", tokenizer_json())} if route.upload else None
    return await client.post(path, data=form, files=files)


@pytest.mark.parametrize("route", ROUTES, ids=str)
@pytest.mark.parametrize("persona", PERSONAS)
async def test_every_page_and_action_answers_each_persona_as_their_role_allows(
    client: Client, db: AsyncSession, persona: str, route: Route
) -> None:
    members = await club(db)
    if persona != "signed out":
        await sign_in(client, db, members.people[persona])
    before = await snapshot(db)

    response = await request(client, route, members.ids)

    if persona == "signed out":
        assert (response.status_code, response.headers.get("location")) == (303, "/")
    elif persona in route.allowed:
        location = route.location.format(**members.ids) if route.location else None
        assert (response.status_code, response.headers.get("location")) == (route.status, location)
    else:
        assert response.status_code == route.refused
        assert TITLES[route.refused] in text_of(response.text)
    if persona not in route.allowed or persona == "signed out":
        assert await snapshot(db) == before


async def test_a_members_attempt_to_suspend_someone_leaves_them_signed_in_and_active(
    client: Client, db: AsyncSession
) -> None:
    members = await club(db)
    await sign_in(client, db, members.people["member"])

    response = await client.post(
        f"/admin/members/{members.people['another member'].pk}/suspend",
        data={"_csrf_token": await csrf_token(client)},
    )

    assert response.status_code == 403
    assert "Only admins can do that." in text_of(response.text)
    status = select(User.status).where(User.email == "max@lab.example.org")
    assert (await db.exec(status)).one() == "active"


@pytest.mark.parametrize("route", ACTIONS, ids=str)
async def test_an_action_without_a_csrf_token_is_refused_and_changes_nothing(
    client: Client, db: AsyncSession, route: Route
) -> None:
    members = await club(db)
    owner = members.people["owner"]
    await sign_in(client, db, owner)
    await client.get("/dashboard")  # the browser holds the CSRF cookie, as a victim's browser would
    assert "gpuclub_csrf" in client.cookies
    before = await snapshot(db)

    response = await request(client, route, members.ids, with_csrf=False)

    assert response.status_code == 403
    assert "did not come from this site" in text_of(response.text)
    assert await snapshot(db) == before
    assert (await client.get("/dashboard")).status_code == 200


# Routes that answer to something other than a session, each tested where it lives.
NOT_SESSION_ROUTES = {
    ("GET", "/"),  # the landing page, for everyone
    ("GET", "/healthz"),  # for load balancers
    ("GET", "/metrics"),  # an admin's session or an admin's API key: tests/test_health_and_errors.py
    ("GET", "/static/{file_path:path}"),
    ("GET", "/agent/{name:str}"),  # the agent's wheel, public: tests/agent/test_install_from_hub.py
    ("GET", "/login/{token:str}"),  # one-time links: tests/accounts/test_login_links.py
    ("GET", "/setup/{token:str}"),
    ("POST", "/setup/{token:str}"),
    ("GET", "/invite/{token:str}"),  # tests/invitations
    ("POST", "/invite/{token:str}/email"),  # sign-in links by email: tests/signin/test_email_links.py
    ("POST", "/signin/email"),
    ("GET", "/auth/{provider_name:str}/login"),  # OAuth: tests/signin
    ("GET", "/auth/{provider_name:str}/callback"),
    ("POST", "/stripe/webhook"),  # Stripe's signature: tests/billing/test_webhook.py
    ("POST", "/rerank"),  # an API key, like /v1: tests/proxy/test_api_rerank_audio.py
    # Credit packs exist only with Stripe configured: tests/billing/test_packs.py and test_buy.py.
    ("GET", "/credits/buy"),
    ("POST", "/credits/buy/{pack_id:int}"),
    ("GET", "/admin/packs"),
    ("POST", "/admin/packs"),
    ("POST", "/admin/packs/{pack_id:int}/deactivate"),
}


def test_every_route_of_the_app_has_its_persona_cases(tmp_path: Path) -> None:
    app = create_app(Settings(secret_key="k" * 40, database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"))
    listed = [(route.method, re.sub(r"\{[^}]+\}", "1", route.path)) for route in ROUTES]
    missing = []
    for handler in app.routes:
        if not isinstance(handler, HTTPRoute) or handler.path.startswith("/v1/"):  # /v1: API keys, tests/proxy
            continue
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", handler.path) + "$")
        for method in sorted(handler.methods - {"HEAD", "OPTIONS"}):
            if (method, handler.path) in NOT_SESSION_ROUTES:
                continue
            if not any(m == method and pattern.match(path) for m, path in listed):
                missing.append(f"{method} {handler.path}")
    assert missing == [], "add a Route(...) to ROUTES for each of these"
