"""Sign-in providers behind one small interface, all through Authlib's OAuth 2 client.

GitHub speaks plain OAuth 2 (its API says which addresses are verified); Google and any OpenID Connect provider
(Keycloak, Authentik, Auth0, a university SSO) return an ID token, checked here for issuer, audience, expiry and
the nonce. Every flow uses state and PKCE (S256).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from hub.errors import BadRequest
from hub.settings import OAuthClientSettings, OidcSettings, Settings

TIMEOUT = 10.0


@dataclass(frozen=True)
class ExternalIdentity:
    """Who the provider says signed in."""

    provider: str
    subject: str
    email: str
    email_verified: bool
    name: str


class Provider(Protocol):
    name: str
    label: str

    async def authorize_url(self, *, redirect_uri: str, state: str, nonce: str, code_verifier: str) -> str: ...

    async def identity(self, *, redirect_uri: str, code: str, nonce: str, code_verifier: str) -> ExternalIdentity: ...


class SignInFailed(BadRequest):
    title = "Sign-in failed"


def _client(app: OAuthClientSettings, scope: str, redirect_uri: str) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=app.client_id,
        client_secret=app.client_secret,
        scope=scope,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        timeout=TIMEOUT,
    )


@dataclass
class GitHubProvider:
    app: OAuthClientSettings
    name: str = "github"
    label: str = "GitHub"
    authorize_endpoint: str = "https://github.com/login/oauth/authorize"
    token_endpoint: str = "https://github.com/login/oauth/access_token"  # noqa: S105 - a URL, not a secret
    api: str = "https://api.github.com"

    async def authorize_url(self, *, redirect_uri: str, state: str, nonce: str, code_verifier: str) -> str:
        async with _client(self.app, "read:user user:email", redirect_uri) as client:
            url, _ = client.create_authorization_url(self.authorize_endpoint, state=state, code_verifier=code_verifier)
        return str(url)

    async def identity(self, *, redirect_uri: str, code: str, nonce: str, code_verifier: str) -> ExternalIdentity:
        async with _client(self.app, "read:user user:email", redirect_uri) as client:
            try:
                await client.fetch_token(
                    self.token_endpoint, code=code, code_verifier=code_verifier, headers={"Accept": "application/json"}
                )
                profile = (await client.get(f"{self.api}/user")).raise_for_status().json()
                emails = (await client.get(f"{self.api}/user/emails")).raise_for_status().json()
            except Exception as exc:
                raise SignInFailed("GitHub did not confirm the sign-in. Please try again.") from exc
        by_preference = sorted(emails, key=lambda e: not e.get("primary"))
        primary: dict[str, Any] = by_preference[0] if by_preference else {}
        return ExternalIdentity(
            provider=self.name,
            subject=str(profile["id"]),
            email=str(primary.get("email") or "").lower(),
            email_verified=bool(primary.get("verified")),
            name=str(profile.get("name") or profile.get("login") or ""),
        )


@dataclass
class OidcProvider:
    """Any OpenID Connect provider; its endpoints come from the discovery document, fetched once and kept."""

    app: OAuthClientSettings
    discovery_url: str
    name: str = "oidc"
    label: str = "Single sign-on"
    metadata: dict[str, Any] = field(default_factory=dict)

    async def discover(self) -> dict[str, Any]:
        if not self.metadata:
            try:
                async with httpx.AsyncClient(timeout=TIMEOUT) as http:
                    self.metadata = (await http.get(self.discovery_url)).raise_for_status().json()
            except (httpx.HTTPError, ValueError) as exc:
                raise SignInFailed(f"{self.label} is not reachable right now. Please try again later.") from exc
        return self.metadata

    async def authorize_url(self, *, redirect_uri: str, state: str, nonce: str, code_verifier: str) -> str:
        meta = await self.discover()
        async with _client(self.app, "openid email profile", redirect_uri) as client:
            url, _ = client.create_authorization_url(
                meta["authorization_endpoint"], state=state, nonce=nonce, code_verifier=code_verifier
            )
        return str(url)

    async def identity(self, *, redirect_uri: str, code: str, nonce: str, code_verifier: str) -> ExternalIdentity:
        meta = await self.discover()
        async with _client(self.app, "openid email profile", redirect_uri) as client:
            try:
                token = await client.fetch_token(meta["token_endpoint"], code=code, code_verifier=code_verifier)
                jwks = (await client.get(meta["jwks_uri"])).raise_for_status().json()
            except Exception as exc:
                raise SignInFailed(f"{self.label} did not confirm the sign-in. Please try again.") from exc
            claims = self._verified_claims(str(token.get("id_token", "")), jwks, meta["issuer"], nonce)
            if not claims.get("email") and meta.get("userinfo_endpoint"):
                claims = await self._with_userinfo(client, meta["userinfo_endpoint"], claims)
        return ExternalIdentity(
            provider=self.name,
            subject=str(claims["sub"]),
            email=str(claims.get("email") or "").lower(),
            email_verified=claims.get("email_verified") is True,
            name=str(claims.get("name") or claims.get("preferred_username") or ""),
        )

    async def _with_userinfo(self, client: AsyncOAuth2Client, url: str, claims: dict[str, Any]) -> dict[str, Any]:
        """Some providers keep the email out of the ID token (as the spec allows) and only give it at userinfo."""
        try:
            info = (await client.get(url)).raise_for_status().json()
        except Exception as exc:
            raise SignInFailed(f"{self.label} did not share your profile. Please try again.") from exc
        if not isinstance(info, dict) or info.get("sub") != claims["sub"]:
            raise SignInFailed(f"{self.label} sent a profile for someone else. Please try again.")
        return {**info, **{k: v for k, v in claims.items() if v not in (None, "")}}

    def _verified_claims(self, id_token: str, jwks: dict[str, Any], issuer: str, nonce: str) -> dict[str, Any]:
        try:
            decoded = jwt.decode(id_token, KeySet.import_key_set(jwks))  # type: ignore[arg-type]
            jwt.JWTClaimsRegistry(
                leeway=60,
                iss={"essential": True, "value": issuer},
                aud={"essential": True, "value": self.app.client_id},
                sub={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise SignInFailed(f"{self.label} sent an ID token that does not check out. Please try again.") from exc
        return dict(decoded.claims)


GOOGLE_METADATA = {
    "issuer": "https://accounts.google.com",
    "authorization_endpoint": "https://accounts.google.com/o/oauth2/v2/auth",
    "token_endpoint": "https://oauth2.googleapis.com/token",
    "jwks_uri": "https://www.googleapis.com/oauth2/v3/certs",
}


def build_providers(settings: Settings) -> dict[str, Provider]:
    """The configured providers, in the order their buttons appear."""
    providers: dict[str, Provider] = {}
    if settings.github:
        providers["github"] = GitHubProvider(settings.github)
    if settings.google:
        providers["google"] = OidcProvider(
            settings.google, GOOGLE_METADATA["issuer"], "google", "Google", dict(GOOGLE_METADATA)
        )
    if settings.oidc:
        oidc: OidcSettings = settings.oidc
        providers["oidc"] = OidcProvider(oidc, oidc.discovery_url, "oidc", oidc.label)
    return providers
