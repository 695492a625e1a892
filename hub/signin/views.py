"""Browser sign-in through OAuth providers, and the invitation landing page."""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from litestar import Request, get
from litestar.datastructures import Cookie
from litestar.params import FromPath
from litestar.response import Redirect, Template

from hub.accounts.views import signed_in_redirect
from hub.errors import NotFound
from hub.invitations.service import find_valid
from hub.runtime import runtime_of
from hub.settings import Settings
from hub.signin import email_views
from hub.signin.providers import Provider, SignInFailed
from hub.signin.service import admit
from hub.web.context import Db, Viewer, clear_cookie, settings_of
from hub.web.render import page

FLOW_COOKIE = "gpuclub_oauth"
INVITE_COOKIE = "gpuclub_invite"
FLOW_SECONDS = 600
INVITE_SECONDS = 86400


def _serializer(settings: Settings, purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key, salt=f"gpuclub-{purpose}")


def _cookie(settings: Settings, key: str, value: str, max_age: int) -> Cookie:
    return Cookie(
        key=key, value=value, max_age=max_age, path="/", httponly=True, secure=settings.secure_cookies, samesite="lax"
    )


def _provider(request: Request[Any, Any, Any], name: str) -> Provider:
    provider: Provider | None = runtime_of(request).providers.get(name)
    if provider is None:
        raise NotFound("That sign-in provider is not configured on this hub.")
    return provider


def _callback_url(settings: Settings, provider: str) -> str:
    return settings.url(f"/auth/{provider}/callback")


@get("/auth/{provider_name:str}/login", name="oauth_login")
async def oauth_login(request: Request[Any, Any, Any], provider_name: FromPath[str]) -> Redirect:
    settings = settings_of(request)
    provider = _provider(request, provider_name)
    flow = {
        "provider": provider.name,
        "state": secrets.token_urlsafe(32),
        "nonce": secrets.token_urlsafe(32),
        "verifier": secrets.token_urlsafe(48),
    }
    url = await provider.authorize_url(
        redirect_uri=_callback_url(settings, provider.name),
        state=flow["state"],
        nonce=flow["nonce"],
        code_verifier=flow["verifier"],
    )
    value = _serializer(settings, "oauth").dumps(flow)
    return Redirect(url, status_code=303, cookies=[_cookie(settings, FLOW_COOKIE, value, FLOW_SECONDS)])


@get("/auth/{provider_name:str}/callback", name="oauth_callback")
async def oauth_callback(request: Request[Any, Any, Any], db: Db, provider_name: FromPath[str]) -> Redirect:
    settings = settings_of(request)
    provider = _provider(request, provider_name)
    if request.query_params.get("error"):
        raise SignInFailed(f"{provider.label} did not sign you in ({request.query_params['error']}).")
    flow = _load(settings, "oauth", request.cookies.get(FLOW_COOKIE), FLOW_SECONDS)
    state = request.query_params.get("state", "")
    if not flow or flow.get("provider") != provider.name or not hmac.compare_digest(flow["state"], state):
        raise SignInFailed("This sign-in could not be verified (it expired or did not start here). Please try again.")
    who = await provider.identity(
        redirect_uri=_callback_url(settings, provider.name),
        code=request.query_params.get("code", ""),
        nonce=flow["nonce"],
        code_verifier=flow["verifier"],
    )
    invitation = _load(settings, "invite", request.cookies.get(INVITE_COOKIE), INVITE_SECONDS)
    user = await admit(db, who, invitation.get("token") if invitation else None)
    response = await signed_in_redirect(request, db, user)
    clear_cookie(response, FLOW_COOKIE)
    clear_cookie(response, INVITE_COOKIE)
    return response


@get("/invite/{token:str}", name="invitation")
async def invitation(request: Request[Any, Any, Any], db: Db, viewer: Viewer, token: FromPath[str]) -> Template:
    settings = settings_of(request)
    invite = await find_valid(db, token)
    response = page(request, "invite.html", invitation=invite, token=token)
    value = _serializer(settings, "invite").dumps({"token": token})
    response.cookies.append(_cookie(settings, INVITE_COOKIE, value, INVITE_SECONDS))
    return response


def _load(settings: Settings, purpose: str, value: str | None, max_age: int) -> dict[str, str] | None:
    if not value:
        return None
    try:
        data = _serializer(settings, purpose).loads(value, max_age=max_age)
    except BadSignature:
        return None
    return data if isinstance(data, dict) else None


routes = [oauth_login, oauth_callback, invitation, *email_views.routes]
