"""Personas and the browser-like steps the tests take: sign in with a link, read a form, post it."""

from __future__ import annotations

import re
from typing import Any

import httpx
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.accounts.models import Role, User
from hub.keys import service as keys

Client = httpx.AsyncClient

_CSRF = re.compile(r'name="_csrf_token" value="([^"]+)"')


async def person(db: AsyncSession, email: str, role: Role = Role.MEMBER, name: str = "") -> User:
    return await accounts.add_member(db, email, role=role, name=name or email.split("@")[0].title())


async def sign_in(client: Client, db: AsyncSession, user: User) -> None:
    """Sign in the way the operator's `gpuclub login-link` lets someone in."""
    token = await accounts.create_login_link(db, user, minutes=5)
    response = await client.get(f"/login/{token}", follow_redirects=False)
    assert response.status_code == 303, response.text


async def api_key(db: AsyncSession, user: User, name: str = "test") -> str:
    _, secret = await keys.create_key(db, user, name=name)
    return secret


def csrf_from(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


async def post_form(
    client: Client, page: str, action: str, data: dict[str, str] | None = None, **kwargs: Any
) -> httpx.Response:
    """Open `page`, take its CSRF token like a browser would, and submit `data` to `action`."""
    opened = await client.get(page)
    assert opened.status_code == 200, f"{page}: {opened.status_code}"
    form = {"_csrf_token": csrf_from(opened.text), **(data or {})}
    return await client.post(action, data=form, **kwargs)


def text_of(html: str) -> str:
    """The visible text of a page, roughly: what a person reads."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())
