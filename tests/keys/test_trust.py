"""Limiting whose GPUs see a key's prompts, on the API keys page and in the key check that `/v1` uses."""

from __future__ import annotations

import re

import pytest
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.accounts.models import Role
from hub.db import Database
from hub.errors import BadRequest, NotFound
from hub.keys import service as keys
from hub.keys.cache import KeyCache
from hub.keys.models import ApiKey, TrustedProvider
from hub.keys.trust import Scope, Trust
from tests.support.people import Client, person, post_form, sign_in, text_of


def reach_of(html: str, name: str) -> str:
    """What the API keys page says the key reaches: the visible text of its row's Reaches cell."""
    row = re.search(rf'<tr class="key [^"]*" data-name="{re.escape(name)}">(.*?)</tr>', html, re.S)
    assert row, f"no row for the key {name}"
    cell = re.search(r'<td class="reach">(.*?)<details', row.group(1), re.S)
    assert cell
    return text_of(cell.group(1))


async def test_a_key_made_with_trusted_members_says_whose_gpus_it_reaches(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    await person(db, "bob@lab.example.org")
    await person(db, "cy@lab.example.org")
    await sign_in(client, db, alice)

    created = await post_form(
        client,
        "/keys",
        "/keys",
        {
            "name": "careful",
            "trust": "trusted",
            "trusted": "Bob@lab.example.org, cy@lab.example.org alice@lab.example.org",
        },
    )

    assert created.status_code == 200
    assert reach_of(created.text, "careful") == "own GPUs and bob@lab.example.org, cy@lab.example.org"


@pytest.mark.parametrize(
    ("trust", "label"),
    [("", "any GPU"), ("own", "own GPUs only"), ("verified", "own GPUs and verified agents")],
    ids=["default", "own", "verified"],
)
async def test_a_new_key_shows_its_scope_on_its_row(client: Client, db: AsyncSession, trust: str, label: str) -> None:
    alice = await person(db, "alice@lab.example.org")
    await sign_in(client, db, alice)

    await post_form(client, "/keys", "/keys", {"name": "laptop", "trust": trust} if trust else {"name": "laptop"})

    assert reach_of((await client.get("/keys")).text, "laptop") == label


@pytest.mark.parametrize(
    ("trusted", "message"),
    [
        ("nobody@lab.example.org", "nobody@lab.example.org is not a member of this club"),
        ("gone@lab.example.org", "gone@lab.example.org is not a member of this club"),
        ("not an address", "is not an email address"),
        ("", "Name at least one other member"),
        ("alice@lab.example.org", "Name at least one other member"),
    ],
    ids=["unknown", "removed", "not-an-email", "nobody", "only-themselves"],
)
async def test_trusting_someone_who_is_not_another_member_is_refused_and_stores_nothing(
    client: Client, db: AsyncSession, trusted: str, message: str
) -> None:
    alice = await person(db, "alice@lab.example.org")
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    gone = await person(db, "gone@lab.example.org")
    await accounts.remove(db, owner, gone.pk)
    await sign_in(client, db, alice)

    response = await post_form(client, "/keys", "/keys", {"name": "k", "trust": "trusted", "trusted": trusted})

    assert response.status_code == 400
    assert message in text_of(response.text)
    assert (await db.exec(select(ApiKey))).all() == []


async def test_an_unknown_scope_is_refused(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    await sign_in(client, db, alice)

    response = await post_form(client, "/keys", "/keys", {"name": "k", "trust": "everyone"})

    assert response.status_code == 400
    assert "any, own, trusted or verified" in text_of(response.text)
    assert (await db.exec(select(ApiKey))).all() == []


async def test_changing_a_keys_scope_replaces_whom_it_trusts(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    bob = await person(db, "bob@lab.example.org")
    cy = await person(db, "cy@lab.example.org")
    key, _ = await keys.create_key(db, alice, name="script", trust=Trust.TRUSTED, trusted=[bob.email])
    await sign_in(client, db, alice)
    action = f"/keys/{key.id}/scope"

    moved = await post_form(client, "/keys", action, {"trust": "trusted", "trusted": cy.email}, follow_redirects=True)
    trusting_cy = await keys.scope_of(db, await keys.get_owned(db, alice, key.id or 0))
    own = await post_form(client, "/keys", action, {"trust": "own", "trusted": cy.email})

    assert reach_of(moved.text, "script") == "own GPUs and cy@lab.example.org"
    assert trusting_cy == Scope(Trust.TRUSTED, frozenset({cy.pk}))
    assert (own.status_code, own.headers["location"]) == (303, "/keys")
    assert reach_of((await client.get("/keys")).text, "script") == "own GPUs only"
    assert (await db.exec(select(TrustedProvider))).all() == []


async def test_changing_a_scope_with_htmx_answers_with_the_key_list(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    key, _ = await keys.create_key(db, alice, name="script")
    await sign_in(client, db, alice)
    page = await client.get("/keys")
    token = page.text.split('name="_csrf_token" value="')[1].split('"')[0]

    response = await client.post(
        f"/keys/{key.id}/scope",
        data={"_csrf_token": token, "trust": "verified"},
        headers={"HX-Request": "true", "X-CSRFToken": token},
    )

    assert response.status_code == 200
    assert response.text.lstrip().startswith('<section id="keys"')
    assert "script now reaches your own GPUs and agents an admin has verified" in text_of(response.text)


async def test_someone_elses_key_scope_cannot_be_changed(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    bob = await person(db, "bob@lab.example.org")
    key, _ = await keys.create_key(db, alice, name="alices")
    await sign_in(client, db, bob)

    response = await post_form(client, "/keys", f"/keys/{key.id}/scope", {"trust": "own"})

    assert response.status_code == 404
    with pytest.raises(NotFound):
        await keys.set_scope(db, bob, key.id or 0, trust=Trust.OWN)
    assert (await db.exec(select(ApiKey.trust))).all() == ["any"]


async def test_a_revoked_keys_scope_cannot_be_changed(db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    key, _ = await keys.create_key(db, alice, name="old")
    await keys.revoke(db, alice, key.id or 0)

    with pytest.raises(BadRequest, match="revoked"):
        await keys.set_scope(db, alice, key.id or 0, trust=Trust.OWN)


async def test_the_key_check_carries_the_keys_scope(db: AsyncSession, database: Database) -> None:
    alice = await person(db, "alice@lab.example.org")
    bob = await person(db, "bob@lab.example.org")
    _, trusting = await keys.create_key(db, alice, name="t", trust=Trust.TRUSTED, trusted=[bob.email])
    _, verified = await keys.create_key(db, alice, name="v", trust=Trust.VERIFIED)
    _, anything = await keys.create_key(db, alice, name="a")
    cache = KeyCache()

    callers = [await cache.lookup(database.session, secret) for secret in (trusting, verified, anything)]

    assert [caller.scope for caller in callers] == [
        Scope(Trust.TRUSTED, frozenset({bob.pk})),
        Scope(Trust.VERIFIED),
        Scope(Trust.ANY),
    ]


def test_a_members_own_gpus_are_inside_every_scope_and_each_scope_admits_only_its_providers() -> None:
    me, friend, stranger = 1, 2, 3
    scopes = {
        "any": Scope(),
        "own": Scope(Trust.OWN),
        "trusted": Scope(Trust.TRUSTED, frozenset({friend})),
        "verified": Scope(Trust.VERIFIED),
    }

    reach = {
        name: [
            scope.admits(owner_id=owner, verified=verified, user_id=me)
            for owner, verified in ((me, False), (friend, False), (stranger, False), (stranger, True))
        ]
        for name, scope in scopes.items()
    }

    assert reach == {
        "any": [True, True, True, True],
        "own": [True, False, False, False],
        "trusted": [True, True, False, False],
        "verified": [True, False, False, True],
    }
