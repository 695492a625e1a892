"""Admin → Invitations and Admin → Settings: invitation links, their limits, domain rules and the club name."""

from __future__ import annotations

import asyncio
import re

import pytest
from sqlalchemy import func
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub import tokens
from hub.accounts.models import Role
from hub.db import Database
from hub.errors import NotFound
from hub.invitations import service as invitations
from hub.invitations.models import DomainRule, Invitation
from tests.support.people import Client, person, post_form, sign_in, text_of

PAGE = "/admin/invitations"
SETTINGS = "/admin/settings"
NEW = {"role": "member", "max_uses": "1", "expires": "7d", "note": ""}


async def signed_in_admin(client: Client, db: AsyncSession) -> None:
    await sign_in(client, db, await person(db, "adam@lab.example.org", Role.ADMIN))


def invitation_rows(html: str) -> list[str]:
    return [text_of(row) for row in re.findall(r'<tr class="invitation">(.*?)</tr>', html, re.S)]


async def count(db: AsyncSession, table: type[Invitation] | type[DomainRule]) -> int:
    return (await db.exec(select(func.count()).select_from(table))).one()


async def test_a_new_invitation_link_is_shown_once_and_stored_only_as_a_hash(client: Client, db: AsyncSession) -> None:
    await signed_in_admin(client, db)

    created = await post_form(
        client, PAGE, PAGE, {"role": "admin", "max_uses": "3", "expires": "30d", "note": "NLP reading group"}
    )

    assert created.status_code == 200
    assert "Copy it now: it will not be shown again." in text_of(created.text)
    link = created.text.split('id="new-link">')[1].split("<")[0]
    assert link.startswith(f"{client.base_url}/invite/gpi_")
    token = link.rsplit("/", 1)[1]
    stored = (await db.exec(select(Invitation))).one()
    assert stored.token_hash == tokens.digest(token)
    assert token not in repr(stored.model_dump())
    reloaded = await client.get(PAGE)
    assert token not in reloaded.text
    [row] = invitation_rows(reloaded.text)
    assert "admin — anyone NLP reading group 0 / 3" in row and row.endswith(
        "active Email of the invited person Make a sign-in link Revoke"
    )


async def test_the_invitation_landing_page_names_the_role(client: Client, db: AsyncSession) -> None:
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    _, token = await invitations.create_invitation(db, owner, role=Role.ADMIN, note="welcome aboard")

    landing = await client.get(f"/invite/{token}")

    assert landing.status_code == 200
    assert "You're invited to gpuclub" in landing.text
    assert "Sign in to join as admin . welcome aboard" in text_of(landing.text)


async def test_a_revoked_invitation_is_listed_as_revoked_and_its_link_stops_working(
    client: Client, db: AsyncSession
) -> None:
    await signed_in_admin(client, db)
    created = await post_form(client, PAGE, PAGE, NEW)
    token = created.text.split('id="new-link">')[1].split("<")[0].rsplit("/", 1)[1]
    invitation = (await db.exec(select(Invitation))).one()

    revoked = await post_form(client, PAGE, f"{PAGE}/{invitation.id}/revoke", follow_redirects=True)

    [row] = invitation_rows(revoked.text)
    assert row.endswith("revoked") and "Revoke" not in row
    landing = await client.get(f"/invite/{token}")
    assert landing.status_code == 404
    assert "This invitation is not valid any more" in text_of(landing.text)


async def test_an_invitation_admits_no_more_people_than_its_uses(db: AsyncSession) -> None:
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    _, token = await invitations.create_invitation(db, owner, role=Role.ADMIN, max_uses=1)

    assert (await invitations.take_use(db, token)).role == Role.ADMIN
    await db.commit()
    with pytest.raises(NotFound, match="not valid any more"):
        await invitations.take_use(db, token)
    await db.rollback()

    assert (await db.exec(select(Invitation.uses))).one() == 1


async def test_people_joining_at_the_same_moment_cannot_overuse_an_invitation(
    db: AsyncSession, database: Database
) -> None:
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    _, token = await invitations.create_invitation(db, owner, max_uses=2)

    async def join() -> bool:
        async with database.session() as session:
            try:
                await invitations.take_use(session, token)
            except NotFound:
                await session.rollback()
                return False
            await session.commit()
            return True

    admitted = await asyncio.gather(*(join() for _ in range(6)))

    assert sorted(admitted) == [False] * 4 + [True] * 2
    assert (await db.exec(select(Invitation.uses))).one() == 2


