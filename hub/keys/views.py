"""The API keys page: create (secret shown once), list, change a key's settings and whose GPUs it reaches, revoke."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from hub.accounts.models import User
from hub.changes import KeyLimitsChanged, KeysChanged
from hub.db import utcnow
from hub.keys import service as keys
from hub.keys.trust import REACH, Trust, parse_trust, split_emails
from hub.quotas import key_settings
from hub.runtime import runtime_of
from hub.web.context import Db, Viewer, signed_in
from hub.web.render import is_htmx, page


def parse_scope(form: Any) -> tuple[Trust, list[str]]:
    return parse_trust(form.get("trust", "")), split_emails(form.get("trusted", ""))


async def _render(request: Request[Any, Any, Any], db: Db, user: User, **extra: Any) -> Template:
    mine = await keys.list_keys(db, user)
    trusted = await keys.trusted_emails(db, mine)
    settings = await key_settings.views(db, mine, runtime_of(request).admission.budgets)
    return page(
        request, "keys.html", block="keys", keys=mine, trusted=trusted, settings=settings, now=utcnow(), **extra
    )


async def _changed(request: Request[Any, Any, Any], user_id: int, key_id: int) -> None:
    """The key cache (its models, expiry, scope) and admission (this key's limits and budget) follow at once."""
    changes = runtime_of(request).changes
    await changes.publish(KeysChanged())
    await changes.publish(KeyLimitsChanged(user_id, key_id))


@get("/keys", name="keys")
async def key_list(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template:
    user = signed_in(viewer)
    return await _render(request, db, user)


@post("/keys")
async def key_create(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template:
    user = signed_in(viewer)
    form = await request.form()
    trust, trusted = parse_scope(form)
    key, secret = await key_settings.create(db, user, form, trust=trust, trusted=trusted)
    # The snippet shown with the secret names a model the key may use now, if there is one.
    reachable = runtime_of(request).registry.reachable(user.pk, await keys.scope_of(db, key))
    allowed = sorted(await keys.models_of(db, key)) or sorted(reachable)
    example = next((model for model in allowed if model in reachable), allowed[0] if allowed else "")
    return await _render(request, db, user, new_key=key, secret=secret, example_model=example)


@post("/keys/{key_id:int}/settings")
async def key_settings_save(
    request: Request[Any, Any, Any], db: Db, viewer: Viewer, key_id: FromPath[int]
) -> Template | Redirect:
    user = signed_in(viewer)
    form = await request.form()
    key = await key_settings.save(db, user, key_id, form)
    await _changed(request, user.pk, key_id)  # its very next request follows the new settings
    if is_htmx(request):
        return await _render(request, db, user, flash=f"Saved the settings of {key.name}.")
    return Redirect("/keys", status_code=303)


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


routes = [key_list, key_create, key_settings_save, key_scope, key_revoke]
