"""A real OpenID Connect provider (node ``oidc-provider``) and a scripted browser."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from tests.support.processes import free_port, run

TESTS_DIR = Path(__file__).resolve().parent.parent
PROVIDER_SCRIPT = TESTS_DIR / "oidc" / "provider.mjs"
READY_TIMEOUT = 20.0
MAX_HOPS = 20


@dataclass
class OidcProvider:
    """Where a running test provider lives and the one client registered at it."""

    issuer: str
    client_id: str
    client_secret: str
    discovery_url: str


def start_oidc_provider(redirect_uris: list[str], *, conform: bool = False) -> Iterator[OidcProvider]:
    """Run the provider while the generator is open (``yield from`` it in a fixture)."""
    if not (TESTS_DIR / "node_modules" / "oidc-provider").is_dir():
        raise RuntimeError("tests/node_modules/oidc-provider is missing: run `npm ci --prefix tests` first")
    port = free_port()
    client_id = "gpuclub-hub"
    client_secret = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "OIDC_PORT": str(port),
        "OIDC_CLIENT_ID": client_id,
        "OIDC_CLIENT_SECRET": client_secret,
        "OIDC_REDIRECT_URIS": ",".join(redirect_uris),
        "OIDC_CONFORM": "1" if conform else "0",
    }
    with run(["node", str(PROVIDER_SCRIPT)], env=env, cwd=TESTS_DIR) as provider:
        issuer = provider.wait_for(r"^READY (\S+)", timeout=READY_TIMEOUT).group(1)
        yield OidcProvider(
            issuer=issuer,
            client_id=client_id,
            client_secret=client_secret,
            discovery_url=f"{issuer}/.well-known/openid-configuration",
        )


class _FormParser(HTMLParser):
    """Collect the first ``<form>``'s action and its named inputs' values."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._in_form = False
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form" and not self._done:
            self.action = values.get("action", "")
            self._in_form = True
        elif tag == "input" and self._in_form and "name" in values:
            self.fields[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._in_form:
            self._in_form = False
            self._done = True


def _parse_form(page: httpx.Response) -> tuple[str, dict[str, str]]:
    """Return the absolute action URL and default field values of the page's form."""
    parser = _FormParser()
    parser.feed(page.text)
    if parser.action is None:
        raise AssertionError(f"no form on provider page {page.url}: {page.text[:500]}")
    return urljoin(str(page.url), parser.action), parser.fields


def _origin(url: str) -> tuple[str, str]:
    """Scheme and host:port of ``url``."""
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


async def sign_in_at_provider(client: httpx.AsyncClient, authorize_url: str, login: str) -> str:
    """Sign in as ``login`` and consent; return the app callback URL redirected to.

    ``client`` plays the browser at the provider (it must keep cookies). Use a fresh
    client per user: one already signed in at the provider skips the forms and keeps
    its old account. The app is never contacted: the first redirect that leaves the
    provider's origin is returned.
    """
    provider_origin = _origin(authorize_url)
    submitted: set[str] = set()
    response = await client.get(authorize_url, follow_redirects=False)
    for _ in range(MAX_HOPS):
        if response.is_redirect:
            target = urljoin(str(response.url), response.headers["location"])
            if _origin(target) != provider_origin:
                return target
            response = await client.get(target, follow_redirects=False)
            continue
        if response.status_code != 200:
            raise AssertionError(f"provider answered {response.status_code} at {response.url}: {response.text[:500]}")
        action, fields = _parse_form(response)
        prompt = fields.get("prompt", "")
        if prompt in submitted:
            raise AssertionError(f"provider asked for {prompt!r} twice: {response.text[:500]}")
        submitted.add(prompt)
        if prompt == "login":
            fields.update(login=login, password="any-password")
        elif prompt != "consent":
            raise AssertionError(f"unexpected provider form {fields!r} at {response.url}")
        response = await client.post(action, data=fields, follow_redirects=False)
    raise AssertionError(f"provider did not redirect back within {MAX_HOPS} steps")
