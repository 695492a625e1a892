"""Admin → Members: list, change roles, suspend, reactivate, remove, and the rules that keep an owner."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.accounts.models import Role, User
from tests.support.people import Client, api_key, person, post_form, sign_in, text_of

MEMBERS = "/admin/members"


async def role_and_status(db: AsyncSession, user: User) -> tuple[str, str]:
    row = (await db.exec(select(User.role, User.status).where(User.id == user.id))).one()
    return row[0], row[1]


def row_of(html: str, email: str) -> str:
    """One member's row on the Members page."""
    return html.split(f'data-email="{email}">')[1].split("</tr>")[0]


def shown(html: str, email: str) -> tuple[str, str]:
    """The role selected and the status badge shown in a member's row."""
    row = row_of(html, email)
    role = re.search(r'<option value="(\w+)" selected>|data-role="(\w+)"', row)
    status = re.search(r'<span class="badge (\w+)">', row)
    assert role and status, row
    return role.group(1) or role.group(2), status.group(1)


async def act(client: Client, user: User, action: str, role: str = "", **kwargs: object) -> httpx.Response:
    return await post_form(client, MEMBERS, f"{MEMBERS}/{user.pk}/{action}", {"role": role} if role else {}, **kwargs)


async def test_admins_see_every_current_member_with_role_and_status(client: Client, db: AsyncSession) -> None:
    adam = await person(db, "adam@lab.example.org", Role.ADMIN)
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    mia = await person(db, "mia@lab.example.org")
    gone = await person(db, "gone@lab.example.org")
    await accounts.suspend(db, owner, mia.pk)
    await accounts.remove(db, owner, gone.pk)
    await sign_in(client, db, adam)

    page = (await client.get(MEMBERS)).text

    assert text_of(row_of(page, "olive@lab.example.org")).startswith("Olive olive@lab.example.org")
    assert shown(page, "olive@lab.example.org") == ("owner", "active")
    assert shown(page, "adam@lab.example.org") == ("admin", "active")
    assert shown(page, "mia@lab.example.org") == ("member", "suspended")
    assert "Reactivate" in text_of(row_of(page, "mia@lab.example.org"))
    assert "you" in text_of(row_of(page, "adam@lab.example.org"))
    assert "Suspend" not in text_of(row_of(page, "adam@lab.example.org"))
    assert "gone@lab.example.org" not in page
    assert "Suspend" not in text_of(row_of(page, "olive@lab.example.org"))  # an admin cannot act on an owner
    assert '<option value="owner"' not in page  # nor make anyone an owner


async def test_an_admin_makes_a_member_an_admin_who_then_sees_the_admin_pages(
    client: Client, their_browser: Client, db: AsyncSession
) -> None:
    adam = await person(db, "adam@lab.example.org", Role.ADMIN)
    mia = await person(db, "mia@lab.example.org")
    await sign_in(client, db, adam)
    await sign_in(their_browser, db, mia)
    assert (await their_browser.get(MEMBERS)).status_code == 403

    changed = await act(client, mia, "role", "admin", follow_redirects=True)

    assert shown(changed.text, "mia@lab.example.org") == ("admin", "active")
    assert (await their_browser.get(MEMBERS)).status_code == 200


async def test_only_an_owner_can_make_someone_an_owner(client: Client, their_browser: Client, db: AsyncSession) -> None:
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    adam = await person(db, "adam@lab.example.org", Role.ADMIN)
    mia = await person(db, "mia@lab.example.org")
    await sign_in(their_browser, db, adam)
    await sign_in(client, db, owner)

    refused = await act(their_browser, mia, "role", "owner")
    assert refused.status_code == 403
    assert "Only an owner can make someone an owner" in text_of(refused.text)
    assert await role_and_status(db, mia) == ("member", "active")

    promoted = await act(client, mia, "role", "owner")
    assert promoted.status_code == 303
    assert await role_and_status(db, mia) == ("owner", "active")


async def test_an_unknown_role_is_refused_with_a_readable_message(client: Client, db: AsyncSession) -> None:
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    mia = await person(db, "mia@lab.example.org")
    await sign_in(client, db, owner)

    response = await act(client, mia, "role", "king")

    assert response.status_code == 400
    assert "The role must be owner, admin or member" in text_of(response.text)
    assert await role_and_status(db, mia) == ("member", "active")


async def test_suspending_a_member_signs_them_out_and_stops_their_keys_at_once(
    client: Client, their_browser: Client, db: AsyncSession
) -> None:
    adam = await person(db, "adam@lab.example.org", Role.ADMIN)
    mia = await person(db, "mia@lab.example.org")
    secret = await api_key(db, mia)
    await sign_in(client, db, adam)
    await sign_in(their_browser, db, mia)
    assert (await their_browser.get("/dashboard")).status_code == 200

    suspended = await act(client, mia, "suspend", follow_redirects=True)

    assert shown(suspended.text, "mia@lab.example.org") == ("member", "suspended")
    refused = await their_browser.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401
    dashboard = await their_browser.get("/dashboard")
    assert (dashboard.status_code, dashboard.headers["location"]) == (303, "/")


