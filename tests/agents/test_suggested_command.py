"""The agent command My GPUs suggests points at a real model server's default address, never at the hub itself."""

from __future__ import annotations

import html
import re
from dataclasses import replace

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.app import create_app
from hub.db import Database
from hub.settings import Settings
from tests.conftest import browser_for
from tests.support.people import person, post_form, sign_in, text_of

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # page copy: one database is enough


def shown(page: str, element: str) -> str:
    found = re.search(rf'id="{element}"[^>]*>(.*?)</(?:code|pre)>', page, re.S)
    assert found, f"no #{element} on the page"
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1)))


@pytest.mark.parametrize(
    ("port", "public_url", "upstream", "said"),
    [
        (8000, "http://127.0.0.1:8000", "http://127.0.0.1:11434/v1", "vLLM listens on 8000 by default"),
        (11434, "http://127.0.0.1:11434", "http://127.0.0.1:8080/v1", "Ollama listens on 11434 by default"),
        (11434, "http://gpus.lab.example.org:8080", "http://127.0.0.1:1234/v1", "llama-server listens on 8080"),
    ],
)
async def test_the_suggested_upstream_is_a_model_servers_default_and_never_the_hubs_own_port(
    settings: Settings, database: Database, db: AsyncSession, port: int, public_url: str, upstream: str, said: str
) -> None:
    app = create_app(replace(settings, port=port, public_url=public_url), database)
    async with browser_for(app) as client:
        await sign_in(client, db, await person(db, "pia@lab.example.org"))

        page = (await post_form(client, "/gpus", "/gpus", {"name": "desk-3090"})).text

    commands = [shown(page, "agent-command"), shown(page, "agent-command-uvx"), shown(page, "agent-unit")]
    for command in commands:
        assert f"--hub {public_url} " in command
        assert re.search(r"--upstream (\S+)", command)[1] == upstream  # type: ignore[index]
        assert f":{port}/" not in command.split("--upstream")[1] and public_url not in command.split("--upstream")[1]
    help_text = text_of(page.split('id="upstream-help"')[1].split("</p>")[0])
    assert said in help_text and "this hub's own port" in help_text
