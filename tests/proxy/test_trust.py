"""Whose GPUs see a key's prompts: own GPUs only, trusted members, verified agents; end to end with real processes.

Each member's GPU is a real `gpuclub-agent` in front of its own fake upstream, so the upstream's counters say whose
hardware a request reached.
"""

from __future__ import annotations

import asyncio
import re

import httpx
import openai
import pytest

from hub.accounts.models import Role
from tests.support.cluster import agent_process, agent_token, member, signed_in, submit
from tests.support.fake_upstream import RunningFake, fake_upstream
from tests.support.hub import LiveHub

SLOW = {"fake": {"first_byte_delay": 0.3}}  # long enough that the next request finds the one slot taken


def cli_key(hub: LiveHub, email: str, *flags: str) -> str:
    """An API key made the way an operator makes one: `gpuclub key create EMAIL [flags]`."""
    made = hub.cli("key", "create", email, *flags)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


async def chat(hub: LiveHub, key: str, model: str = "m", *, slow: bool = False) -> str:
    async with openai.AsyncOpenAI(base_url=f"{hub.url}/v1", api_key=key, max_retries=0, timeout=60) as sdk:
        answer = await sdk.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=1, extra_body=SLOW if slow else None
        )
    return answer.choices[0].message.content or ""


def listed(hub: LiveHub, key: str) -> dict[str, int]:
    """GET /v1/models for this key: each model with how many GPUs it may reach."""
    response = httpx.get(f"{hub.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return {model["id"]: model["gpus"] for model in response.json()["data"]}


async def requests_at(*upstreams: RunningFake) -> tuple[int, ...]:
    return tuple([(await upstream.stats())["requests"] for upstream in upstreams])


async def test_a_key_limited_to_own_gpus_only_ever_reaches_its_members_own_gpu(hub: LiveHub) -> None:
    alice, bob = member(hub, "alice@lab.example.org"), member(hub, "bob@lab.example.org")
    own = cli_key(hub, alice.email, "--only-own")

    with fake_upstream(["m"]) as mine, fake_upstream(["m", "n"]) as theirs:
        with (
            agent_process(hub, agent_token(hub, alice.email, "alices-gpu"), f"{mine.url}/v1", capacity=1, name="a"),
            agent_process(hub, agent_token(hub, bob.email, "bobs-gpu"), f"{theirs.url}/v1", name="b"),
        ):
            # Four at once on a one-slot GPU: a key that may use any GPU would spill over to bob's.
            await asyncio.gather(*(chat(hub, own, slow=True) for _ in range(4)))
            with pytest.raises(openai.NotFoundError) as outside:
                await chat(hub, own, model="n")
            await chat(hub, alice.key, model="n")
            seen = await requests_at(mine, theirs)
            models = listed(hub, own), listed(hub, alice.key)

    assert seen == (4, 1)
    assert models == ({"m": 1}, {"m": 2, "n": 1})
    message = outside.value.message
    assert "'n'" in message and "no GPU you can use serves it" in message
    assert "this API key only reaches your own GPUs" in message


async def test_a_trusted_only_key_reaches_the_trusted_members_gpu_and_not_an_untrusted_one(hub: LiveHub) -> None:
    dave = member(hub, "dave@lab.example.org")  # has no GPU of his own
    bob, carol = member(hub, "bob@lab.example.org"), member(hub, "carol@lab.example.org")
    trusting_bob = cli_key(hub, dave.email, "--trust", bob.email)
    own = cli_key(hub, dave.email, "--only-own")

    with fake_upstream(["m"]) as bobs, fake_upstream(["m"]) as carols:
        with (
            agent_process(hub, agent_token(hub, bob.email, "bobs-gpu"), f"{bobs.url}/v1", capacity=1, name="b"),
            agent_process(hub, agent_token(hub, carol.email, "carols-gpu"), f"{carols.url}/v1", name="c"),
        ):
            await asyncio.gather(*(chat(hub, trusting_bob, slow=True) for _ in range(4)))
            seen = await requests_at(bobs, carols)
            models = listed(hub, trusting_bob), listed(hub, own), listed(hub, dave.key)
            with pytest.raises(openai.NotFoundError) as nowhere:
                await chat(hub, own)

    assert seen == (4, 0)
    assert models == ({"m": 1}, {}, {"m": 2})
    assert "this API key only reaches your own GPUs" in nowhere.value.message


async def test_a_verified_only_key_reaches_only_agents_an_admin_verified(hub: LiveHub) -> None:
    admin = member(hub, "olive@lab.example.org", Role.ADMIN)
    dave = member(hub, "dave@lab.example.org")
    bob, carol = member(hub, "bob@lab.example.org"), member(hub, "carol@lab.example.org")
    verified = cli_key(hub, dave.email, "--verified-only")

    with fake_upstream(["m"]) as bobs, fake_upstream(["m"]) as carols:
        with (
            agent_process(hub, agent_token(hub, bob.email, "bobs-gpu"), f"{bobs.url}/v1", name="b"),
            agent_process(hub, agent_token(hub, carol.email, "carols-gpu"), f"{carols.url}/v1", capacity=1, name="c"),
            signed_in(hub, admin.email) as browser,
        ):
            before = listed(hub, verified)
            with pytest.raises(openai.NotFoundError) as unverified:
                await chat(hub, verified)
            row = re.search(r'data-name="carols-gpu".*?/admin/gpus/(\d+)/verify', browser.get("/admin/gpus").text, re.S)
            assert row, "carol's agent is not listed for admins"
            page = submit(browser, "/admin/gpus", f"/admin/gpus/{row.group(1)}/verify")
            after = listed(hub, verified)
            await asyncio.gather(*(chat(hub, verified, slow=True) for _ in range(3)))
            seen = await requests_at(bobs, carols)
            submit(browser, "/admin/gpus", f"/admin/gpus/{row.group(1)}/unverify")
            withdrawn = listed(hub, verified)

    assert before == {} and "agents an admin has verified" in unverified.value.message
    assert page.status_code == 200 and "Remove verification" in page.text
    assert after == {"m": 1}
    assert seen == (0, 3)
    assert withdrawn == {}


async def test_changing_a_keys_scope_on_its_page_applies_to_the_very_next_request(hub: LiveHub) -> None:
    dave, bob = member(hub, "dave@lab.example.org"), member(hub, "bob@lab.example.org")

    with fake_upstream(["m"]) as bobs:
        with (
            agent_process(hub, agent_token(hub, bob.email, "bobs-gpu"), f"{bobs.url}/v1", name="b"),
            signed_in(hub, dave.email) as browser,
        ):
            first = listed(hub, dave.key)  # the key check is now cached in the hub
            key_id = re.search(r"/keys/(\d+)/scope", browser.get("/keys").text)
            assert key_id
            page = submit(browser, "/keys", f"/keys/{key_id.group(1)}/scope", {"trust": "own"})
            narrowed = listed(hub, dave.key)
            with pytest.raises(openai.NotFoundError):
                await chat(hub, dave.key)
            submit(browser, "/keys", f"/keys/{key_id.group(1)}/scope", {"trust": "trusted", "trusted": bob.email})
            await chat(hub, dave.key)
            seen = await requests_at(bobs)

    assert first == {"m": 1} and narrowed == {}
    assert "own GPUs only" in page.text
    assert seen == (1,)