async def test_reactivating_a_member_makes_their_keys_work_again_but_they_sign_in_afresh(
    client: Client, their_browser: Client, db: AsyncSession
) -> None:
    adam = await person(db, "adam@lab.example.org", Role.ADMIN)
    mia = await person(db, "mia@lab.example.org")
    secret = await api_key(db, mia)
    await sign_in(client, db, adam)
    await sign_in(their_browser, db, mia)
    await act(client, mia, "suspend")

    reactivated = await act(client, mia, "reactivate", follow_redirects=True)

    assert shown(reactivated.text, "mia@lab.example.org") == ("member", "active")
    assert "Suspend" in text_of(row_of(reactivated.text, "mia@lab.example.org"))
    works = await their_browser.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
    assert works.status_code == 200
    # The suspension ended her sessions for good: the old browser session does not come back.
    assert (await their_browser.get("/dashboard")).headers["location"] == "/"
    await sign_in(their_browser, db, mia)
    assert (await their_browser.get("/dashboard")).status_code == 200


async def test_a_removed_member_leaves_the_list_and_can_no_longer_get_in(
    client: Client, their_browser: Client, db: AsyncSession
) -> None:
    adam = await person(db, "adam@lab.example.org", Role.ADMIN)
    mia = await person(db, "mia@lab.example.org")
    secret = await api_key(db, mia)
    await sign_in(client, db, adam)
    await sign_in(their_browser, db, mia)

    removed = await act(client, mia, "remove", follow_redirects=True)

    assert "mia@lab.example.org" not in removed.text
    assert (await their_browser.get("/dashboard")).headers["location"] == "/"
    assert (await their_browser.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})).status_code == 401
    link = await accounts.create_login_link(db, mia, minutes=5)
    assert (await their_browser.get(f"/login/{link}")).status_code == 403


@pytest.mark.parametrize(
    ("action", "role", "status", "message"),
    [
        ("role", "admin", 409, "You cannot demote the last owner. Make someone else an owner first."),
        ("suspend", "", 400, "You cannot suspend yourself."),
        ("remove", "", 400, "You cannot remove yourself."),
    ],
    ids=["demote", "suspend", "remove"],
)
async def test_the_last_owner_cannot_step_down(
    client: Client, db: AsyncSession, action: str, role: str, status: int, message: str
) -> None:
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    await sign_in(client, db, owner)

    response = await act(client, owner, action, role)

    assert response.status_code == status
    assert message in text_of(response.text)
    assert await role_and_status(db, owner) == ("owner", "active")
    assert (await client.get(MEMBERS)).status_code == 200


async def test_an_owner_can_step_down_once_someone_else_is_an_owner(client: Client, db: AsyncSession) -> None:
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    await person(db, "otto@lab.example.org", Role.OWNER)
    await sign_in(client, db, owner)

    response = await act(client, owner, "role", "admin")

    assert response.status_code == 303
    assert await role_and_status(db, owner) == ("admin", "active")


@pytest.mark.parametrize("action", ["suspend", "remove"])
async def test_an_admin_cannot_suspend_or_remove_themselves(client: Client, db: AsyncSession, action: str) -> None:
    adam = await person(db, "adam@lab.example.org", Role.ADMIN)
    await sign_in(client, db, adam)

    response = await act(client, adam, action)

    assert response.status_code == 400
    assert f"You cannot {action} yourself." in text_of(response.text)
    assert await role_and_status(db, adam) == ("admin", "active")


@pytest.mark.parametrize(("action", "role"), [("role", "member"), ("suspend", ""), ("reactivate", ""), ("remove", "")])
async def test_an_admin_cannot_touch_an_owner(client: Client, db: AsyncSession, action: str, role: str) -> None:
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    adam = await person(db, "adam@lab.example.org", Role.ADMIN)
    await sign_in(client, db, adam)

    response = await act(client, owner, action, role)

    assert response.status_code == 403
    assert "Only an owner can" in text_of(response.text)
    assert await role_and_status(db, owner) == ("owner", "active")


async def test_an_unknown_member_action_is_not_found(client: Client, db: AsyncSession) -> None:
    adam = await person(db, "adam@lab.example.org", Role.ADMIN)
    mia = await person(db, "mia@lab.example.org")
    await sign_in(client, db, adam)

    response = await act(client, mia, "promote")

    assert response.status_code == 404
    assert await role_and_status(db, mia) == ("member", "active")


async def test_suspending_with_htmx_swaps_in_the_member_list_with_a_message(client: Client, db: AsyncSession) -> None:
    adam = await person(db, "adam@lab.example.org", Role.ADMIN)
    mia = await person(db, "mia@lab.example.org")
    await sign_in(client, db, adam)

    response = await act(client, mia, "suspend", headers={"HX-Request": "true"})

    assert response.status_code == 200
    assert 'id="members"' in response.text and "<html" not in response.text
    assert "Mia is suspended: their sessions and keys stopped working." in text_of(response.text)
    assert shown(response.text, "mia@lab.example.org") == ("member", "suspended")


async def test_a_refused_htmx_action_shows_the_reason_in_the_flash_area(client: Client, db: AsyncSession) -> None:
    adam = await person(db, "adam@lab.example.org", Role.ADMIN)
    await sign_in(client, db, adam)

    response = await act(client, adam, "suspend", headers={"HX-Request": "true"})

    assert response.status_code == 400
    assert response.headers["HX-Retarget"] == "#flash"
    assert "<html" not in response.text
    assert text_of(response.text) == "You cannot suspend yourself."
