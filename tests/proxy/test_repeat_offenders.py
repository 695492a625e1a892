"""A provider whose server keeps over-reporting is paused by the hub, sees why, and only an admin resumes it."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import openai
import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import Role
from hub.agents.disputes import set_dispute_rules
from tests.proxy.conftest import proxy_hub
from tests.support.cluster import Member, agent_process, agent_token, member, provision, signed_in, submit
from tests.support.fake_upstream import fake_upstream
from tests.support.hub import LiveHub

LIE = {"fake": {"usage": {"prompt_tokens": 2, "completion_tokens": 999_999}}}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, live_database: str) -> Iterator[LiveHub]:
    with proxy_hub(tmp_path_factory.mktemp("hub"), GPUCLUB_DATABASE_URL=live_database) as running:
        yield running


def ask(hub: LiveHub, who: Member) -> str:
    client = openai.OpenAI(base_url=f"{hub.url}/v1", api_key=who.key, max_retries=0, timeout=30)
    answer = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=3, extra_body=LIE
    )
    return answer.choices[0].message.content or ""


def test_two_disputes_pause_the_agent_with_the_reason_and_an_admin_resumes_it(hub: LiveHub) -> None:
    owner = member(hub, "owner@lab.example.org")
    alice = member(hub, "alice@lab.example.org")
    admin = member(hub, "admin@lab.example.org", Role.ADMIN)

    async def rules(db: AsyncSession) -> None:
        await set_dispute_rules(db, None, limit=2, window=60)

    provision(hub, rules)
    with (
        fake_upstream(["m"]) as upstream,
        agent_process(hub, agent_token(hub, owner.email, "liar"), f"{upstream.url}/v1"),
    ):
        assert ask(hub, alice) == "tok0 tok1 tok2"
        assert ask(hub, alice) == "tok0 tok1 tok2"  # the second dispute: the hub pauses the agent

        with signed_in(hub, owner.email) as browser:
            gpus = browser.get("/gpus/live").text
            assert "Paused by the hub: 2 usage reports above the hub&#39;s bounds within 60 minutes." in gpus
            deadline = time.monotonic() + 10  # the usage rows behind the count are written just after the answers
            while '<td class="disputed">2</td>' not in gpus and time.monotonic() < deadline:
                gpus = browser.get("/gpus/live").text
            assert '<td class="disputed">2</td>' in gpus
            agent_id = re.search(r"/gpus/(\d+)/", browser.get("/gpus").text)
            assert agent_id
            refused = submit(browser, "/gpus", f"/gpus/{agent_id.group(1)}/resume")
            assert "Only an admin can resume liar." in refused.text

        with pytest.raises(openai.APIStatusError) as paused:
            ask(hub, alice)
        assert paused.value.status_code in (404, 503)

        with signed_in(hub, admin.email) as browser:
            usage = browser.get("/admin/usage")
            assert "liar" in usage.text and "999999" in usage.text.replace(",", "")
            cleared = submit(browser, "/admin/usage", f"/admin/usage/agents/{agent_id.group(1)}/clear")
            assert cleared.status_code == 200

        assert ask(hub, alice) == "tok0 tok1 tok2"
