"""Admin → GPUs: every member's agent with its owner, and marking an agent verified."""

from __future__ import annotations

import re

from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import Role
from hub.agents import service as agents
from tests.support.people import Client, csrf_from, person, post_form, sign_in, text_of


def row_of(html: str, name: str) -> str:
    row = re.search(rf'<tr class="club-gpu" data-name="{re.escape(name)}">(.*?)</tr>', html, re.S)
    assert row, f"no row for {name}"
    return text_of(row.group(1))


async def test_an_admin_sees_every_members_gpu_and_marks_one_verified(client: Client, db: AsyncSession) -> None:
    admin = await person(db, "olive@lab.example.org", Role.ADMIN)
    bea = await person(db, "bea@lab.example.org")
    cy = await person(db, "cy@lab.example.org")
    desk, _ = await agents.create_agent(db, bea, name="bea-desk")
    await agents.create_agent(db, cy, name="cy-laptop")
    gone, _ = await agents.create_agent(db, cy, name="cy-old")
    await agents.revoke(db, cy, gone.pk)
    await sign_in(client, db, admin)

    before = (await client.get("/admin/gpus")).text
    marked = await post_form(client, "/admin/gpus", f"/admin/gpus/{desk.pk}/verify", follow_redirects=True)

    assert "bea@lab.example.org" in row_of(before, "bea-desk") and "cy-old" not in before
    assert row_of(before, "cy-laptop").startswith("cy-laptop")
    assert "verified Remove verification" in row_of(marked.text, "bea-desk")
    assert "Mark verified" in row_of(marked.text, "cy-laptop")


async def test_removing_verification_with_htmx_answers_with_the_list(client: Client, db: AsyncSession) -> None:
    admin = await person(db, "olive@lab.example.org", Role.ADMIN)
    bea = await person(db, "bea@lab.example.org")
    desk, _ = await agents.create_agent(db, bea, name="bea-desk")
    await agents.set_verified(db, admin, desk.pk, verified=True)
    await sign_in(client, db, admin)
    token = csrf_from((await client.get("/admin/gpus")).text)

    response = await client.post(
        f"/admin/gpus/{desk.pk}/unverify",
        data={"_csrf_token": token},
        headers={"HX-Request": "true", "X-CSRFToken": token},
    )

    assert response.status_code == 200 and response.text.lstrip().startswith('<section id="club-gpus"')
    assert "bea-desk is no longer verified." in text_of(response.text)
    assert "Mark verified" in row_of(response.text, "bea-desk")


async def test_a_revoked_or_unknown_agent_cannot_be_verified(client: Client, db: AsyncSession) -> None:
    admin = await person(db, "olive@lab.example.org", Role.ADMIN)
    bea = await person(db, "bea@lab.example.org")
    old, _ = await agents.create_agent(db, bea, name="old")
    await agents.revoke(db, bea, old.pk)
    await sign_in(client, db, admin)

    revoked = await post_form(client, "/admin/gpus", f"/admin/gpus/{old.pk}/verify")
    unknown = await post_form(client, "/admin/gpus", "/admin/gpus/999/verify")
    nonsense = await post_form(client, "/admin/gpus", f"/admin/gpus/{old.pk}/bless")

    assert (revoked.status_code, unknown.status_code, nonsense.status_code) == (404, 404, 404)
    assert "No such GPU" in text_of(revoked.text)
