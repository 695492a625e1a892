"""Sign-in without a provider: links by email (landing and invitation pages), admins' links, following a link."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from hub.accounts.views import signed_in_redirect
from hub.db import Database
from hub.errors import NotFound, TooManyRequests
from hub.invitations import service as invitations
from hub.invitations.models import Invitation
from hub.invitations.views import render_invitations
from hub.parsing import normalize_email
from hub.runtime import runtime_of
from hub.settings import Settings, SmtpSettings
from hub.signin import links, mail
from hub.web.context import Db, Viewer, admin, settings_of
from hub.web.render import page

SENT = (
    "If {email} belongs to a member of this hub, a sign-in link is on its way to it. "
    "It works once, within {minutes} minutes."
)
SENT_INVITED = "A sign-in link is on its way to {email}. It works once, within {minutes} minutes."


def _smtp(settings: Settings) -> SmtpSettings:
    if settings.smtp is None:
        raise NotFound("Sign-in by email is not set up on this hub. Ask an admin for a sign-in link.")
    return settings.smtp


def _throttle(request: Request[Any, Any, Any], email: str, invitation: Invitation | None = None) -> None:
    client = request.client.host if request.client else "unknown"
    wait = runtime_of(request).signin_throttle.take(email, client, invitation.id if invitation else None)
    if wait > 0:
        minutes = max(1, round(wait / 60))
        where = (
            "from here, for this address or through this invitation" if invitation else "from here or for this address"
        )
        raise TooManyRequests(
            f"Too many sign-in links were asked for {where}. Try again in {minutes} "
            f"minute{'s' if minutes != 1 else ''}.",
            retry_after=int(wait) + 1,
        )


def _body(settings: Settings, club: str, link: str, invitation: Invitation | None) -> str:
    why = (
        f"You were invited to {club} as {invitation.role}. Open this link to join"
        if invitation is not None
        else f"Someone (we hope you) asked to sign in to {club} with this address. Open this link to sign in"
    )
    return (
        f"Hello,\n\n{why}; it works once, within {settings.login_link_minutes} minutes:\n\n{link}\n\n"
        "If you did not ask for it, ignore this email: no one can use it without this message.\n"
    )


def _deliver(request: Request[Any, Any, Any], email: str, invitation: Invitation | None) -> None:
    """Make the link and send it after the answer: the page neither waits on SMTP nor, by its timing, tells
    whether the address is a member's."""
    settings, smtp, runtime = settings_of(request), _smtp(settings_of(request)), runtime_of(request)
    club = request.state.get("club_name") or settings.club_name
    invitation_id = invitation.id if invitation is not None else None
    runtime.background.spawn(_make_and_send(runtime.database, settings, smtp, club, email, invitation_id))


async def _make_and_send(
    database: Database, settings: Settings, smtp: SmtpSettings, club: str, email: str, invitation_id: int | None
) -> None:
    minutes = settings.login_link_minutes
    async with database.session() as db:
        invitation = await db.get(Invitation, invitation_id) if invitation_id is not None else None
        if invitation is None:
            token = await links.link_for_member(db, email, minutes=minutes)
        else:
            token = await links.link_for_invited(db, invitation, email, minutes=minutes)
    if token is None:
        return
    subject = f"Join {club}" if invitation is not None else f"Sign in to {club}"
    body = _body(settings, club, settings.url(f"/login/{token}"), invitation)
    await mail.send(smtp, mail.message(smtp, to=email, subject=subject, body=body))


@post("/signin/email", name="email_signin")
async def email_signin(request: Request[Any, Any, Any], viewer: Viewer) -> Template:
    settings = settings_of(request)  # open to everyone: this is how people who are signed out get in
    _smtp(settings)
    email = normalize_email((await request.form()).get("email", ""))
    _throttle(request, email)
    _deliver(request, email, None)
    flash = SENT.format(email=email, minutes=settings.login_link_minutes)
    return page(request, "landing.html", block="email_signin", flash=flash)


@post("/invite/{token:str}/email", name="invitation_email")
async def invitation_email(request: Request[Any, Any, Any], db: Db, viewer: Viewer, token: FromPath[str]) -> Template:
    settings = settings_of(request)  # the invitation's token is the permission
    invitation = await invitations.find_valid(db, token)
    _smtp(settings)
    email = invitation.email or normalize_email((await request.form()).get("email", ""))
    _throttle(request, email, invitation)
    _deliver(request, email, invitation)
    flash = SENT_INVITED.format(email=email, minutes=settings.login_link_minutes)
    return page(request, "invite.html", block="invite_email", invitation=invitation, token=token, flash=flash)


@post("/admin/invitations/{invitation_id:int}/link", name="invitation_link")
async def invitation_link(
    request: Request[Any, Any, Any], db: Db, viewer: Viewer, invitation_id: FromPath[int]
) -> Template:
    user = admin(viewer)
    invitation = await invitations.get_invitation(db, user, invitation_id)
    email = invitation.email or normalize_email((await request.form()).get("email", ""))
    settings = settings_of(request)
    token = await links.admin_link(db, invitation, email, minutes=settings.login_link_minutes)
    link = settings.url(f"/login/{token}")
    return await render_invitations(
        request, db, user, signin_link=link, signin_email=email, login_link_minutes=settings.login_link_minutes
    )


@get("/login/{token:str}", name="login_link")
async def login_link(request: Request[Any, Any, Any], db: Db, token: FromPath[str]) -> Redirect:
    user = await links.follow(db, token)  # the link is the permission
    return await signed_in_redirect(request, db, user)


routes = [email_signin, invitation_email, invitation_link, login_link]
