"""Admin → Members and Admin → Settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Request, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from hub.accounts import service as accounts
from hub.changes import KeysChanged
from hub.club.service import rename_club
from hub.errors import NotFound
from hub.invitations import service as invitations
from hub.runtime import runtime_of
from hub.settings import Settings
from hub.signin.views import _callback_url as callback_url  # the redirect_uri sign-in sends, built in one place
from hub.web.context import Db, Viewer, admin, settings_of
from hub.web.render import is_htmx, page


async def _members(request: Request[Any, Any, Any], db: Db, **extra: Any) -> Template:
    return page(request, "admin/members.html", block="members", members=await accounts.list_members(db), **extra)


@get("/admin", name="admin")
async def admin_home(viewer: Viewer) -> Redirect:
    admin(viewer)
    return Redirect("/admin/members", status_code=303)


@get("/admin/members", name="admin_members")
async def member_list(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template:
    admin(viewer)
    return await _members(request, db)


@post("/admin/members/{user_id:int}/{action:str}")
async def member_action(
    request: Request[Any, Any, Any], db: Db, viewer: Viewer, user_id: FromPath[int], action: FromPath[str]
) -> Template | Redirect:
    user = admin(viewer)
    form = await request.form()
    if action == "role":
        target = await accounts.set_role(db, user, user_id, accounts.parse_role(form.get("role", "")))
        message = f"{target.display_name} is now {target.role}."
    elif action == "suspend":
        target = await accounts.suspend(db, user, user_id)
        message = f"{target.display_name} is suspended: their sessions and keys stopped working."
    elif action == "reactivate":
        target = await accounts.reactivate(db, user, user_id)
        message = f"{target.display_name} is active again."
    elif action == "remove":
        target = await accounts.remove(db, user, user_id)
        message = f"{target.display_name} was removed."
    else:
        raise NotFound("There is nothing at this address.")
    await runtime_of(request).changes.publish(KeysChanged())  # a suspended or removed member's keys stop at once
    if is_htmx(request):
        return await _members(request, db, flash=message)
    return Redirect("/admin/members", status_code=303)


@dataclass(frozen=True)
class SignInProvider:
    name: str
    label: str
    configured: bool
    callback_url: str  # what to register at the provider: the very redirect_uri sign-in sends


def sign_in_providers(settings: Settings) -> list[SignInProvider]:
    """Every OAuth provider the hub can use, configured or not, with the callback URL to register for it."""
    oidc = "OpenID Connect" + (f" ({settings.oidc.label})" if settings.oidc else "")
    found = [
        ("github", "GitHub", settings.github),
        ("google", "Google", settings.google),
        ("oidc", oidc, settings.oidc),
    ]
    return [SignInProvider(name, label, app is not None, callback_url(settings, name)) for name, label, app in found]


async def _settings(request: Request[Any, Any, Any], db: Db, **extra: Any) -> Template:
    settings = settings_of(request)
    return page(
        request,
        "admin/settings.html",
        block="domains",
        rules=await invitations.list_domain_rules(db),
        providers=sign_in_providers(settings),
        public_url=settings.public_url,
        **extra,
    )


@get("/admin/settings", name="admin_settings")
async def settings_page(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template:
    admin(viewer)
    return await _settings(request, db)


@post("/admin/settings/club")
async def settings_club(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Redirect:
    user = admin(viewer)
    form = await request.form()
    await rename_club(db, user, form.get("club_name", ""))
    return Redirect("/admin/settings", status_code=303)


@post("/admin/settings/domains")
async def domain_add(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template | Redirect:
    user = admin(viewer)
    form = await request.form()
    await invitations.add_domain_rule(db, user, form.get("domain", ""))
    return await _settings(request, db) if is_htmx(request) else Redirect("/admin/settings", status_code=303)


@post("/admin/settings/domains/{rule_id:int}/delete")
async def domain_remove(
    request: Request[Any, Any, Any], db: Db, viewer: Viewer, rule_id: FromPath[int]
) -> Template | Redirect:
    user = admin(viewer)
    await invitations.remove_domain_rule(db, user, rule_id)
    return await _settings(request, db) if is_htmx(request) else Redirect("/admin/settings", status_code=303)


routes = [admin_home, member_list, member_action, settings_page, settings_club, domain_add, domain_remove]