async def test_the_list_shows_how_often_an_invitation_was_used(client: Client, db: AsyncSession) -> None:
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    _, token = await invitations.create_invitation(db, owner, max_uses=2, note="used up")
    for _ in range(2):
        await invitations.take_use(db, token)
        await db.commit()
    await sign_in(client, db, owner)

    [row] = invitation_rows((await client.get(PAGE)).text)

    assert "2 / 2" in row and row.endswith("used up")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_uses", "0", "The maximum number of uses must be between 1 and 10000."),
        ("max_uses", "abc", "The maximum number of uses must be a whole number"),
        ("expires", "forever", "The expiry must look like 30m, 12h, 7d or 2w"),
        ("role", "owner", "Invitations are for members and admins"),
        ("role", "king", "The role must be owner, admin or member"),
    ],
    ids=["no-uses", "uses-not-a-number", "expiry-forever", "owner-role", "unknown-role"],
)
async def test_a_bad_invitation_is_refused_with_a_reason_and_nothing_is_stored(
    client: Client, db: AsyncSession, field: str, value: str, message: str
) -> None:
    await signed_in_admin(client, db)

    response = await post_form(client, PAGE, PAGE, {**NEW, field: value})

    assert response.status_code == 400
    assert message in text_of(response.text)
    assert await count(db, Invitation) == 0


async def test_a_domain_rule_is_added_and_removed_on_the_settings_page(client: Client, db: AsyncSession) -> None:
    await signed_in_admin(client, db)

    added = await post_form(
        client, SETTINGS, f"{SETTINGS}/domains", {"domain": "@Lab.Example.org"}, follow_redirects=True
    )

    assert "@lab.example.org → member" in text_of(added.text)
    rule = (await db.exec(select(DomainRule))).one()
    removed = await post_form(client, SETTINGS, f"{SETTINGS}/domains/{rule.id}/delete", follow_redirects=True)
    assert removed.status_code == 200
    assert "@lab.example.org" not in text_of(removed.text)
    assert await count(db, DomainRule) == 0


async def test_a_domain_rule_added_with_htmx_returns_the_rule_list(client: Client, db: AsyncSession) -> None:
    await signed_in_admin(client, db)

    response = await post_form(
        client, SETTINGS, f"{SETTINGS}/domains", {"domain": "lab.example.org"}, headers={"HX-Request": "true"}
    )

    assert response.status_code == 200
    assert 'id="domains"' in response.text and "<html" not in response.text
    assert "@lab.example.org → member" in text_of(response.text)


async def test_a_domain_that_is_not_a_domain_is_refused(client: Client, db: AsyncSession) -> None:
    await signed_in_admin(client, db)

    response = await post_form(client, SETTINGS, f"{SETTINGS}/domains", {"domain": "not a domain"})

    assert response.status_code == 400
    assert "is not a domain name such as lab.example.org" in text_of(response.text)
    assert await count(db, DomainRule) == 0


async def test_a_domain_rule_cannot_be_added_twice(client: Client, db: AsyncSession) -> None:
    await signed_in_admin(client, db)
    await post_form(client, SETTINGS, f"{SETTINGS}/domains", {"domain": "lab.example.org"})

    response = await post_form(client, SETTINGS, f"{SETTINGS}/domains", {"domain": "LAB.example.org"})

    assert response.status_code == 409
    assert "There is already a rule for lab.example.org." in text_of(response.text)
    assert await count(db, DomainRule) == 1


async def test_removing_a_rule_that_is_gone_is_not_found(client: Client, db: AsyncSession) -> None:
    await signed_in_admin(client, db)

    response = await post_form(client, SETTINGS, f"{SETTINGS}/domains/999/delete")

    assert response.status_code == 404
    assert "No such domain rule." in text_of(response.text)


async def test_a_new_club_name_shows_on_the_landing_page(client: Client, db: AsyncSession) -> None:
    await signed_in_admin(client, db)

    saved = await post_form(client, SETTINGS, f"{SETTINGS}/club", {"club_name": "  Night   Owls GPU Club "})
    assert saved.status_code == 303
    await post_form(client, "/dashboard", "/logout")

    landing = await client.get("/")
    assert "<h1>Night Owls GPU Club</h1>" in landing.text
    assert "<title>Sign in · Night Owls GPU Club</title>" in landing.text


async def test_a_club_needs_a_name(client: Client, db: AsyncSession) -> None:
    await signed_in_admin(client, db)

    response = await post_form(client, SETTINGS, f"{SETTINGS}/club", {"club_name": "   "})

    assert response.status_code == 400
    assert "Please give a club name." in text_of(response.text)
    assert 'value="gpuclub"' in (await client.get(SETTINGS)).text
