"""GitHub, Google and OpenID Connect share one interface; only configured providers are offered."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from litestar import Litestar

from hub.app import create_app
from hub.db import Database
from hub.settings import OAuthClientSettings, Settings
from hub.signin.providers import build_providers
from tests.conftest import BASE_URL, browser_for


def with_github_and_google(settings: Settings) -> Settings:
    return replace(
        settings,
        github=OAuthClientSettings("gh-client", "gh-secret"),
        google=OAuthClientSettings("g-client", "g-secret"),
    )


async def test_with_no_provider_the_landing_page_explains_the_command_line(
    settings: Settings, database: Database
) -> None:
    async with browser_for(create_app(settings, database)) as client:
        landing = await client.get("/")

    assert landing.status_code == 200
    assert "Sign in with" not in landing.text
    assert "gpuclub login-link" in landing.text


@pytest.fixture
def app(settings: Settings, database: Database) -> Litestar:
    return create_app(with_github_and_google(settings), database)


@pytest.mark.parametrize(
    ("provider", "host", "client_id", "scope"),
    [
        ("github", "github.com", "gh-client", "read:user user:email"),
        ("google", "accounts.google.com", "g-client", "openid email profile"),
    ],
)
async def test_the_sign_in_button_redirects_with_state_and_pkce(
    client: httpx.AsyncClient, provider: str, host: str, client_id: str, scope: str
) -> None:
    landing = await client.get("/")
    assert f'href="/auth/{provider}/login"' in landing.text
    assert 'href="/auth/oidc/login"' not in landing.text

    response = await client.get(f"/auth/{provider}/login")

    assert response.status_code == 303
    target = urlsplit(response.headers["location"])
    query = {k: v[0] for k, v in parse_qs(target.query).items()}
    assert target.scheme == "https" and target.netloc == host
    assert query["client_id"] == client_id and query["scope"] == scope
    assert query["redirect_uri"] == f"{BASE_URL}/auth/{provider}/callback"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) >= 43
    assert len(query["state"]) >= 32
    assert ("nonce" in query) == (provider == "google")
    cookie = response.cookies.get("gpuclub_oauth")
    assert cookie and query["state"] not in cookie  # signed, not readable as plain state


async def test_an_unconfigured_provider_is_not_found(client: httpx.AsyncClient) -> None:
    response = await client.get("/auth/oidc/login")

    assert response.status_code == 404


def test_providers_are_built_from_settings_only(settings: Settings) -> None:
    assert build_providers(settings) == {}
    names = list(build_providers(with_github_and_google(settings)))
    assert names == ["github", "google"]
