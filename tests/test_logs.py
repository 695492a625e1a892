"""Logs never contain keys, tokens or cookies, even for URLs that carry them."""

from __future__ import annotations

import logging

import httpx
import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.signin import links
from tests.support.hub import LiveHub
from tests.support.people import person, text_of


def test_secrets_in_urls_headers_and_cookies_stay_out_of_the_log(hub_process: LiveHub) -> None:
    setup_token = hub_process.owner_link.rsplit("/", 1)[1]
    added = hub_process.cli("member", "add", "logs@lab.example.org")
    assert added.returncode == 0
    key = hub_process.cli("key", "create", "logs@lab.example.org").stdout.strip()
    login = hub_process.cli("login-link", "logs@lab.example.org").stdout.strip()
    invite = hub_process.cli("invite", "create").stdout.strip()

    with httpx.Client(base_url=hub_process.url, follow_redirects=True) as browser:
        assert browser.get(hub_process.owner_link).status_code == 200
        assert browser.get(login).status_code == 200  # followed to the dashboard
        session = browser.cookies["gpuclub_session"]
        assert browser.get(invite).status_code == 200
        assert browser.get("/auth/oidc/callback?code=secret-code&state=secret-state").status_code == 400
        assert browser.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert browser.get("/healthz?done=1").status_code == 200
    hub_process.process.wait_for(r'"GET /healthz\?\[redacted\]')

    # The first-start banner prints the owner link on purpose; everything after start-up is the log.
    log = hub_process.process.text.split("Uvicorn running on", 1)[1]
    assert '"GET /login/[redacted]' in log and '"GET /invite/[redacted]' in log
    for secret in (setup_token, key, login.rsplit("/", 1)[1], invite.rsplit("/", 1)[1], session, "secret-code"):
        assert secret not in log


async def test_an_unexpected_error_on_a_link_logs_the_path_without_its_token(
    client: httpx.AsyncClient, db: AsyncSession, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    kim = await person(db, "kim@lab.example.org")
    token = await accounts.create_login_link(db, kim, minutes=15)

    async def broken(db: AsyncSession, token: str) -> None:  # any unexpected failure while following the link
        raise RuntimeError("deadlock detected")

    monkeypatch.setattr(links, "follow", broken)
    gpuclub = logging.getLogger("gpuclub")
    gpuclub.addHandler(caplog.handler)  # the app's logging set-up took pytest's handler off the root logger
    try:
        answer = await client.get(f"/login/{token}")
    finally:
        gpuclub.removeHandler(caplog.handler)

    assert answer.status_code == 500 and "Something went wrong on our side" in text_of(answer.text)
    said = [record.getMessage() for record in caplog.records if record.name == "gpuclub"]
    assert set(said) == {"unhandled RuntimeError on GET /login/[redacted]"}
    assert not any(token in record.getMessage() for record in caplog.records if record.name == "gpuclub")
