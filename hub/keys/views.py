"""The API keys page: create (secret shown once), list, limit whose GPUs a key reaches, revoke."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from litestar import Request, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from hub.accounts.models import User
from hub.changes import KeysChanged
from hub.db import utcnow
from hub.errors import BadRequest
from hub.keys import service as keys
from hub.keys.trust import REACH, Trust, parse_trust, split_emails
from hub.runtime import runtime_of
from hub.web.context import Db, Viewer, signed_in
from hub.web.render import is_htmx, page


def parse_expiry(text: str) -> datetime | None:
    """A date from the form's date field; the key works until the end of that day (UTC)."""
    if not text.strip():
        return None
    try:
        day = datetime.strptime(text.strip(), "%Y-%m-%d").date()
    except ValueError:
        raise BadRequest(f"The expiry must be a date like 2027-01-31, got {text!r}.") from None
    expires = datetime.combine(day, time.max, tzinfo=UTC)
    if expires <= utcnow():
        raise BadRequest("The expiry date must be in the future.")
    return expires


def parse_scope(form: Any) -> tuple[Trust, list[str]]:
    return parse_trust(form.get("trust", "")), split_emails(form.get("trusted", ""))


async def _render(request: Request[Any, Any, Any], db: Db, user: User, **extra: Any) -> Template:
    mine = await keys.list_keys(db, user)
    trusted = await keys.trusted_emails(db, mine)
    return page(request, "keys.html", block="keys", keys=mine, trusted=trusted, now=utcnow(), **extra)


@get("/keys", name="keys")
async def key_list(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template:
    user = signed_in(viewer)
    return await _render(request, db, user)


@post("/keys")
async def key_create(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template:
    user = signed_in(viewer)
    form = await request.form()
    trust, trusted = parse_scope(form)
    key, secret = await keys.create_key(
        db,
        user,
        name=form.get("name", ""),
        expires_at=parse_expiry(form.get("expires", "")),
        trust=trust,
        trusted=trusted,
    )
    return await _render(request, db, user, new_key=key, secret=secret)


@post("/keys/{key_id:int}/revoke")
async def key_revoke(
    request: Request[Any, Any, Any], db: Db, viewer: Viewer, key_id: FromPath[int]
) -> Template | Redirect:
    user = signed_in(viewer)
    key = await keys.revoke(db, user, key_id)
    await runtime_of(request).changes.publish(KeysChanged())
    if is_htmx(request):
        return await _render(request, db, user, flash=f"Revoked {key.name} ({key.prefix}…).")
    return Redirect("/keys", status_code=303)


@post("/keys/{key_id:int}/scope")
async def key_scope(
    request: Request[Any, Any, Any], db: Db, viewer: Viewer, key_id: FromPath[int]
) -> Template | Redirect:
    user = signed_in(viewer)
    form = await request.form()
    trust, trusted = parse_scope(form)
    key = await keys.set_scope(db, user, key_id, trust=trust, trusted=trusted)
    await runtime_of(request).changes.publish(KeysChanged())  # its very next request is routed by its new scope
    if is_htmx(request):
        return await _render(request, db, user, flash=f"{key.name} now reaches {REACH[trust]}.")
    return Redirect("/keys", status_code=303)


routes = [key_list, key_create, key_scope, key_revoke]
