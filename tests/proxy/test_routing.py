"""Routing between members' GPUs: fair when busy, owners first, bounded queues, sharing and pausing."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import websockets
from openai.types.chat import ChatCompletionMessageParam

from agent import protocol
from hub.accounts.models import Role
from tests.proxy.conftest import database_of, proxy_hub
from tests.support.cluster import Member, agent_process, agent_token, member, recorded, signed_in, submit
from tests.support.fake_upstream import fake_upstream
from tests.support.hub import LiveHub

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
# Each request holds the only slot this long: far longer than admitting a request takes, even on a busy machine.
SLOW = {"fake": {"first_byte_delay": 0.5}}


def client(hub: LiveHub, who: Member) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{hub.url}/v1", api_key=who.key, max_retries=0, timeout=60)


async def queued(hub: LiveHub, admin: Member, at_least: int) -> None:
    """Wait (bounded) until the hub reports this many requests waiting for a GPU."""
    async with httpx.AsyncClient(base_url=hub.url, headers={"Authorization": f"Bearer {admin.key}"}) as http:
        for _ in range(500):
            metrics = (await http.get("/metrics")).text
            match = re.search(r"^gpuclub_queued (\S+)$", metrics, re.M)
            if match and float(match.group(1)) >= at_least:
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {at_least} requests queued")


async def ask(hub: LiveHub, who: Member, label: str, done: list[str]) -> None:
    """One slow request; its label is noted when it completes."""
    async with client(hub, who) as sdk:
        await sdk.chat.completions.create(model="m", messages=MESSAGES, max_tokens=1, extra_body=SLOW)
    done.append(label)


async def test_one_members_flood_does_not_hold_back_another_members_request(hub: LiveHub) -> None:
    owner = member(hub, "owner@lab.example.org", Role.ADMIN)
    flooder, patient = member(hub, "flood@lab.example.org"), member(hub, "bea@lab.example.org")
    done: list[str] = []

    with fake_upstream(["m"]) as upstream:
        with agent_process(hub, agent_token(hub, owner.email, "one-slot"), f"{upstream.url}/v1", capacity=1):
            flood = [asyncio.create_task(ask(hub, flooder, f"flood-{i}", done)) for i in range(8)]
            await queued(hub, owner, 6)
            await ask(hub, patient, "bea", done)
            await asyncio.gather(*flood)

    assert done.index("bea") <= 2, f"bea's request waited behind the flood: {done}"


async def test_an_agents_owner_goes_first_on_their_own_agent(hub: LiveHub) -> None:
    owner = member(hub, "owner@lab.example.org", Role.ADMIN)
    flooder = member(hub, "flood@lab.example.org")
    done: list[str] = []

    with fake_upstream(["m"]) as upstream:
        with agent_process(hub, agent_token(hub, owner.email, "mine"), f"{upstream.url}/v1", capacity=1):
            flood = [asyncio.create_task(ask(hub, flooder, f"flood-{i}", done)) for i in range(6)]
            await queued(hub, owner, 4)
            await ask(hub, owner, "owner", done)
            await asyncio.gather(*flood)

    assert done.index("owner") <= 1, done


async def test_two_hundred_concurrent_streams_through_two_agents_all_complete(hub: LiveHub) -> None:
    owner = member(hub, "owner@lab.example.org")
    alice = member(hub, "alice@lab.example.org")

    async def stream(sdk: openai.AsyncOpenAI, i: int) -> str:
        chunks = await sdk.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": f"n{i}"}],
            max_tokens=10,
            stream=True,
            extra_body={"fake": {"chunk_delay": 0.02}},
        )
        return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])

    with fake_upstream(["m"]) as upstream:
        first, second = agent_token(hub, owner.email, "a"), agent_token(hub, owner.email, "b")
        with (
            agent_process(hub, first, f"{upstream.url}/v1", capacity=100, name="a"),
            agent_process(hub, second, f"{upstream.url}/v1", capacity=100, name="b"),
        ):
            sdk = openai.AsyncOpenAI(
                base_url=f"{hub.url}/v1",
                api_key=alice.key,
                max_retries=0,
                timeout=120,
            )
            async with sdk:
                texts = await asyncio.gather(*(stream(sdk, i) for i in range(200)))

    expected = " ".join(f"tok{i}" for i in range(10))
    assert texts == [expected] * 200
    rows = recorded(database_of(hub), 200)
    assert len(rows) == 200 and {row["status"] for row in rows} == {200}
    assert len({row["agent_id"] for row in rows}) == 2


@pytest.fixture
def tight_hub(tmp_path: Path) -> Iterator[LiveHub]:
    with proxy_hub(tmp_path / "tight", GPUCLUB_QUEUE_PER_MEMBER="2", GPUCLUB_QUEUE_WAIT_SECONDS="1") as running:
        yield running


async def test_a_full_queue_is_429_and_a_long_wait_is_503_with_retry_after(tight_hub: LiveHub) -> None:
    owner = member(tight_hub, "owner@lab.example.org", Role.ADMIN)
    alice = member(tight_hub, "alice@lab.example.org")
    with fake_upstream(["m"], "stall") as upstream:
        with agent_process(tight_hub, agent_token(tight_hub, owner.email, "wedged"), f"{upstream.url}/v1", capacity=1):
            async with client(tight_hub, alice) as sdk:
                busy = asyncio.create_task(sdk.chat.completions.create(model="m", messages=MESSAGES))
                await upstream.stats(in_flight=1)
                waiting = [asyncio.create_task(sdk.chat.completions.create(model="m", messages=MESSAGES)) for _ in "ab"]
                await queued(tight_hub, owner, 2)
                with pytest.raises(openai.RateLimitError) as full:
                    await sdk.chat.completions.create(model="m", messages=MESSAGES)
                timed_out = await asyncio.gather(*waiting, return_exceptions=True)
                busy.cancel()

    assert full.value.response.headers["retry-after"]
    assert all(isinstance(e, openai.InternalServerError) and e.status_code == 503 for e in timed_out), timed_out
    assert all(e.response.headers["retry-after"] for e in timed_out if isinstance(e, openai.APIStatusError))


def test_a_private_or_paused_gpu_serves_only_as_its_owner_allows(hub: LiveHub) -> None:
    owner = member(hub, "owner@lab.example.org")
    alice = member(hub, "alice@lab.example.org")
    with fake_upstream(["m"]) as upstream:
        with (
            agent_process(hub, agent_token(hub, owner.email, "desk"), f"{upstream.url}/v1"),
            signed_in(hub, owner.email) as browser,
        ):
            agent_id = re.search(r"/gpus/(\d+)/pause", browser.get("/gpus").text)
            assert agent_id

            def models(who: Member) -> list[str]:
                with openai.OpenAI(base_url=f"{hub.url}/v1", api_key=who.key) as sdk:
                    return [m.id for m in sdk.models.list().data]

            assert models(alice) == ["m"]
            submit(browser, "/gpus", f"/gpus/{agent_id.group(1)}/private")
            assert (models(alice), models(owner)) == ([], ["m"])
            submit(browser, "/gpus", f"/gpus/{agent_id.group(1)}/pause")
            assert (models(alice), models(owner)) == ([], [])
            submit(browser, "/gpus", f"/gpus/{agent_id.group(1)}/resume")
            submit(browser, "/gpus", f"/gpus/{agent_id.group(1)}/share")
            assert (models(alice), models(owner)) == (["m"], ["m"])


def test_revoking_a_gpu_on_its_page_disconnects_it_at_once(hub: LiveHub) -> None:
    owner = member(hub, "owner@lab.example.org")
    with fake_upstream(["m"]) as upstream:
        with (
            agent_process(hub, agent_token(hub, owner.email, "desk"), f"{upstream.url}/v1") as gpu,
            signed_in(hub, owner.email) as browser,
        ):
            agent_id = re.search(r"/gpus/(\d+)/revoke", browser.get("/gpus").text)
            assert agent_id
            page = submit(browser, "/gpus", f"/gpus/{agent_id.group(1)}/revoke")
            gpu.wait_for(r"create a new one on the My GPUs page")
            assert gpu.process.wait(timeout=10) == 1

    assert "No agents yet" in page.text


async def test_an_agent_token_is_not_an_api_key_and_an_api_key_opens_no_tunnel(hub: LiveHub) -> None:
    owner = member(hub, "owner@lab.example.org")
    token = agent_token(hub, owner.email, "desk")
    async with httpx.AsyncClient(base_url=hub.url) as http:
        refused = await http.get("/v1/models", headers={"Authorization": f"Bearer {token}"})
    url = hub.url.replace("http://", "ws://") + protocol.PATH
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {owner.key}"}) as tunnel:
        message = protocol.parse(str(await tunnel.recv()))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await tunnel.recv()

    assert refused.status_code == 401
    assert message["type"] == "error" and "does not accept this agent token" in message["message"]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == protocol.CLOSE_UNAUTHORIZED


def test_metrics_are_for_admins(hub: LiveHub) -> None:
    admin = member(hub, "admin@lab.example.org", Role.ADMIN)
    alice = member(hub, "alice@lab.example.org")

    as_admin = httpx.get(f"{hub.url}/metrics", headers={"Authorization": f"Bearer {admin.key}"})
    as_member = httpx.get(f"{hub.url}/metrics", headers={"Authorization": f"Bearer {alice.key}"})
    anonymous = httpx.get(f"{hub.url}/metrics")

    assert as_admin.status_code == 200 and "gpuclub_agents_online 0.0" in as_admin.text
    assert "gpuclub_time_to_first_token_seconds" in as_admin.text
    assert as_member.status_code == 403 and anonymous.status_code in (303, 401)


@pytest.mark.parametrize("goes", ["disconnects", "is paused", "stops offering the model"])
async def test_a_queued_request_fails_at_once_when_no_gpu_serves_its_model_any_more(hub: LiveHub, goes: str) -> None:
    owner = member(hub, "owner@lab.example.org", Role.ADMIN)
    alice = member(hub, "alice@lab.example.org")
    with fake_upstream(["m", "other"]) as upstream:
        token = agent_token(hub, owner.email, "only-one")
        with (
            agent_process(hub, token, f"{upstream.url}/v1", capacity=1, extra=("--refresh", "1")) as gpu,
            signed_in(hub, owner.email) as browser,
        ):
            async with client(hub, alice) as sdk:
                hang = {"fake": {"hang": True}}
                busy = asyncio.create_task(sdk.chat.completions.create(model="m", messages=MESSAGES, extra_body=hang))
                await upstream.stats(in_flight=1)
                waiting = asyncio.create_task(sdk.chat.completions.create(model="m", messages=MESSAGES))
                await queued(hub, owner, 1)
                if goes == "disconnects":
                    gpu.process.kill()
                elif goes == "is paused":
                    agent_id = re.search(r"/gpus/(\d+)/pause", browser.get("/gpus").text)
                    assert agent_id
                    submit(browser, "/gpus", f"/gpus/{agent_id.group(1)}/pause")
                else:
                    await upstream.serve_models("other")  # the agent's next refresh drops "m"
                failed = await asyncio.gather(waiting, return_exceptions=True)
                busy.cancel()
                await asyncio.gather(busy, return_exceptions=True)

    error = failed[0]
    assert isinstance(error, openai.InternalServerError) and error.status_code == 503, error
    assert "No GPU serves 'm' any more" in error.message, error.message
    assert error.response.headers["retry-after"]
