"""Model identity probes on a real hub: two real agents with the same upstream model agree, a scripted agent that
answers otherwise is flagged to admins and to its owner, and nobody pays for or is counted for a probe.
"""

from __future__ import annotations

import html
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.accounts import service as accounts
from hub.accounts.models import Role
from hub.agents import probes
from tests.proxy.conftest import database_of, proxy_hub
from tests.support.cluster import agent_process, agent_token, member, provision, usage_rows
from tests.support.fake_upstream import fake_upstream
from tests.support.hostile import HostileAgent, hostile_agent
from tests.support.hub import LiveHub
from tests.support.people import text_of

PAGE = "/admin/probes"
_CSRF = re.compile(r'name="_csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    # The timer is off: the tests probe on demand, as an admin would.
    with proxy_hub(tmp_path_factory.mktemp("hub"), GPUCLUB_PROBE_MINUTES="0") as running:
        yield running


@pytest.fixture(scope="module")
def honest(hub: LiveHub) -> Iterator[None]:
    """Two members' GPUs running the same model behind real agents."""
    with ExitStack() as stack:
        for name in ("pat", "sam"):
            owner = member(hub, f"{name}@lab.example.org")
            upstream = stack.enter_context(fake_upstream(["m"]))
            token = agent_token(hub, owner.email, f"{name}-box")
            stack.enter_context(agent_process(hub, token, f"{upstream.url}/v1", name=f"{name}-box"))
        yield


@pytest.fixture(scope="module")
def eve_token(hub: LiveHub) -> str:
    eve = member(hub, "eve@lab.example.org")
    return agent_token(hub, eve.email, "eve-box")


async def other_model(agent: HostileAgent, request: dict[str, Any]) -> None:
    """A server that calls itself "m" but runs something else."""
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Bonjour, je suis Claude"}}]}
    await agent.answer(request["id"], answer)


@asynccontextmanager
async def browser(hub: LiveHub, email: str, role: Role = Role.MEMBER) -> AsyncIterator[httpx.AsyncClient]:
    """`email` signed in through a one-time link."""

    async def link(db: Any) -> str:
        user = await accounts.find_by_email(db, email) or await accounts.add_member(db, email, role=role)
        return await accounts.create_login_link(db, user, minutes=5)

    token = provision(hub, link)
    async with httpx.AsyncClient(base_url=hub.url, follow_redirects=True, timeout=60) as client:
        assert (await client.get(f"/login/{token}")).status_code == 200
        yield client


async def submit(client: httpx.AsyncClient, action: str, data: dict[str, str]) -> httpx.Response:
    match = _CSRF.search((await client.get(PAGE)).text)
    assert match, "the probes page has no form"
    return await client.post(action, data={"_csrf_token": match.group(1), **data}, headers={"HX-Request": "true"})


def verdicts(markup: str) -> dict[str, str]:
    """GPU name → "agrees" / "disagrees", as the admin reads the last probe of model m."""
    section = markup.split('data-model="m"', 1)[1].split("</section>", 1)[0]
    rows = [text_of(row.split(">", 1)[1].split("</tr>")[0]) for row in section.split('<tr class="probe-result"')[1:]]
    return {row.split()[0]: "disagrees" if "disagrees" in row else "agrees" for row in rows}


def money(database: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database) as connection:
        balances = connection.execute("SELECT id, balance, held FROM accounts ORDER BY id").fetchall()
        transactions = connection.execute("SELECT count(*) FROM ledger_transactions").fetchall()
    return [*balances, *transactions]


async def test_a_gpu_answering_unlike_the_others_is_flagged_to_admins_and_its_owner_and_costs_nobody_anything(
    hub: LiveHub, honest: None, eve_token: str
) -> None:
    before = money(database_of(hub))
    async with browser(hub, "ada@lab.example.org", Role.ADMIN) as ada, browser(hub, "eve@lab.example.org") as eve:
        async with browser(hub, "pat@lab.example.org") as pat, hostile_agent(hub, eve_token, other_model) as liar:
            response = await submit(ada, f"{PAGE}/run", {"model": "m"})

            assert response.status_code == 200
            assert "Probed m: disagreeing: eve-box; agreeing: pat-box, sam-box." in text_of(response.text)
            assert verdicts((await ada.get(PAGE)).text) == {
                "pat-box": "agrees",
                "sam-box": "agrees",
                "eve-box": "disagrees",
            }
            page = (await eve.get("/gpus")).text
            assert "Probe answers for m differed from the other GPUs serving it (1 of 1 probes" in text_of(page)
            assert '<span class="badge active">online</span>' in page  # flagged, never paused
            assert "Probe answers" not in text_of((await pat.get("/gpus")).text)

        [probe] = [frame for frame in liar.received if frame["type"] == "request"]
    body = json.loads(probe["body"])
    assert probe["path"] == "/v1/chat/completions"
    assert (body["model"], body["temperature"], body["seed"], body["max_tokens"], body["stream"]) == (
        "m",
        0,
        probes.SEED,
        probes.MAX_TOKENS,
        False,
    )
    assert usage_rows(database_of(hub)) == []
    assert money(database_of(hub)) == before


async def test_with_a_reference_gpu_the_answers_unlike_the_references_are_the_ones_flagged(
    hub: LiveHub, honest: None, eve_token: str
) -> None:
    async with browser(hub, "ada@lab.example.org", Role.ADMIN) as ada, hostile_agent(hub, eve_token, other_model):
        page = (await ada.get(PAGE)).text
        eve_box = re.search(r'<option value="(\d+)"[^>]*>eve-box', page)
        assert eve_box, "eve-box is not offered as a reference"
        chosen = await submit(ada, f"{PAGE}/reference", {"model": "m", "agent": eve_box.group(1)})
        assert "Probes of m now compare every answer with eve-box's." in html.unescape(text_of(chosen.text))

        response = await submit(ada, f"{PAGE}/run", {"model": "m"})

        assert "disagreeing: pat-box, sam-box; agreeing: eve-box." in text_of(response.text)
        assert verdicts((await ada.get(PAGE)).text) == {
            "pat-box": "disagrees",
            "sam-box": "disagrees",
            "eve-box": "agrees",
        }
        await submit(ada, f"{PAGE}/reference", {"model": "m", "agent": ""})
        again = await submit(ada, f"{PAGE}/run", {"model": "m"})
        assert "disagreeing: eve-box; agreeing: pat-box, sam-box." in text_of(again.text)


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ({1: "tok0 tok1 tok2 tok3", 2: "tok0 tok1 tok2 tok3"}, {1: True, 2: True}),
        # Batching nudged one token: still the same model.
        ({1: "1, 2, 3, 5, 7, 11", 2: "2, 3, 5, 7, 11, 13", 3: "2, 3, 5, 7, 11, 13"}, {1: True, 2: True, 3: True}),
        ({1: "2, 3, 5, 7", 2: "Sure! Here are", 3: "2, 3, 5, 7"}, {1: True, 2: False, 3: True}),
        ({1: "2, 3, 5, 7", 2: "Sure! Here are"}, {1: False, 2: False}),  # two that differ: nobody can tell which
        ({1: "2, 3, 5, 7"}, {}),  # one answer: nothing to compare
    ],
    ids=["same", "one-token-apart", "odd-one-out", "two-differ", "alone"],
)
def test_answers_are_compared_by_their_words_with_some_tolerance(
    answers: dict[int, str], expected: dict[int, bool]
) -> None:
    assert probes.judge(answers) == expected
